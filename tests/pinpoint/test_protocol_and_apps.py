"""The protocol: an unchanged boto3 client reaches Tidings, gets each operation's modelled status, request id
and exceptions; the application is the key's workspace and no other."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.pinpoint.conftest import client_for, make_key
from tests.pinpoint.signing import signed_request


def test_get_apps_lists_the_key_workspace_only(pinpoint, running_api):
    make_key(running_api.database_url, "other-shop")
    answer = pinpoint.get_apps()
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["RequestId"]
    [app] = answer["ApplicationsResponse"]["Item"]
    assert app["Id"] == "acme" and app["Name"] == "acme" and app["Arn"].endswith(":apps/acme")
    assert pinpoint.get_app(ApplicationId="acme")["ApplicationResponse"]["Id"] == "acme"


def test_another_workspace_is_not_found_and_says_nothing(pinpoint, running_api):
    other = client_for(running_api, make_key(running_api.database_url, "other-shop"))
    other.update_endpoint(ApplicationId="other-shop", EndpointId="e1",
                          EndpointRequest={"ChannelType": "EMAIL", "Address": "a@example.com"})
    for call in (lambda: pinpoint.get_app(ApplicationId="other-shop"),
                 lambda: pinpoint.get_endpoint(ApplicationId="other-shop", EndpointId="e1"),
                 lambda: pinpoint.get_app(ApplicationId="no-such-app")):
        with pytest.raises(pinpoint.exceptions.NotFoundException) as caught:
            call()
        assert caught.value.response["Error"]["Message"] == "Resource not found"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_app(ApplicationId="acme")


def test_application_settings_read_and_refuse_what_is_not_applied(pinpoint):
    settings = pinpoint.get_application_settings(ApplicationId="acme")["ApplicationSettingsResource"]
    assert settings["ApplicationId"] == "acme"
    same = pinpoint.update_application_settings(ApplicationId="acme", WriteApplicationSettingsRequest={})
    assert same["ApplicationSettingsResource"]["ApplicationId"] == "acme"
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_application_settings(ApplicationId="acme", WriteApplicationSettingsRequest={
            "QuietTime": {"Start": "22:00", "End": "07:00"}})
    assert "QuietTime" in caught.value.response["Error"]["Message"]


def test_an_unimplemented_operation_is_a_modelled_error_naming_it(pinpoint):
    with pytest.raises(pinpoint.exceptions.MethodNotAllowedException) as caught:
        pinpoint.get_in_app_messages(ApplicationId="acme", EndpointId="e1")
    assert "GetInAppMessages" in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405


def test_errors_carry_the_request_id_in_body_and_header(pinpoint):
    with pytest.raises(pinpoint.exceptions.NotFoundException) as caught:
        pinpoint.get_endpoint(ApplicationId="acme", EndpointId="nobody")
    response = caught.value.response
    assert response["Error"]["Code"] == "NotFoundException"
    assert response["ResponseMetadata"]["RequestId"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "NotFoundException"


def test_a_body_that_breaks_the_model_is_a_bad_request_naming_the_member(pinpoint, running_api, acme_key):
    # boto3 validates before sending, so send what an older or hand-written client might: signed, but wrong.
    response = signed_request(running_api, acme_key, "PUT", "/v1/apps/acme/endpoints/e1",
                              b'{"ChannelType": "EMAIL", "Address": 42}')
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "BadRequestException"
    body = response.json()
    assert "Address" in body["Message"] and body["RequestID"] == response.headers["x-amzn-requestid"]
    assert signed_request(running_api, acme_key, "PUT", "/v1/apps/acme/endpoints/e1", b"{not json").status_code == 400


def test_a_path_no_operation_serves_is_not_found(running_api, acme_key):
    response = signed_request(running_api, acme_key, "GET", "/v1/nothing-here", b"")
    assert response.status_code == 404 and response.headers["x-amzn-errortype"] == "NotFoundException"


def test_query_strings_and_odd_ids_are_signed_and_routed_as_the_sdk_sends_them(pinpoint):
    assert pinpoint.get_apps(PageSize="5", Token="a b+c/d")["ApplicationsResponse"]["Item"][0]["Id"] == "acme"
    for odd in ("with space", "slash/inside", "ünïcode-ид", "plus+and%percent", "~tilde.dot_under-dash"):
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=odd,
                                 EndpointRequest={"ChannelType": "EMAIL", "Address": "odd@example.com"})
        assert pinpoint.get_endpoint(ApplicationId="acme", EndpointId=odd)["EndpointResponse"]["Id"] == odd


def test_a_body_over_7_mb_is_payload_too_large(running_api, acme_key):
    body = b'{"Item": [' + b",".join([b'{"Id": "x", "Address": "' + b"a" * 1000 + b'"}'] * 7400) + b"]}"
    response = signed_request(running_api, acme_key, "PUT", "/v1/apps/acme/endpoints", body)
    assert response.status_code == 413 and response.headers["x-amzn-errortype"] == "PayloadTooLargeException"


def test_a_no_content_answer_has_no_body(pinpoint, running_api, acme_key):
    arn = pinpoint.get_app(ApplicationId="acme")["ApplicationResponse"]["Arn"]
    response = signed_request(running_api, acme_key, "POST", "/v1/tags/" + quote(arn, safe=""),
                              b'{"tags": {"team": "core"}}')
    assert response.status_code == 204 and response.content == b""
    assert response.headers.get("content-length", "0") == "0"  # what it says matches what it sends
    assert pinpoint.list_tags_for_resource(ResourceArn=arn)["TagsModel"]["tags"] == {"team": "core"}
