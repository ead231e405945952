"""Every compile error a user can make, asserted at the exact path:line:column they would see."""
from __future__ import annotations

import textwrap

import pytest

from tidings.engine.journeys import JourneyCompileError, StaticCatalog, compile_journey
from tidings.engine.journeys.ir import ExitNode

# Five fixed header lines, so the first step is always on line 6.
HEAD = """\
apiVersion: tidings/v1
kind: Journey
id: t
entry: {event: go}
steps:
"""
CATALOG = StaticCatalog(segments=["vip"], templates=["hello-email"], channels=["EMAIL", "SMS"])


def errors(text: str, catalog=None) -> list[str]:
    with pytest.raises(JourneyCompileError) as info:
        compile_journey(textwrap.dedent(text), path="j.yaml", catalog=catalog)
    return [str(e) for e in info.value.errors]


def assert_error(text: str, line: int, column: int, fragment: str, catalog=None) -> list[str]:
    errs = errors(text, catalog)
    prefix = f"j.yaml:{line}:{column}: "
    assert any(e.startswith(prefix) and fragment in e for e in errs), f"wanted {prefix}...{fragment!r} in:\n" + "\n".join(errs)
    return errs


def steps(body: str) -> str:
    return HEAD + textwrap.dedent(body)


# ---- YAML itself ------------------------------------------------------------------------------


def test_yaml_syntax_error_points_at_the_problem_and_where_it_opened():
    errs = assert_error(steps("""\
        - id: a
          send: {channel: EMAIL, template: x
        - id: b
        """), 8, 5, "expected ',' or '}'")
    assert "opened on line 7" in errs[0]


def test_duplicate_yaml_key_is_an_error_not_a_silent_overwrite():
    assert_error(steps("""\
        - id: a
          wait: 1d
          wait: 2d
        """), 8, 3, "duplicate key `wait` (first given on line 7)")


def test_clock_times_without_quotes_stay_times():
    # YAML 1.1 would read 21:00 as the number 1260; we read it as a time
    ir = compile_journey(HEAD.replace("steps:", "settings: {quiet_hours: {start: 21:00, end: 08:00}}\nsteps:")
                         + "  - {id: a, exit: {}}\n")
    assert (ir.settings.quiet_hours.start, ir.settings.quiet_hours.end) == ("21:00", "08:00")


# ---- structure --------------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed_keys():
    assert_error("apiVersion: tidings/v1\nkind: Journey\nid: t\nentry: {event: go}\nstpes: []\n", 5, 1,
                 "unknown key `stpes` in a journey document; did you mean `steps`? (allowed: apiVersion, kind, id, entry, steps,")


def test_unknown_key_in_step_and_in_action():
    errs = assert_error(steps("""\
        - id: a
          sned: {}
          send: {channel: EMAIL, template: x, subjet: hi}
        """), 7, 3, "unknown key `sned` in step `a`; did you mean `send`?")
    assert any(e.startswith("j.yaml:8:39: unknown key `subjet` in `send` of step `a`") and "allowed: channel, template, data" in e
               for e in errs)


def test_unknown_key_in_settings_section():
    assert_error(HEAD.replace("steps:", "settings:\n  frequency_cap: {messages: 1, per: 1d, every: 2}\nsteps:")
                 + "  - {id: a, exit: {}}\n", 6, 41, "unknown key `every` in `settings.frequency_cap`")


def test_missing_required_top_level_key():
    assert_error("apiVersion: tidings/v1\nkind: Journey\nid: t\nsteps:\n  - {id: a, exit: {}}\n", 1, 1,
                 "a journey document is missing required key `entry`")


def test_missing_required_key_in_send():
    assert_error(steps("""\
        - id: a
          send: {channel: EMAIL}
        """), 7, 9, "`send` of step `a` is missing required key `template`")


def test_wrong_types():
    errs = assert_error(steps("""\
        - id: a
          wait: 5
        - id: b
          random_split:
            branches: [{weight: "50", next: a}, {weight: 50, next: a}]
        """), 7, 9, "`wait` of step `a` must be a duration with a unit like 30s")
    assert any(e.startswith("j.yaml:10:25: `weight` in branch 1 of step `b` must be a number, got a string") for e in errs)


def test_steps_must_be_a_list():
    assert_error(HEAD + "  5\n", 6, 3, "`steps` must be a non-empty list of steps, got a number")


def test_unsupported_api_version():
    assert_error(steps("- {id: a, exit: {}}\n").replace("tidings/v1", "tidings/v9"), 1, 13, "unsupported apiVersion `tidings/v9`")


def test_step_with_no_action():
    assert_error(steps("""\
        - id: a
          next: end
        """), 6, 3, "step `a` has no action; give it one of: send, wait, wait_for")


def test_step_with_two_actions():
    assert_error(steps("""\
        - id: a
          send: {channel: EMAIL, template: x}
          wait: 1d
        """), 6, 3, "step `a` has 2 actions (send, wait)")


def test_duplicate_step_ids():
    assert_error(steps("""\
        - id: a
          wait: 1d
        - id: a
          exit: {}
        """), 8, 7, "duplicate step id `a` (first used on line 6)")


def test_bad_step_id_and_reserved_end():
    errs = assert_error(steps("""\
        - id: Hello World
          wait: 1d
        - id: end
          exit: {}
        """), 6, 7, "use lowercase letters, digits, `-` and `_`")
    assert any(e.startswith("j.yaml:8:7: `end` is reserved") for e in errs)


def test_next_forbidden_on_split():
    assert_error(steps("""\
        - id: a
          split: {branches: [{segment: vip, next: end}]}
          next: end
        """), 8, 3, "step `a` cannot have `next`: a split routes with `branches[].next` and `else`")


# ---- graph ------------------------------------------------------------------------------------


def test_dangling_next_suggests_a_close_id():
    assert_error(steps("""\
        - id: hello
          send: {channel: EMAIL, template: x}
          next: wait-a-dya
        - id: wait-a-day
          wait: 1d
        """), 8, 9, "`next` of step `hello` points to unknown step `wait-a-dya`; did you mean `wait-a-day`?")


def test_dangling_on_event_branch_and_else():
    errs = errors(steps("""\
        - id: a
          wait_for: {event: bought, timeout: 1d, on_event: nope, on_timeout: end}
        - id: b
          split:
            branches: [{segment: vip, next: gone}]
            else: missing
        """))
    assert any(e.startswith("j.yaml:7:52: `on_event` of step `a` points to unknown step `nope`") for e in errs)
    assert any(e.startswith("j.yaml:10:37: `next` of step `b` points to unknown step `gone`") for e in errs)
    assert any(e.startswith("j.yaml:11:11: `else` of step `b` points to unknown step `missing`") for e in errs)


def test_next_end_is_allowed_and_becomes_an_exit_node():
    ir = compile_journey(steps("- {id: a, wait: 1d, next: end}\n"))
    assert ir.nodes["a"].next == "end"
    assert isinstance(ir.nodes["end"], ExitNode) and ir.successors("end") == []


def test_unreachable_step():
    assert_error(steps("""\
        - id: a
          wait: 1d
          next: end
        - id: orphan
          exit: {}
        """), 9, 3, "step `orphan` is unreachable: no path leads to it from the start step `a`")


def test_unknown_start():
    assert_error(steps("- {id: a, exit: {}}\n").replace("steps:", "start: b\nsteps:"), 5, 8, "`start` names unknown step `b`")


def test_loop_without_wait():
    assert_error(steps("""\
        - id: a
          send: {channel: EMAIL, template: x}
        - id: b
          split:
            branches: [{segment: vip, next: a}]
            else: end
        """), 6, 3, "steps `a` -> `b` -> `a` form a loop with no `wait` or `wait_for`")


def test_loop_with_a_wait_is_fine():
    ir = compile_journey(steps("""\
        - id: a
          send: {channel: EMAIL, template: x}
        - id: pause
          wait: 7d
        - id: b
          split:
            branches: [{segment: vip, next: a}]
            else: end
        """))
    assert ("b", "a") in [(e.source, e.target) for e in ir.edges()]


def test_loop_through_a_fixed_date_wait_still_spins():
    # once 2026-12-24 has passed, `wait until` returns at once: it does not break the loop
    assert_error(steps("""\
        - id: a
          wait: {until: "2026-12-24T09:00:00Z"}
          next: a
        """), 6, 3, "steps `a` -> `a` form a loop")


# ---- catalog ----------------------------------------------------------------------------------


def test_unknown_segment_template_channel_via_catalog():
    text = steps("""\
        - id: a
          send: {channel: PUSH, template: bye-email}
        - id: b
          split: {branches: [{segment: vips, next: end}]}
        """)
    errs = errors(text, CATALOG)
    assert "j.yaml:7:19: unknown channel `PUSH`" in errs
    assert "j.yaml:7:35: unknown template `bye-email`" in errs
    assert "j.yaml:9:32: unknown segment `vips`" in errs


def test_without_catalog_references_are_not_checked():
    ir = compile_journey(steps("- {id: a, send: {channel: PUSH, template: anything}}\n"))
    assert ir.nodes["a"].template == "anything"


# ---- JsonLogic --------------------------------------------------------------------------------


def test_invalid_jsonlogic_points_at_the_nested_rule():
    assert_error(steps("""\
        - id: a
          split:
            branches:
              - when:
                  and:
                    - {"==": [{"var": "customer.plan"}, "pro"]}
                    - {">": [{"var": "customer.metrics.spend"}]}
                next: end
        """), 12, 15, "invalid JsonLogic in `when` in branch 1 of step `a` at `/and/1`: `>` takes at least 2 arguments")


def test_unknown_jsonlogic_operator_in_entry_filter():
    text = HEAD.replace("entry: {event: go}", "entry:\n  event: {name: go, filter: {bogus: 1}}") + "  - {id: a, exit: {}}\n"
    assert_error(text, 5, 29, "unknown operator `bogus`")


# ---- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, fragment", [
    ("1x", "`1x` is not a duration; write a number and a unit"),
    ("366d", "must be at most 365d, got `366d`"),
    ("0s", "must be at least 1s, got `0s`"),
])
def test_bad_wait_durations(value, fragment):
    assert_error(steps(f"- {{id: a, wait: {value}}}\n"), 6, 17, fragment)


def test_random_split_weights_must_sum_to_100_and_be_positive():
    assert_error(steps("""\
        - id: ab
          random_split:
            branches: [{weight: 60, next: end}, {weight: 30, next: end}]
        """), 8, 15, "random split weights of step `ab` must add up to 100, got 90")
    assert_error(steps("""\
        - id: ab
          random_split:
            branches: [{weight: 0, next: end}, {weight: 100, next: end}]
        """), 8, 25, "`weight` in branch 1 of step `ab` must be > 0")


@pytest.mark.parametrize("percent", [0, 100, 150])
def test_holdout_percent_range(percent):
    assert_error(steps(f"- {{id: h, holdout: {{percent: {percent}}}}}\n"), 6, 30, "`percent` in `holdout` of step `h` must be > 0 and < 100")


def test_message_event_must_reference_an_earlier_send():
    errs = errors(steps("""\
        - id: w
          wait: 1d
        - id: s1
          split:
            branches:
              - {message_event: {step: w, type: clicked}, next: end}
              - {message_event: {step: later, type: opened}, next: end}
        - id: later
          send: {channel: EMAIL, template: x}
        """))
    assert any(e.startswith("j.yaml:11:32: message_event in step `s1` refers to step `w`, which is a wait step, not a `send` step")
               for e in errs)
    assert any(e.startswith("j.yaml:12:32: message_event in step `s1` refers to send step `later`, which does not come before it")
               for e in errs)


def test_message_event_type_must_be_known():
    assert_error(steps("""\
        - id: hi
          send: {channel: EMAIL, template: x}
        - id: w
          wait_for: {message_event: {step: hi, type: liked}, timeout: 1d}
        """), 9, 46, "`type` in `message_event` in step `w` must be one of sent, delivered, opened, clicked")


@pytest.mark.parametrize("cron, column, fragment", [
    ("0 9 * *", 11, "has 4 field(s); it needs 5"),
    ("0 24 * * *", 11, "cron hour field `24`: 24 is out of range 0-23"),
    ("0 9 * * FUNDAY", 11, "cron day of week field `FUNDAY`: `FUNDAY` is not a number or a name like SUN"),
    ("*/0 9 * * *", 11, "step `/0` must be a positive number"),
])
def test_bad_cron(cron, column, fragment):
    text = HEAD.replace("entry: {event: go}", f'entry:\n  broadcast:\n    segment: all\n    cron: "{cron}"') + "  - {id: a, exit: {}}\n"
    assert_error(text, 7, column, fragment)


def test_quiet_hours_must_be_hh_mm():
    text = HEAD.replace("steps:", 'settings:\n  quiet_hours: {start: "9pm", end: "08:00"}\nsteps:') + "  - {id: a, exit: {}}\n"
    assert_error(text, 6, 24, '`start` in `settings.quiet_hours`: `9pm` is not a time of day; write 24-hour HH:MM')


@pytest.mark.parametrize("at, fragment", [
    ("2026-12-01T09:00:00", "has no time zone; add `Z` for UTC or an offset like +02:00; or set `timezone: customer`"),
    ("2026-12-01", "has no time of day"),
    ("next monday", "is not an ISO 8601 date-time"),
])
def test_broadcast_at_needs_an_iso_datetime_with_zone(at, fragment):
    text = HEAD.replace("entry: {event: go}", f'entry:\n  broadcast: {{segment: all, at: "{at}"}}') + "  - {id: a, exit: {}}\n"
    assert_error(text, 5, 33, fragment)


@pytest.mark.parametrize("broadcast, column, fragment", [
    # `at` in customers' own zones is a wall-clock time: an offset contradicts it
    ('at: "2026-12-01T09:00:00Z", timezone: customer', 33,
     "`2026-12-01T09:00:00Z` names an offset, but with `timezone: customer` it is the wall-clock time in each "
     "customer's own zone: write it without one, like 2026-12-01T09:00:00"),
    ('at: "2026-12-01T09:00:00+09:00", timezone: customer', 33, "names an offset"),
    ('at: "2026-12-01T09:00:30", timezone: customer', 33, "has seconds; a local send time is to the minute"),
    ('at: "2026-12-01", timezone: customer', 33, "has no time of day"),
    ("every: 1d, timezone: customer", 50, "`timezone: customer` needs `cron` or `at` (a time of day in each customer's "
                                          "own zone); `every` repeats at the same instants for everyone"),
    ("timezone: customer", 39, "`timezone: customer` needs `cron` or `at`"),
])
def test_broadcast_in_customer_zones_needs_a_local_time(broadcast, column, fragment):
    text = HEAD.replace("entry: {event: go}", f"entry:\n  broadcast: {{segment: all, {broadcast}}}") + "  - {id: a, exit: {}}\n"
    assert_error(text, 5, column, fragment)


def test_broadcast_in_customer_zones_accepts_cron_and_local_at():
    for broadcast in ('cron: "0 9 * * MON", timezone: customer', 'at: "2026-12-01T09:00", timezone: customer',
                      'at: "2026-12-01T09:00:00", timezone: customer'):
        text = HEAD.replace("entry: {event: go}", f"entry:\n  broadcast: {{segment: all, {broadcast}}}") + "  - {id: a, exit: {}}\n"
        entry = compile_journey(text).entry
        assert entry.timezone == "customer" and entry.at_epoch is None and (entry.cron or entry.at)


def test_broadcast_with_two_schedules():
    text = HEAD.replace("entry: {event: go}", 'entry:\n  broadcast: {segment: all, cron: "@daily", every: 1d}') + "  - {id: a, exit: {}}\n"
    assert_error(text, 5, 45, "a broadcast has one schedule; `cron` and `every` are both given")


def test_entry_needs_exactly_one_kind():
    text = HEAD.replace("entry: {event: go}", "entry: {event: go, segment_entry: vip}") + "  - {id: a, exit: {}}\n"
    assert_error(text, 4, 8, "`entry` needs exactly one of event, segment_entry, broadcast; got event, segment_entry")


def test_correlate_needs_an_event_entry():
    text = steps("- {id: w, wait_for: {event: bought, correlate: cart_id, timeout: 1d}}\n").replace(
        "entry: {event: go}", "entry: {segment_entry: vip}")
    assert_error(text, 6, 48, "`correlate` matches a property of the entry event, so it needs an `event` entry")


# ---- reporting --------------------------------------------------------------------------------


def test_all_errors_of_a_file_are_reported_at_once():
    text = steps("""\
        - id: a
          send: {channel: EMAIL, template: x}
          next: nowhere
        - id: b
          wait: 400d
        - id: c
          holdout: {percent: 0}
        - id: a
          exit: {}
        """).replace("settings", "").replace("steps:", "colour: blue\nsteps:")
    errs = errors(text)
    # unknown key, dangling next, the two steps it strands, bad duration, bad percent, duplicate id
    assert [e.split(": ", 1)[0] for e in errs] == [
        "j.yaml:5:1", "j.yaml:9:9", "j.yaml:10:3", "j.yaml:11:9", "j.yaml:12:3", "j.yaml:13:22", "j.yaml:14:7"]


def test_error_string_lists_one_issue_per_line_sorted():
    with pytest.raises(JourneyCompileError) as info:
        compile_journey(steps("- {id: a, wait: 2x}\n- {id: b, wait: 1y}\n"), path="j.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("j.yaml:6:17: `wait` of step `a`:") and lines[1].startswith("j.yaml:7:17: `wait` of step `b`:")
    issue = info.value.errors[0]
    assert (issue.path, issue.line, issue.column) == ("j.yaml", 6, 17)


@pytest.mark.parametrize("settings, line, column, fragment", [
    ("{default_timezone: Mars/Base}", 5, 30, "`Mars/Base` is not an IANA time zone"),
    ("{entry: {max_entries: lots}}", 5, 33, "`max_entries` must be a whole number >= 1 or `unlimited`"),
    ("{exit: [{event: bye, left_segment: vip}]}", 5, 19, "an `exit` criterion needs exactly one of `event` or `left_segment`"),
    ("{goal: {event: bought, within: 400d}}", 5, 42, "`within` in `settings.goal` must be at most 365d"),
    ("{quiet_hours: {start: '08:00', end: '08:00'}}", 5, 47, "quiet hours `start` and `end` are the same time"),
    ('{ends_at: "2026-12-01T09:00:00"}', 5, 21, "`ends_at` in `settings`: `2026-12-01T09:00:00` has no time zone"),
    ("{ends_at: soon}", 5, 21, "`ends_at` in `settings`: `soon` is not an ISO 8601 date-time"),
    ("{ends_at: 5}", 5, 21, "`ends_at` in `settings` must be a non-empty string"),
    ('{sending_hours: {open: {EMAIL: {monday: ["09:00-17:00", "16:00-18:00"]}}}}', 5, 67,
     "`16:00-18:00` in `monday` of `settings.sending_hours.open.EMAIL` overlaps the range ending at 17:00"),
    ('{sending_hours: {open: {EMAIL: {monday: ["17:00-09:00"]}}}}', 5, 52, "the end must be after the start"),
    ('{sending_hours: {open: {EMAIL: {monday: ["9-5"]}}}}', 5, 52, "`9-5` in `monday` of `settings.sending_hours."
     'open.EMAIL` is not a range of the day like "09:00-17:00"'),
    ('{sending_hours: {open: {EMAIL: {moonday: ["09:00-17:00"]}}}}', 5, 43, "did you mean `monday`?"),
    ('{sending_hours: {open: {FAX: {monday: ["09:00-17:00"]}}}}', 5, 35,
     "unknown key `FAX` in `settings.sending_hours.open`"),
    ('{sending_hours: {closed: {SMS: [{name: a, start: "2026-12-24T00:00", end: "2026-12-26T00:00"}, '
     '{name: b, start: "2026-12-25T00:00", end: "2026-12-27T00:00"}]}}}', 5, 106,
     "closed range `b` of SMS overlaps `a`"),
    ('{sending_hours: {closed: {SMS: [{name: a, start: "2026-12-24T00:00", end: "2026-12-23T00:00"}]}}}', 5, 85,
     "`end` of closed range `a` must be after its start"),
    ('{sending_hours: {closed: {SMS: [{name: a, start: "2026-12-24T00:00Z", end: "2026-12-26T00:00"}]}}}', 5, 60,
     "must be a local date-time without offset"),
    ("{sending_hours: {}}", 5, 27, "`settings.sending_hours` needs `open` hours or `closed` ranges"),
])
def test_bad_settings(settings, line, column, fragment):
    text = HEAD.replace("steps:", f"settings: {settings}\nsteps:") + "  - {id: a, exit: {}}\n"
    assert_error(text, line, column, fragment)


def test_ends_at_must_come_after_a_one_off_broadcast():
    text = HEAD.replace("entry: {event: go}", "entry: {broadcast: {segment: s, at: '2026-12-01T09:00:00Z'}}").replace(
        "steps:", "settings: {ends_at: '2026-12-01T08:00:00Z'}\nsteps:") + "  - {id: a, exit: {}}\n"
    assert_error(text, 5, 21, "`ends_at` 2026-12-01T08:00:00Z is not after the broadcast's `at` 2026-12-01T09:00:00Z")


@pytest.mark.parametrize("broadcast, column, fragment", [
    ("{segment: s, refresh: 30m}", 42, "`refresh` in entry `broadcast` must be at least 1h, got `30m`"),
    ("{segment: s, refresh: 1d, every: 1d}", 33, "a broadcast has one schedule; `every` and `refresh` are both given"),
    ("{segment: s, refresh: 1d, timezone: customer}", 56, "`refresh` repeats at the same instants for everyone"),
])
def test_a_refreshing_broadcast_is_hourly_at_most_with_one_schedule_in_one_zone(broadcast, column, fragment):
    text = HEAD.replace("entry: {event: go}", f"entry: {{broadcast: {broadcast}}}") + "  - {id: a, exit: {}}\n"
    assert_error(text, 4, column, fragment)


def test_recurring_broadcast_at_most_hourly_and_known_zone():
    text = HEAD.replace("entry: {event: go}", "entry: {broadcast: {segment: s, every: 30m, timezone: Mars/Base}}") + "  - {id: a, exit: {}}\n"
    errs = assert_error(text, 4, 40, "`every` in entry `broadcast` must be at least 1h, got `30m`")
    assert any(e.startswith("j.yaml:4:55: `Mars/Base` is not an IANA time zone") and "`customer`" in e for e in errs)
