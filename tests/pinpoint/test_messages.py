"""SendMessages / SendUsersMessages through boto3: mail reaches a real SMTP server, each address, endpoint
and user gets Pinpoint's DeliveryStatus, and the messages are the native ones (GET /v1/messages/{id})."""
from __future__ import annotations

import pytest

from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)

SIMPLE = {"EmailMessage": {"SimpleEmail": {
    "Subject": {"Data": "Hello {{User.UserAttributes.FirstName}}"},
    "TextPart": {"Data": "Code {{data.code}} for {{Address}}"},
    "HtmlPart": {"Data": "<p>Code {{data.code}}</p>"}}}}




@pytest.fixture
def mail_api(smtp_sink, running_api):  # noqa: F811  (the sink's settings must exist before the API starts)
    return running_api


def test_send_to_addresses_and_endpoints(smtp_sink, mail_api, pinpoint, native):  # noqa: F811
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId="ann-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "ann@example.com",
        "User": {"UserId": "ann", "UserAttributes": {"FirstName": ["Ann"]}}})
    answer = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Addresses": {"zoe@example.org": {"ChannelType": "EMAIL", "Substitutions": {"code": ["Z1"]}}},
        "Endpoints": {"ann-mail": {"Substitutions": {"code": ["A1"]}}, "nobody": {}},
        "MessageConfiguration": SIMPLE})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    response = answer["MessageResponse"]
    assert response["ApplicationId"] == "acme"
    zoe = response["Result"]["zoe@example.org"]
    assert zoe["DeliveryStatus"] == "SUCCESSFUL" and zoe["StatusCode"] == 200 and zoe["MessageId"]
    ann = response["EndpointResult"]["ann-mail"]
    assert ann["DeliveryStatus"] == "SUCCESSFUL" and ann["Address"] == "ann@example.com"
    assert response["EndpointResult"]["nobody"]["DeliveryStatus"] == "PERMANENT_FAILURE"
    [mail] = smtp_sink.to("ann@example.com")
    assert mail["Subject"] == "Hello Ann"
    assert "Code A1 for ann@example.com" in mail.get_body(("plain",)).get_content()
    assert "Code Z1" in smtp_sink.to("zoe@example.org")[0].get_body(("plain",)).get_content()
    assert native.get(f"/v1/messages/{ann['MessageId']}").json()["status"] == "sent"


def test_opted_out_endpoints_are_not_sent(smtp_sink, mail_api, pinpoint):  # noqa: F811
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId="out", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "out@example.com", "OptOut": "ALL"})
    result = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Endpoints": {"out": {}}, "MessageConfiguration": SIMPLE})["MessageResponse"]["EndpointResult"]["out"]
    assert result["DeliveryStatus"] == "OPT_OUT" and smtp_sink.to("out@example.com") == []


def test_send_users_messages(smtp_sink, mail_api, pinpoint):  # noqa: F811
    for i in range(2):
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"kim-{i}", EndpointRequest={
            "ChannelType": "EMAIL", "Address": f"kim{i}@example.com", "User": {"UserId": "kim"}})
    answer = pinpoint.send_users_messages(ApplicationId="acme", SendUsersMessageRequest={
        "Users": {"kim": {"Substitutions": {"code": ["K"]}}, "ghost": {}}, "MessageConfiguration": SIMPLE})
    result = answer["SendUsersMessageResponse"]["Result"]
    assert set(result["kim"]) == {"kim-0", "kim-1"}
    assert all(r["DeliveryStatus"] == "SUCCESSFUL" and r["MessageId"] for r in result["kim"].values())
    assert result["ghost"] == {}
    assert len(smtp_sink.to("kim0@example.com")) == 1 and len(smtp_sink.to("kim1@example.com")) == 1


def test_refusals_name_the_field(smtp_sink, mail_api, pinpoint):  # noqa: F811
    for request, field in (
            ({"Addresses": {"a@example.com": {}}, "MessageConfiguration": SIMPLE}, "ChannelType"),
            ({"Addresses": {"+33612345678": {"ChannelType": "SMS"}}, "MessageConfiguration": SIMPLE}, "SMS"),
            ({"Addresses": {"a@example.com": {"ChannelType": "EMAIL"}},
              "MessageConfiguration": {"EmailMessage": {"RawEmail": {"Data": b"x"}}}}, "RawEmail"),
            ({"Addresses": {f"a{i}@example.com": {"ChannelType": "EMAIL"} for i in range(101)},
              "MessageConfiguration": SIMPLE}, "100")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.send_messages(ApplicationId="acme", MessageRequest=request)
        assert field in caught.value.response["Error"]["Message"]
    assert smtp_sink.mails == []


def test_overrides_apply_to_their_address_only(smtp_sink, mail_api, pinpoint):  # noqa: F811
    answer = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Addresses": {"plain@example.com": {"ChannelType": "EMAIL", "Substitutions": {"code": ["P"]}},
                      "special@example.com": {"ChannelType": "EMAIL", "TitleOverride": "Just for you",
                                              "BodyOverride": "Override body"},
                      "other@example.com": {"ChannelType": "EMAIL", "Substitutions": {"code": ["O"]}}},
        "MessageConfiguration": SIMPLE})["MessageResponse"]["Result"]
    assert {a: r["DeliveryStatus"] for a, r in answer.items()} == dict.fromkeys(
        ("plain@example.com", "special@example.com", "other@example.com"), "SUCCESSFUL")
    assert len({r["MessageId"] for r in answer.values()}) == 3
    special = smtp_sink.to("special@example.com")[0]
    assert special["Subject"] == "Just for you" and "Override body" in special.get_body(("plain",)).get_content()
    assert "Code O" in smtp_sink.to("other@example.com")[0].get_body(("plain",)).get_content()
    assert smtp_sink.to("plain@example.com")[0]["Subject"].strip() == "Hello"  # no user: an empty FirstName
