"""Tags through boto3: TagResource, UntagResource and ListTagsForResource on applications, segments and
templates by their documented ARNs; the `tags` of create bodies are stored and read back by Get; ARNs of
another form, of missing resources or of another workspace are NotFoundException."""
from __future__ import annotations

import pytest

from tests.pinpoint.conftest import client_for, make_key


def _tags(pinpoint, arn):
    return pinpoint.list_tags_for_resource(ResourceArn=arn)["TagsModel"]["tags"]


def test_tag_untag_and_list_on_apps_segments_and_templates(pinpoint):
    segment = pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "vip", "Dimensions": {}, "tags": {"team": "growth"}})["SegmentResponse"]
    assert segment["tags"] == {"team": "growth"}
    pinpoint.create_sms_template(TemplateName="otp", SMSTemplateRequest={"Body": "b", "tags": {"owner": "auth"}})
    app_arn = pinpoint.get_app(ApplicationId="acme")["ApplicationResponse"]["Arn"]
    template_arn = pinpoint.get_sms_template(TemplateName="otp")["SMSTemplateResponse"]["Arn"]
    for arn, initial in ((app_arn, {}), (segment["Arn"], {"team": "growth"}), (template_arn, {"owner": "auth"})):
        assert _tags(pinpoint, arn) == initial
        answer = pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": {"env": "prod", "team": "core"}})
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert _tags(pinpoint, arn) == {**initial, "env": "prod", "team": "core"}
        pinpoint.untag_resource(ResourceArn=arn, TagKeys=["team", "never-set"])
        assert _tags(pinpoint, arn) == ({"owner": "auth", "env": "prod"} if arn == template_arn else {"env": "prod"})
    # Get and list operations return them.
    assert pinpoint.get_app(ApplicationId="acme")["ApplicationResponse"]["tags"] == {"env": "prod"}
    assert pinpoint.get_apps()["ApplicationsResponse"]["Item"][0]["tags"] == {"env": "prod"}
    assert pinpoint.get_segment(ApplicationId="acme", SegmentId=segment["Id"])["SegmentResponse"]["tags"] == \
        {"env": "prod"}
    assert pinpoint.get_segments(ApplicationId="acme")["SegmentsResponse"]["Item"][0]["tags"] == {"env": "prod"}
    assert pinpoint.get_sms_template(TemplateName="otp")["SMSTemplateResponse"]["tags"] == \
        {"owner": "auth", "env": "prod"}
    assert pinpoint.list_templates()["TemplatesResponse"]["Item"][0]["tags"] == {"owner": "auth", "env": "prod"}
    # ARNs of any region and account name the same resources (a migrant's stored ARNs keep working).
    foreign = f"arn:aws:mobiletargeting:eu-west-1:123456789012:apps/acme/segments/{segment['Id']}"
    assert _tags(pinpoint, foreign) == {"env": "prod"}
    # Deleting the resource drops its tags: a new one of the same name starts without any.
    pinpoint.delete_sms_template(TemplateName="otp")
    pinpoint.create_sms_template(TemplateName="otp", SMSTemplateRequest={"Body": "b"})
    assert _tags(pinpoint, template_arn) == {}


def test_unknown_and_other_workspace_arns_are_not_found(running_api, pinpoint):
    segment = pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={"Name": "s", "Dimensions": {}})[
        "SegmentResponse"]
    pinpoint.create_email_template(TemplateName="mail", EmailTemplateRequest={"Subject": "s", "TextPart": "t"})
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    for client, arn in (
            (pinpoint, "arn:aws:mobiletargeting:us-east-1:1:apps/acme/segments/nope"),
            (pinpoint, "arn:aws:mobiletargeting:us-east-1:1:apps/acme/campaigns/c1"),
            (pinpoint, "arn:aws:mobiletargeting:us-east-1:1:apps/globex"),
            (pinpoint, "arn:aws:mobiletargeting:us-east-1:1:templates/mail/SMS"),  # it is an EMAIL template
            (pinpoint, "arn:aws:mobiletargeting:us-east-1:1:templates/nope/EMAIL"),
            (pinpoint, "arn:aws:s3:::bucket"),
            (other, "arn:aws:mobiletargeting:us-east-1:1:apps/acme"),
            (other, segment["Arn"]),
            (other, "arn:aws:mobiletargeting:us-east-1:1:templates/mail/EMAIL")):
        for method, kwargs in (("list_tags_for_resource", {}), ("tag_resource", {"TagsModel": {"tags": {"a": "b"}}}),
                               ("untag_resource", {"TagKeys": ["a"]})):
            with pytest.raises(client.exceptions.NotFoundException):
                getattr(client, method)(ResourceArn=arn, **kwargs)
    assert _tags(pinpoint, segment["Arn"]) == {}  # nothing was written by the refused calls


def test_bad_tags_are_refused_by_name(running_api, pinpoint):
    arn = pinpoint.get_app(ApplicationId="acme")["ApplicationResponse"]["Arn"]
    for tags, words in (({"aws:x": "1"}, "aws:"), ({"k" * 129: "1"}, "1-128"), ({"k": "v" * 257}, "256"),
                        ({f"k{i}": "v" for i in range(51)}, "50")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": tags})
        assert words in caught.value.response["Error"]["Message"]
    assert _tags(pinpoint, arn) == {}
    admin = client_for(running_api, make_key(running_api.database_url, None))
    created = admin.create_app(CreateApplicationRequest={"Name": "tagged", "tags": {"cost": "42"}})
    assert created["ApplicationResponse"]["tags"] == {"cost": "42"}
    assert _tags(admin, created["ApplicationResponse"]["Arn"]) == {"cost": "42"}
    with pytest.raises(admin.exceptions.BadRequestException) as caught:
        admin.create_app(CreateApplicationRequest={"Name": "badly", "tags": {"aws:x": "1"}})
    assert "CreateApplicationRequest.tags" in caught.value.response["Error"]["Message"]
    assert "badly" not in {a["Id"] for a in admin.get_apps()["ApplicationsResponse"]["Item"]}
