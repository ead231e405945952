"""Tags on journeys and campaigns through boto3: the `tags` of CreateCampaign are stored, and journeys' and
campaigns' tags are answered by Get and list; TagResource, UntagResource and ListTagsForResource reach them by
`apps/<app>/journeys/<id>` and `apps/<app>/campaigns/<id>`; deleting one drops its tags; bad tags are refused
naming the member with nothing written; another workspace's, a missing one's, or the other kind's ARN is
NotFoundException. (DeleteJourney and DeleteCampaign reach the session's Temporal dev server.)"""
from __future__ import annotations

import pytest

from tests.pinpoint.conftest import client_for, make_key, temporal_settings

ARN = "arn:aws:mobiletargeting:us-east-1:123456789012:apps/acme"


@pytest.fixture
def settings(tmp_path, database_url, temporal_env):
    return temporal_settings(tmp_path, database_url, temporal_env)


def _tags(client, arn):
    return client.list_tags_for_resource(ResourceArn=arn)["TagsModel"]["tags"]


def _segment(pinpoint) -> str:
    return pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={"Name": "all", "Dimensions": {}})[
        "SegmentResponse"]["Id"]


def _journey(pinpoint, native, segment: str, **extra) -> dict:
    r = native.put("/v1/templates/hello", json={"channel": "EMAIL", "subject": "Hi", "text": "Hello"})
    assert r.status_code in (200, 201), r.text
    return pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest={
        "Name": "Hello", "StartActivity": "hello", "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
        "Activities": {"hello": {"EMAIL": {"TemplateName": "hello"}}}, **extra})["JourneyResponse"]


def _campaign(pinpoint, segment: str, **extra) -> dict:
    return pinpoint.create_campaign(ApplicationId="acme", WriteCampaignRequest={
        "Name": "Sale", "SegmentId": segment, "IsPaused": True, "Schedule": {"StartTime": "IMMEDIATE"},
        "MessageConfiguration": {"EmailMessage": {"Title": "Sale", "Body": "20% off"}}, **extra})["CampaignResponse"]


def test_journey_tags_are_set_read_and_dropped(running_api, pinpoint, native):
    segment = _segment(pinpoint)
    journey = _journey(pinpoint, native, segment)  # WriteJourneyRequest has no `tags`: TagResource sets them
    assert journey["tags"] == {}
    arn = f"{ARN}/journeys/{journey['Id']}"
    assert _tags(pinpoint, arn) == {}
    pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": {"team": "growth"}})
    assert _tags(pinpoint, arn) == {"team": "growth"}
    pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": {"env": "prod"}})
    pinpoint.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert _tags(pinpoint, arn) == {"env": "prod"}
    assert pinpoint.get_journey(ApplicationId="acme", JourneyId=journey["Id"])["JourneyResponse"]["tags"] == \
        {"env": "prod"}
    untagged = _journey(pinpoint, native, segment, Name="Plain")
    listed = {j["Id"]: j["tags"] for j in pinpoint.list_journeys(ApplicationId="acme")["JourneysResponse"]["Item"]}
    assert listed == {journey["Id"]: {"env": "prod"}, untagged["Id"]: {}}
    updated = pinpoint.update_journey(ApplicationId="acme", JourneyId=journey["Id"], WriteJourneyRequest={
        "Name": "Hello 2", "StartActivity": "hello", "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
        "Activities": {"hello": {"EMAIL": {"TemplateName": "hello"}}}})["JourneyResponse"]
    assert updated["tags"] == {"env": "prod"} and updated["Name"] == "Hello 2"  # a new version keeps them
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": {"aws:x": "1"}})
    assert "aws:" in caught.value.response["Error"]["Message"]

    deleted = pinpoint.delete_journey(ApplicationId="acme", JourneyId=journey["Id"])["JourneyResponse"]
    assert deleted["tags"] == {"env": "prod"}
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        _tags(pinpoint, arn)
    assert [j["id"] for j in native.get("/v1/journeys").json()] == [untagged["Id"]]


def test_campaign_tags_are_created_read_changed_and_dropped(running_api, pinpoint, native):
    segment = _segment(pinpoint)
    campaign = _campaign(pinpoint, segment, tags={"cost-center": "42"})
    assert campaign["tags"] == {"cost-center": "42"}
    arn = campaign["Arn"]
    assert arn.endswith(f":apps/acme/campaigns/{campaign['Id']}")
    assert _tags(pinpoint, arn) == {"cost-center": "42"}
    pinpoint.tag_resource(ResourceArn=arn, TagsModel={"tags": {"env": "prod"}})
    assert pinpoint.get_campaign(ApplicationId="acme", CampaignId=campaign["Id"])["CampaignResponse"]["tags"] == \
        {"cost-center": "42", "env": "prod"}
    pinpoint.untag_resource(ResourceArn=arn, TagKeys=["cost-center"])
    [listed] = pinpoint.get_campaigns(ApplicationId="acme")["CampaignsResponse"]["Item"]
    assert listed["tags"] == {"env": "prod"}
    # the tags are not part of the campaign: tagging made no new version
    assert pinpoint.get_campaign(ApplicationId="acme", CampaignId=campaign["Id"])["CampaignResponse"]["Version"] == 1

    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _campaign(pinpoint, segment, Name="Bad", tags={"k": "v" * 257})
    assert "WriteCampaignRequest.tags" in caught.value.response["Error"]["Message"]
    assert len(pinpoint.get_campaigns(ApplicationId="acme")["CampaignsResponse"]["Item"]) == 1
    assert len(native.get("/v1/templates").json()["items"]) == 1  # the refused campaign's inline template was not written

    pinpoint.delete_campaign(ApplicationId="acme", CampaignId=campaign["Id"])
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        _tags(pinpoint, arn)


def test_other_workspaces_missing_ones_and_the_other_kind_are_not_found(running_api, pinpoint, native):
    segment = _segment(pinpoint)
    journey = _journey(pinpoint, native, segment)
    pinpoint.tag_resource(ResourceArn=f"{ARN}/journeys/{journey['Id']}", TagsModel={"tags": {"a": "1"}})
    campaign = _campaign(pinpoint, segment, tags={"b": "2"})
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    for client, arn in ((pinpoint, f"{ARN}/journeys/{'0' * 32}"),
                        (pinpoint, f"{ARN}/campaigns/{'0' * 32}"),
                        (pinpoint, f"{ARN}/campaigns/{journey['Id']}"),  # a journey is not a campaign
                        (pinpoint, f"{ARN}/journeys/{campaign['Id']}"),  # nor a campaign a journey
                        (other, f"{ARN}/journeys/{journey['Id']}"),
                        (other, campaign["Arn"])):
        for method, kwargs in (("list_tags_for_resource", {}), ("tag_resource", {"TagsModel": {"tags": {"x": "y"}}}),
                               ("untag_resource", {"TagKeys": ["a", "b"]})):
            with pytest.raises(client.exceptions.NotFoundException):
                getattr(client, method)(ResourceArn=arn, **kwargs)
    assert _tags(pinpoint, f"{ARN}/journeys/{journey['Id']}") == {"a": "1"}  # the refused calls wrote nothing
    assert _tags(pinpoint, campaign["Arn"]) == {"b": "2"}
