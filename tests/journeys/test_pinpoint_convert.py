"""Pinpoint journey JSON -> journey YAML (engine/journeys/pinpoint): the example converts into YAML that the normal
compiler accepts, reads back as the same Pinpoint journey in every member Tidings keeps, what Tidings cannot run
is refused naming the activity and member, and `tidings pinpoint convert` writes the folder and reports refusals."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.compiler import compile_journey
from tidings.engine.journeys.language.issues import JourneyCompileError
from tidings.engine.journeys.pinpoint import journey_parts, journey_yaml
from tidings.engine.platform.errors import InvalidInput
from tests.processes import TIDINGS

EXAMPLE = Path(__file__).parents[2] / "examples" / "journey_welcome.json"


def example() -> dict:
    return json.loads(EXAMPLE.read_text())["JourneyResponse"]


def compiled(source: dict, journey_id: str = "welcome") -> ir.JourneyIR:
    return compile_journey(journey_yaml(source, journey_id), path="welcome.yaml")


def test_the_example_compiles_to_the_journey_it_describes():
    j = compiled(example())
    assert isinstance(j.entry, ir.EventEntry) and j.entry.event == "sign_up"
    assert j.entry.filter == {"in": [{"var": "event.attributes.plan"}, ["trial", "pro-trial"]]}
    assert j.start == "control" and isinstance(j.nodes["control"], ir.HoldoutNode)
    assert j.nodes["control"].percent == 10 and j.nodes["control"].next == "welcomemail"
    mail = j.nodes["welcomemail"]
    assert isinstance(mail, ir.SendNode) and (mail.channel, mail.template, mail.next) == ("EMAIL", "welcome-email",
                                                                                          "opened")
    wait = j.nodes["opened"]  # EvaluationWaitTime, then the split
    assert isinstance(wait, ir.WaitNode) and wait.seconds == 86400 and wait.next == "opened--when"
    split = j.nodes["opened--when"]
    assert isinstance(split, ir.SplitNode) and split.else_next == "nudge"
    [branch] = split.branches
    assert isinstance(branch, ir.MessageEventBranch) and (branch.step, branch.type) == ("welcomemail", "opened")
    assert [b.weight for b in j.nodes["abtips"].branches] == [50, 50]
    nudge = j.nodes["nudge"]  # a condition on a custom event waits for it
    assert isinstance(nudge, ir.WaitForNode) and nudge.event == "purchase" and nudge.timeout_seconds == 3 * 86400
    assert nudge.filter == {">": [{"var": "event.metrics.price"}, 0]}
    assert (nudge.on_event, nudge.on_timeout) == ("route", "reminder")
    assert j.nodes["reminder"].channel == "SMS" and j.nodes["week"].seconds == 7 * 86400
    route = j.nodes["route"]
    assert [(b.segment, b.next) for b in route.branches] == [("vip-customers", "vipmail"), ("trial-users", "upgrade")]
    assert route.else_next == "end" and j.nodes["upgrade"].channel == "PUSH"
    s = j.settings
    assert (s.quiet_hours.start, s.quiet_hours.end, s.quiet_hours.action) == ("22:00", "08:00", "hold")
    assert s.entry.max_entries == 1 and (s.frequency_cap.messages, s.frequency_cap.per_seconds) == (2, 86400)


def test_the_yaml_explains_what_has_no_exact_equivalent():
    text = journey_yaml(example(), "welcome")
    assert "FromAddress 'hello@example.com': Tidings sends from the EMAIL channel's configured sender" in text
    assert "Limits.TotalCap 4: no path of this journey sends more (3)" in text
    assert "Pinpoint state ACTIVE" in text


def test_reading_back_gives_the_pinpoint_journey():
    source = example()
    back = journey_parts(compiled(source))
    for key in ("StartCondition", "QuietTime", "WaitForQuietTime", "StartActivity"):
        expected = copy.deepcopy(source[key])
        if key == "StartCondition":
            expected.pop("Description")
        assert back[key] == expected, key
    assert back["Limits"] == {"DailyCap": 2, "EndpointReentryCap": 1}  # TotalCap holds by construction; not kept
    expected = copy.deepcopy(source["Activities"])
    for act in expected.values():
        act.pop("Description", None)
        for body in act.values():
            body.pop("MessageConfig", None)  # the channel's configured sender is used
    expected["nudge"]["ConditionalSplit"]["Condition"]["Conditions"][0]["EventCondition"]["Dimensions"]["Metrics"][
        "price"]["Value"] = 0.0
    assert back["Activities"] == expected


def test_segment_start_with_a_schedule_and_local_time():
    source = {"Name": "Launch", "StartActivity": "a",
              "StartCondition": {"SegmentStartCondition": {"SegmentId": "all-users"}},
              "Schedule": {"StartTime": "2027-01-05T09:00:00Z"}, "LocalTime": True,
              "Limits": {"EndpointReentryCap": 0, "EndpointReentryInterval": "P1DT12H"},
              "Activities": {"a": {"EMAIL": {"TemplateName": "launch"}}}}
    j = compiled(source)
    assert isinstance(j.entry, ir.BroadcastEntry) and j.entry.segment == "all-users"
    assert (j.entry.at, j.entry.timezone) == ("2027-01-05T09:00", "customer")
    assert j.settings.entry.max_entries is None and j.settings.entry.min_interval_seconds == 36 * 3600
    back = journey_parts(j)
    assert back["Schedule"] == {"StartTime": "2027-01-05T09:00:00Z"} and back["LocalTime"] is True
    assert back["Limits"] == {"EndpointReentryCap": 0, "EndpointReentryInterval": "P1DT12H"}
    source.update(LocalTime=False, Schedule={"StartTime": "2027-01-05T09:00:00+02:00"})
    j = compiled(source)
    assert j.entry.at == "2027-01-05T09:00:00+02:00" and j.entry.timezone == "UTC"


def test_refresh_on_segment_update_also_admits_who_joins_the_segment_and_reads_back():
    source = {"Name": "Joiners", "StartActivity": "a", "RefreshOnSegmentUpdate": True,
              "StartCondition": {"SegmentStartCondition": {"SegmentId": "pro"}},
              "Activities": {"a": {"EMAIL": {"TemplateName": "news"}}}}
    text = journey_yaml(source, "joiners")
    assert "on_join: true" in text and "# RefreshOnSegmentUpdate: the segment's members at activation" in text
    j = compiled(source)
    assert isinstance(j.entry, ir.BroadcastEntry) and (j.entry.segment, j.entry.on_join) == ("pro", True)
    assert not (j.entry.at or j.entry.every_seconds) and j.settings.entry.max_entries == 1
    back = journey_parts(j)
    assert back["RefreshOnSegmentUpdate"] is True and back["StartCondition"] == source["StartCondition"]
    both = compiled({**source, "RefreshFrequency": "PT2H"}).entry  # the two Pinpoint settings together
    assert (both.on_join, both.refresh, both.every_seconds) == (True, True, 7200)
    assert journey_parts(compiled({**source, "RefreshFrequency": "PT2H"}))["RefreshFrequency"] == "PT2H"
    plain = compiled({**source, "RefreshOnSegmentUpdate": False})
    assert plain.entry.on_join is False and "RefreshOnSegmentUpdate" not in journey_parts(plain)
    with pytest.raises(InvalidInput) as caught:  # joiners are admitted from the activation, not from StartTime
        journey_yaml({**source, "Schedule": {"StartTime": "2027-01-05T09:00:00Z"}}, "j")
    assert caught.value.field == "RefreshOnSegmentUpdate" and "Schedule.StartTime" in caught.value.message


def test_conditional_split_all_of_two_segments_is_a_chain():
    source = {"Name": "Both", "StartActivity": "both",
              "StartCondition": {"SegmentStartCondition": {"SegmentId": "everyone"}},
              "Activities": {
                  "both": {"ConditionalSplit": {
                      "Condition": {"Operator": "ALL", "Conditions": [
                          {"SegmentCondition": {"SegmentId": "vip"}}, {"SegmentCondition": {"SegmentId": "eu"}}]},
                      "TrueActivity": "yes", "FalseActivity": "no"}},
                  "yes": {"EMAIL": {"TemplateName": "yes"}}, "no": {"SMS": {"TemplateName": "no"}}}}
    j = compiled(source)
    first, second = j.nodes["both"], j.nodes["both--and2"]
    assert [b.segment for b in first.branches] == ["vip"] and first.branches[0].next == "both--and2"
    assert [b.segment for b in second.branches] == ["eu"] and second.branches[0].next == "yes"
    assert first.else_next == second.else_next == "no"
    assert journey_parts(j)["Activities"]["both"] == source["Activities"]["both"]
    source["Activities"]["both"]["ConditionalSplit"]["Condition"]["Operator"] = "ANY"
    any_of = compiled(source).nodes["both"]
    assert [(b.segment, b.next) for b in any_of.branches] == [("vip", "yes"), ("eu", "yes")]
    assert journey_parts(compiled(source))["Activities"]["both"] == source["Activities"]["both"]


def _refusal(source: dict) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        journey_yaml(source, "j")
    return caught.value


@pytest.mark.parametrize("change, field, words", [
    (lambda s: s["Activities"].update(call={"ContactCenter": {"NextActivity": "tipsa"}}),
     "Activities.call.ContactCenter", "contact-center"),
    (lambda s: s["Activities"].update(hook={"CUSTOM": {"DeliveryUri": "arn:aws:lambda:x"}}),
     "Activities.hook.CUSTOM.DeliveryUri", "https URL of a webhook"),
    (lambda s: s["Activities"]["tipsa"]["EMAIL"].update(TemplateVersion="3"),
     "Activities.tipsa.EMAIL.TemplateVersion", "current version"),
    (lambda s: s["Activities"]["week"]["Wait"].update(WaitTime={"WaitFor": "P1M"}),
     "Activities.week.Wait.WaitTime.WaitFor", "ISO 8601 duration"),
    (lambda s: s["Activities"]["control"]["Holdout"].update(Percentage=100),
     "Activities.control.Holdout.Percentage", "1 to 99"),
    (lambda s: s["Activities"]["opened"]["ConditionalSplit"]["Condition"]["Conditions"][0]["EventCondition"][
        "Dimensions"]["EventType"].update(Values=["_email.softbounce"]),
     "Activities.opened.ConditionalSplit.Condition.Conditions[0].EventCondition.Dimensions", "_email.open"),
    (lambda s: s["Activities"]["route"]["MultiCondition"]["Branches"][0]["Condition"].update(
        SegmentDimensions={"Demographic": {}}),
     "Activities.route.MultiCondition.Branches[0].Condition.SegmentDimensions", "not supported"),
    (lambda s: s["Activities"]["abtips"]["RandomSplit"]["Branches"][0].update(NextActivity="nowhere"),
     "Activities.abtips.RandomSplit.Branches[0].NextActivity", "no activity 'nowhere'"),
    (lambda s: s["Limits"].update(MessagesPerSecond=50), "Limits.MessagesPerSecond", "per channel"),
    (lambda s: s["Limits"].update(TotalCap=2), "Limits.TotalCap", "sends up to 3"),
    (lambda s: s.update(Schedule={"EndTime": "2027-01-01T00:00:00"}), "Schedule.EndTime", "needs its offset"),
    (lambda s: s.update(RefreshFrequency="PT1H"), "RefreshFrequency", "applies to a journey that starts from a segment"),
    (lambda s: s.update(RefreshOnSegmentUpdate=True), "RefreshOnSegmentUpdate",
     "applies to a journey that starts from a segment"),
    (lambda s: s.update(RefreshOnSegmentUpdate="yes"), "RefreshOnSegmentUpdate", "true or false"),
    (lambda s: s.update(ClosedDays={"EMAIL": [{"Name": "x", "StartDateTime": "2027-01-01T00:00",
                                               "EndDateTime": "2027-01-02T00:00"}]}), "ClosedDays",
     "only with SendingSchedule true"),
    (lambda s: s.update(SendingSchedule=True, ClosedDays={"EMAIL": [{"Name": "x", "StartDateTime": "2027-01-01T00:00Z",
                                                                     "EndDateTime": "2027-01-02T00:00"}]}),
     "ClosedDays.EMAIL[0].StartDateTime", "without offset"),
    (lambda s: s.update(SendingSchedule=True, OpenHours={"EMAIL": {"MOONDAY": []}}), "OpenHours.EMAIL.MOONDAY",
     "not a day of the week"),
    (lambda s: s.update(SendingSchedule=True, OpenHours={"FAX": {"MONDAY": [{"StartTime": "09:00", "EndTime": "10:00"}]}}),
     "OpenHours.FAX", "not supported"),
    (lambda s: s.update(SendingSchedule=True), "SendingSchedule", "no OpenHours or ClosedDays"),
    (lambda s: s["StartCondition"]["EventStartCondition"]["EventFilter"]["Dimensions"]["EventType"].update(
        Values=["a", "b"]), "StartCondition.EventStartCondition.EventFilter.Dimensions.EventType", "one value"),
    (lambda s: s["Activities"].update(Bad={"Wait": {"WaitTime": {"WaitFor": "PT1H"}}}, bad={"Wait": {
        "WaitTime": {"WaitFor": "PT1H"}}}), "Activities.bad", "already is"),
])
def test_what_tidings_cannot_run_is_refused_by_name(change, field, words):
    source = example()
    change(source)
    refused = _refusal(source)
    assert refused.field == field and words in refused.message, refused.message


def test_convert_command_writes_the_folder_and_reports_refusals(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "welcome.json").write_text(EXAMPLE.read_text())
    broken = example()
    broken["Id"] = "callcenter"
    broken["Activities"]["call"] = {"ContactCenter": {}}
    (exports / "call.json").write_text(json.dumps({"JourneyResponse": broken}))
    (exports / "junk.json").write_text("{not json")
    out = tmp_path / "journeys"

    run = subprocess.run([TIDINGS, "pinpoint", "convert", str(exports), "--out", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"refused  {exports / 'call.json'}: journey callcenter: Activities.call.ContactCenter:" in run.stderr
    assert f"refused  {exports / 'junk.json'}: not readable" in run.stderr
    assert "1 converted, 2 refused" in run.stdout
    [written] = sorted(out.iterdir())
    assert written.name == "4e8a1b2c3d4e5f60718293a4b5c6d7e8.yaml"
    j = compile_journey(written.read_text(), path=str(written))
    assert j.id == "4e8a1b2c3d4e5f60718293a4b5c6d7e8" and j.name == "Welcome new sign-ups"
    first = written.read_text()

    (exports / "call.json").unlink()
    (exports / "junk.json").unlink()
    again = subprocess.run([TIDINGS, "pinpoint", "convert", str(exports / "welcome.json"), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "1 converted, 0 refused" in again.stdout
    assert written.read_text() == first  # idempotent


def test_names_and_values_cannot_break_out_of_the_yaml():
    source = example()
    source["Name"] = 'Welcome\nsteps: []\n# "quoted" \\ name'
    source["Activities"]["welcomemail"]["EMAIL"]["MessageConfig"]["FromAddress"] = "a@example.com\nid: evil"
    source["StartCondition"]["EventStartCondition"]["EventFilter"]["Dimensions"]["Attributes"] = {
        'plan"]}, {"var': {"AttributeType": "INCLUSIVE", "Values": ["x\ny"]}}
    j = compiled(source)
    assert j.name == source["Name"] and j.id == "welcome" and "welcomemail" in j.nodes
    assert j.entry.filter == {"in": [{"var": 'event.attributes.plan"]}, {"var'}, ["x\ny"]]}


def test_a_list_journeys_export_gives_one_file_per_journey(tmp_path):
    from tidings.engine.journeys.pinpoint.convert import convert

    first, second, clash = example(), example(), example()
    second.update(Id="Second01", Name="Second")
    clash["Name"] = "Same id as the first"
    export = tmp_path / "journeys.json"
    export.write_text(json.dumps({"JourneysResponse": {"Item": [first, second, clash]}}))
    outcomes = convert(export, tmp_path / "out")
    assert [o.written.name if o.written else None for o in outcomes] == [
        "4e8a1b2c3d4e5f60718293a4b5c6d7e8.yaml", "second01.yaml", None]
    assert "also written from" in outcomes[2].error
    assert compile_journey((tmp_path / "out" / outcomes[0].written.name).read_text()).name == "Welcome new sign-ups"
    assert compile_journey((tmp_path / "out" / "second01.yaml").read_text()).name == "Second"


def test_native_journeys_read_back_without_what_pinpoint_cannot_say():
    folder = Path(__file__).parents[2] / "journeys"
    launch = journey_parts(compile_journey((folder / "launch-announcement.yaml").read_text()))
    assert launch["StartCondition"] == {"SegmentStartCondition": {"SegmentId": "all-users"}}
    assert launch["Activities"] == {"announce": {"EMAIL": {"TemplateName": "launch-email"}}}
    welcome = journey_parts(compile_journey((folder / "welcome.yaml").read_text()))
    # a JsonLogic `when` branch, an `event.plan` filter and a send with `data` have no Pinpoint form: left out
    assert "Activities" not in welcome and "StartCondition" not in welcome
    assert welcome["QuietTime"] == {"Start": "21:00", "End": "08:00"} and welcome["Limits"]["EndpointReentryCap"] == 1
    digest = journey_parts(compile_journey((folder / "weekly-digest.yaml").read_text()))
    assert "StartCondition" not in digest  # a cron broadcast
    assert digest["Limits"] == {"EndpointReentryCap": 0, "EndpointReentryInterval": "P6D"}


def test_a_custom_activity_is_a_custom_channel_step_and_reads_back():
    source = example()
    hook = {"DeliveryUri": "https://hooks.example.com/pinpoint?app=1", "EndpointTypes": ["EMAIL", "GCM"],
            "MessageConfig": {"Data": '{"coupon": "X1"}'}, "TemplateName": "welcome-email"}
    source["Activities"]["control"]["Holdout"]["NextActivity"] = "hook"
    source["Activities"]["hook"] = {"CUSTOM": {**hook, "NextActivity": "welcomemail"}}
    j = compiled(source)
    node = j.nodes["hook"]
    assert isinstance(node, ir.SendNode) and node.channel == "WEBHOOK" and node.template == "welcome-email"
    assert node.custom == ir.CustomDelivery(url=hook["DeliveryUri"], endpoint_types=["EMAIL", "GCM"],
                                            data='{"coupon": "X1"}')
    assert journey_parts(j)["Activities"]["hook"] == source["Activities"]["hook"]


@pytest.mark.parametrize("step, words", [
    ("custom_channel: {url: 'arn:aws:lambda:us-east-1:1:function:f'}", "cannot invoke a Lambda function"),
    ("custom_channel: {url: 'https://h.example.com', endpoint_types: [FAX]}", "unknown type `FAX`"),
    ("custom_channel: {endpoint_types: [EMAIL]}", "url"),
])
def test_a_custom_channel_step_is_checked_where_it_is_written(step, words):
    text = ("apiVersion: tidings/v1\nkind: Journey\nid: hook\nname: Hook\nentry:\n  broadcast: {segment: pro}\n"
            f"steps:\n  - id: notify\n    {step}\n")
    with pytest.raises(JourneyCompileError) as caught:
        compile_journey(text)
    assert words in str(caught.value) and str(caught.value).startswith("<string>:9:"), str(caught.value)
