"""`tidings pinpoint convert` on segments and templates: what GetSegments and Get*Template returned (from this
API through boto3, as from Pinpoint) becomes `kind: Segment` / `kind: Template` YAML that `tidings apply` loads
into another workspace as the same rules and templates; what Tidings cannot hold is refused by name."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tidings.engine.journeys.pinpoint.resources import segment_yaml, template_yaml
from tidings.engine.platform.db import make_engine
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import create_key
from tests.processes import TIDINGS, tidings_env


def _export(pinpoint, folder) -> dict[str, str]:
    pro = pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro on iOS", "Dimensions": {
            "UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}},
            "Demographic": {"Platform": {"DimensionType": "INCLUSIVE", "Values": ["ios"]}},
            "Metrics": {"visits": {"ComparisonOperator": "GREATER_THAN", "Value": 3}}}})["SegmentResponse"]
    pinpoint.create_segment(ApplicationId="acme", WriteSegmentRequest={
        "Name": "Pro, not golfers", "SegmentGroups": {"Include": "ALL", "Groups": [{
            "SourceSegments": [{"Id": pro["Id"]}], "SourceType": "ALL", "Type": "NONE",
            "Dimensions": [{"Attributes": {"sport": {"Values": ["golf"]}}}]}]}})
    pinpoint.create_email_template(TemplateName="welcome", EmailTemplateRequest={
        "Subject": "Hi {{User.UserAttributes.FirstName}}", "HtmlPart": "<p>Hello {{Attributes.City}}</p>",
        "TextPart": "Hello {{Attributes.City}}",
        "DefaultSubstitutions": json.dumps({"User.UserAttributes.FirstName": "there"})})
    pinpoint.create_sms_template(TemplateName="code", SMSTemplateRequest={"Body": "Your code: {{Attributes.Code}}"})

    segments = pinpoint.get_segments(ApplicationId="acme")
    segments.pop("ResponseMetadata")
    (folder / "segments.json").write_text(json.dumps(segments))
    email = pinpoint.get_email_template(TemplateName="welcome")
    email.pop("ResponseMetadata")
    (folder / "welcome.json").write_text(json.dumps(email))
    sms = pinpoint.get_sms_template(TemplateName="code")
    sms.pop("ResponseMetadata")
    (folder / "code.json").write_text(json.dumps(sms))
    return {s["Name"]: s["Id"] for s in segments["SegmentsResponse"]["Item"]}


def _native(api, workspace_name: str) -> httpx.Client:
    db = make_engine(api.database_url)
    _, key = create_key(db, workspace_name)
    db.dispose()
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_segments_and_templates_convert_and_apply_as_the_same_resources(running_api, pinpoint, native, tmp_path):
    exports, out = tmp_path / "exports", tmp_path / "journeys"
    exports.mkdir()
    ids = _export(pinpoint, exports)

    run = subprocess.run([TIDINGS, "pinpoint", "convert", str(exports), "--out", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 converted, 0 refused" in run.stdout
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml"))
    assert written == sorted([f"segments/{ids['Pro on iOS']}.yaml", f"segments/{ids['Pro, not golfers']}.yaml",
                              "templates/code.yaml", "templates/welcome.yaml"])
    before = {p: p.read_text() for p in out.rglob("*.yaml")}

    env = tidings_env(tmp_path / "home", running_api.database_url)
    applied = subprocess.run([TIDINGS, "apply", str(out), "--workspace", "globex"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    with _native(running_api, "globex") as globex:
        for seg_id in ids.values():  # same id, same rule, in the other workspace
            mine, theirs = native.get(f"/v1/segments/{seg_id}").json(), globex.get(f"/v1/segments/{seg_id}").json()
            assert theirs["rule"] == mine["rule"] and theirs["name"] == mine["name"], (mine, theirs)
        for name in ("welcome", "code"):
            mine, theirs = native.get(f"/v1/templates/{name}").json(), globex.get(f"/v1/templates/{name}").json()
            for part in ("channel", "subject", "html", "text", "body", "defaults"):
                assert theirs.get(part) == mine.get(part), (part, mine, theirs)
        # and the other workspace reads them back through Pinpoint as the originals
        assert globex.get("/v1/templates/welcome").json()["subject"] == "Hi {{User.UserAttributes.FirstName}}"

    again = subprocess.run([TIDINGS, "pinpoint", "convert", str(exports), "--out", str(out)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0
    assert {p: p.read_text() for p in out.rglob("*.yaml")} == before  # idempotent
    reapplied = subprocess.run([TIDINGS, "apply", str(out), "--workspace", "globex"], capture_output=True,
                               text=True, timeout=120, env=env)
    assert reapplied.returncode == 0 and "created" not in reapplied.stdout and "updated" not in reapplied.stdout


@pytest.mark.parametrize("source, field, words", [
    ({"Id": "imported", "Name": "From a file", "SegmentType": "IMPORT"}, "SegmentType", "tidings segments import"),
    ({"Id": "s1", "Name": "x", "SegmentType": "DIMENSIONAL",
      "Dimensions": {"Location": {"GPSPoint": {"Coordinates": {"Latitude": 1, "Longitude": 2}}}}},
     "Dimensions.Location.GPSPoint.RangeInKilometers", "needs the range"),
    ({"Id": "Not an id!", "Name": "x", "SegmentType": "DIMENSIONAL", "Dimensions": {}}, "Id", "cannot be a Tidings id"),
])
def test_a_segment_tidings_cannot_hold_is_refused_by_name(source, field, words):
    with pytest.raises(InvalidInput) as refused:
        segment_yaml(source)
    assert (refused.value.field or "").startswith(field) and words in refused.value.message, refused.value.message


@pytest.mark.parametrize("source, words", [
    ({"TemplateName": "t", "TemplateType": "EMAIL", "Subject": "s", "RecommenderId": "r1"}, "RecommenderId"),
    ({"TemplateName": "t", "TemplateType": "EMAIL", "LastModifiedDate": "2026-01-01"}, "fetch it with GetEmailTemplate"),
    ({"TemplateName": "t", "TemplateType": "INAPP", "Body": "b"}, "TemplateType 'INAPP'"),
    ({"TemplateName": "t", "TemplateType": "SMS", "Body": "{{ unclosed"}, "unexpected end of template"),
])
def test_a_template_tidings_cannot_hold_is_refused_by_name(source, words):
    with pytest.raises(InvalidInput) as refused:
        template_yaml(source)
    assert words in refused.value.message, refused.value.message


def test_ids_and_names_that_look_like_numbers_read_back_as_written(tmp_path):
    """Pinpoint's hex ids can look like a float (`8052024e6931`): the YAML quotes them, else Tidings (YAML 1.2)
    read one back as a number and `tidings apply` refused the file for want of a string `id`."""
    from tidings.engine.journeys import load_resources

    seg_id, seg = segment_yaml({"Id": "8052024e6931", "Name": "1e5", "SegmentType": "DIMENSIONAL", "Dimensions": {
        "UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro"]}}}})
    tpl_id, tpl = template_yaml({"TemplateName": "2024e1", "TemplateType": "SMS", "Body": "0x1F"})
    (tmp_path / "segment.yaml").write_text(seg)
    (tmp_path / "template.yaml").write_text(tpl)
    read = {r.kind: r.doc for r in load_resources(tmp_path)}
    assert (read["Segment"]["id"], read["Segment"]["name"]) == (seg_id, "1e5") == ("8052024e6931", "1e5")
    assert read["Template"]["id"] == tpl_id == "2024e1" and "0x1F" in json.dumps(read["Template"])


def test_a_project_read_live_converts_as_its_exported_files_do(running_api, pinpoint, acme_key, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    ids = _export(pinpoint, exports)
    journey = pinpoint.create_journey(ApplicationId="acme", WriteJourneyRequest={
        "Name": "Welcome pros", "StartActivity": "hello",
        "StartCondition": {"SegmentStartCondition": {"SegmentId": ids["Pro on iOS"]}},
        "Activities": {"hello": {"EMAIL": {"TemplateName": "welcome"}}}})
    journey.pop("ResponseMetadata")
    (exports / "journey.json").write_text(json.dumps(journey))
    from_files, live = tmp_path / "from-files", tmp_path / "live"
    subprocess.run([TIDINGS, "pinpoint", "convert", str(exports), "--out", str(from_files)], check=True,
                   capture_output=True, timeout=120)

    env = {**tidings_env(tmp_path / "home", running_api.database_url), "AWS_ACCESS_KEY_ID": acme_key.access_key_id,
           "AWS_SECRET_ACCESS_KEY": acme_key.secret, "AWS_REGION": "us-east-1"}
    run = subprocess.run([TIDINGS, "pinpoint", "convert", "--application-id", "acme", "--endpoint-url",
                          running_api.pinpoint_url, "--out", str(live)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 converted, 0 refused" in run.stdout
    files = {str(p.relative_to(from_files)): p.read_text() for p in from_files.rglob("*.yaml")}
    assert len(files) == 5 and {str(p.relative_to(live)): p.read_text() for p in live.rglob("*.yaml")} == files
    checked = subprocess.run([TIDINGS, "validate", str(live)], capture_output=True, text=True, timeout=120, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # compiles with no further edit

    refused = subprocess.run([TIDINGS, "pinpoint", "convert", "--application-id", "acme", "--endpoint-url",
                              running_api.pinpoint_url, "--out", str(tmp_path / "x")], capture_output=True, text=True,
                             timeout=120, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert refused.returncode == 2 and "ListJourneys: InvalidSignatureException" in refused.stderr, refused.stderr
    assert not (tmp_path / "x").exists()
