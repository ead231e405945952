"""Segments through boto3: each Pinpoint dimension kind selects the customers written through UpdateEndpoint and
the native API, the definitions read back through Pinpoint and /v1/segments (same id, versions), and what
Tidings cannot express is refused naming the dimension."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.pinpoint.conftest import client_for, make_key


def _endpoint(pinpoint, endpoint_id, **request):
    request.setdefault("ChannelType", "EMAIL")
    request.setdefault("Address", f"{endpoint_id}@example.com")
    pinpoint.update_endpoint(ApplicationId="acme", EndpointId=endpoint_id, EndpointRequest=request)


def _create(pinpoint, name="s", **request):
    return pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={"Name": name, **request})[
        "SegmentResponse"]


def _members(native, segment_id):
    answer = native.get(f"/v1/segments/{segment_id}/members", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return sorted(m["user_id"] for m in answer.json()["items"])


def _selects(pinpoint, native, dimensions):
    segment = _create(pinpoint, Dimensions=dimensions)
    return _members(native, segment["Id"])


def _user(user_id, **attributes):
    return {"UserId": user_id, "UserAttributes": attributes}


@pytest.fixture
def people(pinpoint):
    _endpoint(pinpoint, "ann-mail", Attributes={"interests": ["golf", "jazz"]},
              User=_user("ann", plan=["pro"], signup=["2024-01-15T10:00:00Z"], email=["ann@gmail.com"]))
    _endpoint(pinpoint, "bob-mail", Attributes={"interests": ["tennis"]},
              User=_user("bob", plan=["free"], signup=["2023-06-01T00:00:00Z"], email=["bob@example.com"]))
    _endpoint(pinpoint, "cy-mail", User=_user("cy", plan=["pro", "team"]))


@pytest.mark.parametrize("kind, values, expected", [
    ("INCLUSIVE", ["pro"], ["ann", "cy"]),  # cy's plan has two values (a list), ann's one (a string)
    ("EXCLUSIVE", ["pro"], ["bob"]),
    ("CONTAINS", ["fre", "tea"], ["bob", "cy"]),
])
def test_user_attribute_sets(pinpoint, native, people, kind, values, expected):
    assert _selects(pinpoint, native, {"UserAttributes": {"plan": {"AttributeType": kind, "Values": values}}}) \
        == expected


def test_customers_written_natively_enter_and_leave(pinpoint, native, people):
    segment = _create(pinpoint, Dimensions={"UserAttributes": {"plan": {"Values": ["pro"]}},
                                            "Demographic": {"Platform": {"Values": ["ios"]}}})
    assert _members(native, segment["Id"]) == []
    assert native.put("/v1/users/ann", json={"attributes": {"plan": "pro"}}).status_code == 200
    assert native.put("/v1/endpoints/ann-phone", json={"channel": "PUSH", "address": "tok", "user_id": "ann",
                                                        "demographic": {"platform": "ios"}}).status_code == 200
    assert _members(native, segment["Id"]) == ["ann"]
    assert native.put("/v1/users/ann", json={"attributes": {"plan": "free"}}).status_code == 200
    assert _members(native, segment["Id"]) == []


@pytest.mark.parametrize("kind, values, expected", [
    ("BEFORE", ["2024-01-01T00:00:00Z"], ["bob"]),
    ("AFTER", ["2024-01-01T00:00:00Z"], ["ann"]),
    ("BETWEEN", ["2023-01-01T00:00:00Z", "2023-12-31T00:00:00Z"], ["bob"]),
    ("ON", ["2024-01-15"], ["ann"]),
])
def test_user_attribute_dates(pinpoint, native, people, kind, values, expected):
    assert _selects(pinpoint, native, {"UserAttributes": {"signup": {"AttributeType": kind, "Values": values}}}) \
        == expected


@pytest.mark.parametrize("kind, values, expected", [
    ("INCLUSIVE", ["golf", "chess"], ["ann"]),
    ("EXCLUSIVE", ["golf"], ["bob", "cy"]),  # cy's endpoint has no interests at all
    ("CONTAINS", ["enn"], ["bob"]),
])
def test_endpoint_attributes(pinpoint, native, people, kind, values, expected):
    assert _selects(pinpoint, native, {"Attributes": {"interests": {"AttributeType": kind, "Values": values}}}) \
        == expected


def test_demographic_metrics_and_country_hold_for_the_same_endpoint(pinpoint, native):
    _endpoint(pinpoint, "ann-phone", ChannelType="APNS", Address="tok-1", Metrics={"score": 9.0},
              Demographic={"Platform": "ios", "AppVersion": "2.1", "Make": "Apple", "Model": "iPhone15"},
              Location={"Country": "FR"}, User={"UserId": "ann"})
    _endpoint(pinpoint, "bob-phone", ChannelType="GCM", Address="tok-2", Metrics={"score": 3.0},
              Demographic={"Platform": "android", "AppVersion": "2.0", "Make": "Google", "Model": "Pixel"},
              Location={"Country": "US"}, User={"UserId": "bob"})
    # dee's iPhone is in the US and her mail endpoint is in France: no one endpoint is both
    _endpoint(pinpoint, "dee-phone", ChannelType="APNS", Address="tok-3", Demographic={"Platform": "ios"},
              Location={"Country": "US"}, User={"UserId": "dee"})
    _endpoint(pinpoint, "dee-mail", Location={"Country": "FR"}, User={"UserId": "dee"})

    def demographic(field, values, kind="INCLUSIVE"):
        return _selects(pinpoint, native, {"Demographic": {field: {"DimensionType": kind, "Values": values}}})
    assert demographic("Platform", ["ios"]) == ["ann", "dee"]
    assert demographic("Platform", ["ios"], "EXCLUSIVE") == ["bob", "dee"]  # dee's mail endpoint is not ios
    assert demographic("AppVersion", ["2.0"]) == ["bob"]
    assert demographic("Make", ["Google"]) == ["bob"]
    assert demographic("Model", ["iPhone15", "Pixel"]) == ["ann", "bob"]
    assert demographic("Channel", ["GCM"]) == ["ann", "bob", "dee"]  # every push type is a PUSH endpoint
    assert demographic("Channel", ["EMAIL"]) == ["dee"]
    assert _selects(pinpoint, native, {"Location": {"Country": {"Values": ["FR"]}}}) == ["ann", "dee"]
    assert _selects(pinpoint, native, {"Demographic": {"Platform": {"Values": ["ios"]}},
                                       "Location": {"Country": {"Values": ["FR"]}}}) == ["ann"]
    for operator, value, expected in [("GREATER_THAN", 3.0, ["ann"]), ("GREATER_THAN_OR_EQUAL", 3.0, ["ann", "bob"]),
                                      ("LESS_THAN", 9.0, ["bob"]), ("LESS_THAN_OR_EQUAL", 9.0, ["ann", "bob"]),
                                      ("EQUAL", 3.0, ["bob"])]:
        assert _selects(pinpoint, native, {"Metrics": {"score": {"ComparisonOperator": operator, "Value": value}}}) \
            == expected, operator  # dee has no score: not even LESS_THAN


def test_recency_and_gps_point(pinpoint, native):
    now = datetime.now(UTC)
    _endpoint(pinpoint, "fresh", EffectiveDate=(now - timedelta(hours=2)).isoformat(),
              Location={"Latitude": 48.86, "Longitude": 2.35})  # Paris
    _endpoint(pinpoint, "week", EffectiveDate=(now - timedelta(days=10)).isoformat(),
              Location={"Latitude": 45.76, "Longitude": 4.84})  # Lyon, 390 km away
    _endpoint(pinpoint, "stale", EffectiveDate=(now - timedelta(days=60)).isoformat())

    def recency(kind, duration):
        return _selects(pinpoint, native, {"Behavior": {"Recency": {"RecencyType": kind, "Duration": duration}}})
    assert recency("ACTIVE", "HR_24") == ["fresh"]
    assert recency("ACTIVE", "DAY_7") == ["fresh"]
    assert recency("ACTIVE", "DAY_14") == ["fresh", "week"]
    assert recency("INACTIVE", "DAY_30") == ["stale"]
    near_paris = {"Location": {"GPSPoint": {"Coordinates": {"Latitude": 48.85, "Longitude": 2.34},
                                            "RangeInKilometers": 25.0}}}
    assert _selects(pinpoint, native, near_paris) == ["fresh"]


def test_segment_groups_include_type_and_source_segments(pinpoint, native, people):
    _endpoint(pinpoint, "bob-phone", ChannelType="APNS", Address="t", Demographic={"Platform": "ios"},
              User={"UserId": "bob"})
    pro = _create(pinpoint, "pro", Dimensions={"UserAttributes": {"plan": {"Values": ["pro"]}}})["Id"]
    ios = _create(pinpoint, "ios", Dimensions={"Demographic": {"Platform": {"Values": ["ios"]}}})["Id"]

    def grouped(include, *groups):
        segment = _create(pinpoint, SegmentGroups={"Include": include, "Groups": list(groups)})
        return _members(native, segment["Id"]), segment
    sources = [{"Id": pro}, {"Id": ios}]
    assert grouped("ALL", {"SourceSegments": sources, "SourceType": "ANY"})[0] == ["ann", "bob", "cy"]
    assert grouped("ALL", {"SourceSegments": sources, "SourceType": "ALL"})[0] == []
    assert grouped("ALL", {"SourceSegments": sources, "SourceType": "NONE"})[0] == []  # every one is pro or ios
    golf = {"Attributes": {"interests": {"Values": ["golf"]}}}
    tennis = {"Attributes": {"interests": {"Values": ["tennis"]}}}
    assert grouped("ALL", {"SourceSegments": [{"Id": pro}], "Type": "NONE", "Dimensions": [golf]})[0] == ["cy"]
    assert grouped("ALL", {"Type": "ANY", "Dimensions": [golf, tennis]})[0] == ["ann", "bob"]
    assert grouped("ALL", {"Type": "ALL", "Dimensions": [golf, tennis]})[0] == []
    members, segment = grouped("ANY", {"SourceSegments": [{"Id": ios}]}, {"Type": "ALL", "Dimensions": [golf]})
    assert members == ["ann", "bob"]
    assert grouped("NONE", {"SourceSegments": [{"Id": ios}]}, {"Dimensions": [golf]})[0] == ["cy"]
    read = pinpoint.get_segment(ApplicationId="acme", SegmentId=segment["Id"])["SegmentResponse"]
    assert read["SegmentGroups"] == {"Include": "ANY", "Groups": [
        {"SourceSegments": [{"Id": ios}], "SourceType": "ALL", "Type": "ALL"},
        {"SourceType": "ALL", "Type": "ALL", "Dimensions": [
            {"Attributes": {"interests": {"AttributeType": "INCLUSIVE", "Values": ["golf"]}}}]}]}


def test_reads_back_through_pinpoint_and_native_with_the_same_id(pinpoint, native, people):
    dimensions = {"UserAttributes": {"plan": {"AttributeType": "EXCLUSIVE", "Values": ["free"]},
                                     "signup": {"AttributeType": "AFTER", "Values": ["2024-01-01T00:00:00Z"]}},
                  "Attributes": {"interests": {"AttributeType": "CONTAINS", "Values": ["ol"]}},
                  "Metrics": {"score": {"ComparisonOperator": "LESS_THAN", "Value": 4.5}},
                  "Demographic": {"Platform": {"DimensionType": "EXCLUSIVE", "Values": ["android"]},
                                  "Channel": {"DimensionType": "INCLUSIVE", "Values": ["EMAIL", "SMS"]}},
                  "Location": {"Country": {"DimensionType": "INCLUSIVE", "Values": ["FR"]},
                               "GPSPoint": {"Coordinates": {"Latitude": 1.5, "Longitude": 2.5},
                                            "RangeInKilometers": 30.0}},
                  "Behavior": {"Recency": {"Duration": "DAY_30", "RecencyType": "ACTIVE"}}}
    created = _create(pinpoint, "everything", Dimensions=dimensions)
    assert created["Dimensions"] == dimensions and created["SegmentType"] == "DIMENSIONAL"
    assert created["Version"] == 1 and created["ApplicationId"] == "acme" and created["Arn"].endswith(created["Id"])
    read = pinpoint.get_segment(ApplicationId="acme", SegmentId=created["Id"])["SegmentResponse"]
    assert read["Dimensions"] == dimensions and read["Name"] == "everything"
    seg = native.get(f"/v1/segments/{created['Id']}").json()
    assert seg["name"] == "everything" and seg["version"] == 1
    assert {"active": "30d"} in seg["rule"]["and"]  # the native rule, readable as such

    r = native.post("/v1/segments", json={"id": "natives", "name": "iOS in France", "rule": {"some": [
        {"var": "endpoints"}, {"and": [{"==": [{"var": "demographic.platform"}, "ios"]},
                                       {"in": [{"var": "location.country"}, ["FR", "BE"]]}]}]}})
    assert r.status_code == 201, r.text
    r = native.post("/v1/segments", json={"id": "buyers", "name": "buyers",
                                          "rule": {"performed": {"event": "purchase", "count": [">=", 2]}}})
    assert r.status_code == 201, r.text
    read = pinpoint.get_segment(ApplicationId="acme", SegmentId="natives")["SegmentResponse"]
    assert read["Dimensions"] == {"Demographic": {"Platform": {"DimensionType": "INCLUSIVE", "Values": ["ios"]}},
                                  "Location": {"Country": {"DimensionType": "INCLUSIVE", "Values": ["FR", "BE"]}}}
    buyers = pinpoint.get_segment(ApplicationId="acme", SegmentId="buyers")["SegmentResponse"]
    assert "Dimensions" not in buyers and buyers["Name"] == "buyers"  # no Pinpoint form: nothing made up
    listed = pinpoint.get_segments(ApplicationId="acme")["SegmentsResponse"]["Item"]
    assert sorted(s["Id"] for s in listed) == sorted([created["Id"], "natives", "buyers"])
    first = pinpoint.get_segments(ApplicationId="acme", PageSize="2")["SegmentsResponse"]
    rest = pinpoint.get_segments(ApplicationId="acme", PageSize="2", Token=first["NextToken"])["SegmentsResponse"]
    assert [s["Id"] for s in first["Item"] + rest["Item"]] == sorted(s["Id"] for s in listed)
    assert "NextToken" not in rest


def test_update_makes_a_version_and_delete_removes(pinpoint, native, people):
    seg = _create(pinpoint, "plans", Dimensions={"UserAttributes": {"plan": {"Values": ["pro"]}}})
    assert _members(native, seg["Id"]) == ["ann", "cy"]
    updated = pinpoint.update_segment(ApplicationId="acme", SegmentId=seg["Id"], WriteSegmentRequest={
        "Name": "free plans", "Dimensions": {"UserAttributes": {"plan": {"Values": ["free"]}}}})["SegmentResponse"]
    assert updated["Version"] == 2 and updated["Name"] == "free plans"
    assert _members(native, seg["Id"]) == ["bob"]
    renamed = pinpoint.update_segment(ApplicationId="acme", SegmentId=seg["Id"],
                                      WriteSegmentRequest={"Name": "renamed"})["SegmentResponse"]
    assert renamed["Version"] == 3 and renamed["Dimensions"] == updated["Dimensions"]  # definition kept
    versions = pinpoint.get_segment_versions(ApplicationId="acme", SegmentId=seg["Id"])["SegmentsResponse"]["Item"]
    assert [(v["Version"], v["Name"]) for v in versions] == [(1, "plans"), (2, "free plans"), (3, "renamed")]
    first = pinpoint.get_segment_version(ApplicationId="acme", SegmentId=seg["Id"], Version="1")["SegmentResponse"]
    assert first["Dimensions"]["UserAttributes"]["plan"]["Values"] == ["pro"]
    assert [v["version"] for v in native.get(f"/v1/segments/{seg['Id']}/versions").json()["items"]] == [1, 2, 3]
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_segment_version(ApplicationId="acme", SegmentId=seg["Id"], Version="9")
    deleted = pinpoint.delete_segment(ApplicationId="acme", SegmentId=seg["Id"])["SegmentResponse"]
    assert deleted["Id"] == seg["Id"] and deleted["Name"] == "renamed"
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_segment(ApplicationId="acme", SegmentId=seg["Id"])
    assert native.get(f"/v1/segments/{seg['Id']}").status_code == 404


@pytest.mark.parametrize("request_, path", [
    ({"Dimensions": {"Demographic": {"DeviceType": {"Values": ["PHONE"]}}}}, "Dimensions.Demographic.DeviceType"),
    ({"Dimensions": {"Attributes": {"d": {"AttributeType": "BEFORE", "Values": ["2024-01-01"]}}}},
     "Dimensions.Attributes.d.AttributeType"),
    ({"Dimensions": {"UserAttributes": {"d": {"AttributeType": "ON", "Values": ["someday"]}}}},
     "Dimensions.UserAttributes.d"),
    ({"Dimensions": {"UserAttributes": {"d": {"AttributeType": "BETWEEN", "Values": ["2024-01-01"]}}}},
     "Dimensions.UserAttributes.d.Values"),
    ({"Dimensions": {"UserAttributes": {"d": {"AttributeType": "INCLUSIVE", "Values": []}}}},
     "Dimensions.UserAttributes.d.Values"),
    ({"Dimensions": {"Demographic": {"Channel": {"Values": ["IN_APP"]}}}}, "Dimensions.Demographic.Channel.Values"),
    ({"Dimensions": {"Metrics": {"m": {"ComparisonOperator": "ABOUT", "Value": 1.0}}}},
     "Dimensions.Metrics.m.ComparisonOperator"),
    ({"Dimensions": {"Location": {"GPSPoint": {"Coordinates": {"Latitude": 1.0, "Longitude": 2.0}}}}},
     "Dimensions.Location.GPSPoint.RangeInKilometers"),
    ({"Dimensions": {"Location": {"GPSPoint": {"Coordinates": {"Latitude": 100.0, "Longitude": 2.0},
                                               "RangeInKilometers": 5.0}}}}, "Dimensions.Location.GPSPoint"),
    ({"SegmentGroups": {"Groups": [{"SourceSegments": [{"Id": "nope"}]}]}},
     "SegmentGroups.Groups[0].SourceSegments[0].Id"),
    ({"SegmentGroups": {"Groups": [{"Dimensions": [{"Demographic": {"DeviceType": {"Values": ["PHONE"]}}}]}]}},
     "SegmentGroups.Groups[0].Dimensions[0].Demographic.DeviceType"),
    ({"tags": {"aws:team": "x"}}, "WriteSegmentRequest.tags.aws:team"),
])
def test_what_tidings_cannot_express_is_refused_naming_it(pinpoint, native, request_, path):
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _create(pinpoint, **request_)
    assert caught.value.response["Error"]["Message"].startswith(path + ":")
    assert native.get("/v1/segments").json()["items"] == []  # nothing written


def test_a_source_segment_version_is_refused(pinpoint):
    base = _create(pinpoint, "base", Dimensions={})
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        _create(pinpoint, SegmentGroups={"Groups": [{"SourceSegments": [{"Id": base["Id"], "Version": 1}]}]})
    assert "SourceSegments[0].Version" in caught.value.response["Error"]["Message"]


def test_another_workspace_key_sees_not_found(running_api, pinpoint):
    seg = _create(pinpoint, "mine", Dimensions={"Demographic": {"Platform": {"Values": ["ios"]}}})
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    for call in (lambda: other.get_segment(ApplicationId="acme", SegmentId=seg["Id"]),
                 lambda: other.get_segments(ApplicationId="acme"),
                 lambda: other.delete_segment(ApplicationId="acme", SegmentId=seg["Id"]),
                 lambda: other.get_segment_versions(ApplicationId="acme", SegmentId=seg["Id"])):
        with pytest.raises(other.exceptions.NotFoundException):
            call()
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_segment(ApplicationId="globex", SegmentId=seg["Id"])
    assert other.get_segments(ApplicationId="globex")["SegmentsResponse"]["Item"] == []
    assert pinpoint.get_segment(ApplicationId="acme", SegmentId=seg["Id"])["SegmentResponse"]["Name"] == "mine"
