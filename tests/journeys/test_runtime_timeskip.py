"""The interpreter under the time-skipping test server: days of waiting take milliseconds.

Sends take the real messaging path into the outbox channel (no channel is configured); `sends()`
reads what the outbox received."""
from __future__ import annotations

import textwrap
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

J = "apiVersion: tidings/v1\nkind: Journey\n"


def doc(body: str) -> str:
    return J + textwrap.dedent(body)


@pytest.fixture(autouse=True)
def template_t(journey_test):
    journey_test.template("t", subject="Hi {{ user.user_id }}", text="Hello {{ user.user_id }}, {{ data.x | default('') }}")


WAIT_THEN_SEND = doc("""
    id: nudge
    entry: {event: signed_up}
    steps:
      - {id: hello, send: {channel: EMAIL, template: t}}
      - {id: pause, wait: 2d}
      - {id: again, send: {channel: EMAIL, template: t}}
    """)


async def test_wait_two_days_then_send(journey_test):
    await journey_test.put(WAIT_THEN_SEND)
    pks = [journey_test.customer(f"u{i}") for i in range(5)]
    result = await journey_test.run("nudge", pks)
    assert result.counts == {"hello": 5, "pause": 5, "again": 5, "end": 5}
    sends = journey_test.sends("nudge")
    assert sorted(sends) == sorted([(f"u{i}", s, None) for i in range(5) for s in ("hello", "again")])
    box = journey_test.outbox("nudge")
    assert {(m["address"], m["subject"]) for m in box} == {(f"u{i}@example.com", f"Hi u{i}") for i in range(5)}
    assert {m["status"] for m in journey_test.messages("nudge")} == {"sent"}
    runs = journey_test.runs("nudge")
    assert {r.status for r in runs.values()} == {"completed"}
    assert {s.get("outcome") for r in runs.values() for s in r.steps if s["step"] in ("hello", "again")} == {"sent"}
    assert [s["step"] for s in runs["u0"].steps] == ["hello", "pause", "again", "end"]


CART = doc("""
    id: cart
    entry: {event: cart_updated}
    settings:
      entry: {max_entries: unlimited}
      exit: {event: unsubscribed}
    steps:
      - id: wait-buy
        wait_for: {event: purchased, correlate: cart_id, timeout: 4h, on_event: thanks, on_timeout: remind}
      - {id: remind, send: {channel: EMAIL, template: t}, next: end}
      - {id: thanks, send: {channel: EMAIL, template: t}, next: end}
    """)


async def test_wait_for_moves_each_customer_on_their_event_and_the_rest_at_timeout(journey_test):
    await journey_test.put(CART)
    a, b, c, d = (journey_test.customer(u) for u in "abcd")
    entry = {"name": "cart_updated", "attributes": {"cart_id": "c1"}}
    handle = await journey_test.start("cart", [a, b, c, d], entry=entry, poll_seconds=60)
    await journey_test.sleep(3600)
    journey_test.event("a", "purchased", {"cart_id": "c1"})  # matches
    journey_test.event("b", "purchased", {"cart_id": "other"})  # another cart: no
    journey_test.event("d", "unsubscribed")  # exit criterion, mid-wait
    await journey_test.sleep(120)
    assert ("a", "thanks", None) in journey_test.sends("cart")  # moved on before the timeout
    await handle.result()
    assert sorted(journey_test.sends("cart")) == [("a", "thanks", None), ("b", "remind", None), ("c", "remind", None)]
    runs = journey_test.runs("cart")
    assert runs["d"].status == "exited" and runs["d"].exit_reason == "event unsubscribed"


SPLITS = doc("""
    id: splits
    entry: {event: e}
    settings: {entry: {max_entries: unlimited}}
    steps:
      - id: ctl
        holdout: {percent: 20}
      - id: ab
        random_split:
          branches:
            - {weight: 50, variant: A, next: rich}
            - {weight: 50, variant: B, next: rich}
      - id: rich
        split:
          branches:
            - {when: {">": [{"var": "customer.metrics.spend"}, 100]}, next: vip}
            - {segment: beta, next: beta}
          else: plain
      - {id: vip, send: {channel: EMAIL, template: t}, next: end}
      - {id: beta, send: {channel: EMAIL, template: t}, next: end}
      - {id: plain, send: {channel: EMAIL, template: t}, next: end}
    """)


async def test_splits_holdout_and_ab_match_runs_of_their_own(journey_test):
    from tidings.engine.journeys.runtime.contracts import bucket

    await journey_test.put(SPLITS)
    pks = {f"u{i}": journey_test.customer(f"u{i}", metrics={"spend": 50 + 10 * i}) for i in range(40)}
    journey_test.segment("beta", [pks["u1"], pks["u2"], pks["u3"]])
    await journey_test.run("splits", list(pks.values()))
    together = sorted(journey_test.sends("splits"))
    runs = journey_test.runs("splits")
    held = {u for u, r in runs.items() if r.status == "held_out"}
    assert held == {u for u, pk in pks.items() if bucket("splits", pk, "ctl") < 20}
    assert 0 < len(held) < 20
    for u, r in runs.items():
        if u in held:
            continue
        assert r.variant == ("A" if bucket("splits", pks[u], "ab") < 50 else "B")
        spend = 50 + 10 * int(u[1:])
        want = "vip" if spend > 100 else "beta" if u in {"u1", "u2", "u3"} else "plain"
        assert (u, want, r.variant) in together
    # each customer alone takes the same path
    for u in pks:
        before = len(journey_test.sends("splits"))
        await journey_test.run("splits", [pks[u]])
        alone = journey_test.sends("splits")[before:]
        assert alone == [x for x in together if x[0] == u]


QUIET = doc("""
    id: quiet
    entry: {event: e}
    settings:
      quiet_hours: {start: "21:00", end: "08:00"}
      frequency_cap: {messages: 1, per: 1d}
    steps:
      - {id: first, wait: {until_time: "23:00"}}
      - {id: one, send: {channel: EMAIL, template: t}}
      - {id: two, send: {channel: EMAIL, template: t}}
    """)


async def test_quiet_hours_hold_until_morning_in_customer_zone_and_frequency_cap(journey_test):
    await journey_test.put(QUIET)
    paris = journey_test.customer("paris", timezone="Europe/Paris")
    tokyo = journey_test.customer("tokyo", timezone="Asia/Tokyo")
    handle = await journey_test.start("quiet", [paris, tokyo])
    await handle.result()
    # each woke at 23:00 local, was held to 08:00 local, got `one`; `two` is over the cap
    assert sorted(journey_test.sends("quiet")) == [("paris", "one", None), ("tokyo", "one", None)]
    for user, _zone in (("paris", "Europe/Paris"), ("tokyo", "Asia/Tokyo")):
        steps = journey_test.runs("quiet")[user].steps
        outcomes = {s["step"]: s.get("outcome") for s in steps}
        assert outcomes["one"] == "sent" and outcomes["two"] == "frequency_cap"
    # when (in workflow time) each customer's `one` was sent: the send calls of the history
    from temporalio.api.enums.v1 import EventType

    from tidings.engine.journeys.runtime.contracts import StepCall
    from tidings.engine.platform.temporal import DATA_CONVERTER

    sent_at = {}
    for e in (await handle.fetch_history()).events:
        attrs = e.activity_task_scheduled_event_attributes
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and attrs.activity_type.name == "journey.send":
            [call] = await DATA_CONVERTER.decode(attrs.input.payloads, [StepCall])
            for m in call.members:
                sent_at[m.user_pk] = call.now  # the last call for a customer is the one that sent
    assert datetime.fromtimestamp(sent_at[paris] / 1000, ZoneInfo("Europe/Paris")).hour == 8
    assert datetime.fromtimestamp(sent_at[tokyo] / 1000, ZoneInfo("Asia/Tokyo")).hour == 8


LOOP = doc("""
    id: loop
    entry: {event: e}
    settings: {entry: {max_entries: unlimited}}
    steps:
      - {id: ping, send: {channel: EMAIL, template: t}}
      - id: check
        wait_for: {event: stop, timeout: 1h, on_event: end, on_timeout: ping}
    """)


async def test_long_loop_continues_as_new_and_keeps_exactly_once(journey_test):
    await journey_test.put(LOOP)
    pks = [journey_test.customer(u) for u in ("x", "y")]
    handle = await journey_test.start("loop", pks, history_limit=60, poll_seconds=1200)
    await journey_test.sleep(10 * 3600 + 60)
    journey_test.event("x", "stop")
    journey_test.event("y", "stop")
    await handle.result()
    sends = journey_test.sends("loop")
    assert sends.count(("x", "ping", None)) == sends.count(("y", "ping", None)) >= 10
    desc = await handle.describe()
    assert desc.run_id != handle.first_execution_run_id  # it continued as new at least once


GOAL = doc("""
    id: goal
    entry: {event: e}
    settings: {goal: {event: purchased, within: 7d}}
    steps:
      - {id: hi, send: {channel: EMAIL, template: t}}
      - {id: later, wait: 1d}
    """)


async def test_goal_event_records_conversion(journey_test):
    await journey_test.put(GOAL)
    from tidings.engine.journeys import store
    from sqlalchemy import text

    a, b = journey_test.customer("a"), journey_test.customer("b")
    # triggers are written at activation; here the journey is only put, so write them as activate would
    with journey_test.db.begin() as conn:
        store._set_triggers(conn, journey_test.workspace.id, store.get_ir(journey_test.db, journey_test.workspace, "goal"), entries=False)
    handle = await journey_test.start("goal", [a, b])
    await journey_test.sleep(60)
    journey_test.event("a", "purchased")
    await handle.result()
    runs = journey_test.runs("goal")
    assert runs["a"].converted_at is not None and runs["b"].converted_at is None
    with journey_test.db.connect() as conn:
        n = conn.execute(text("select count(*) from event where name = '_journey.converted'")).scalar()
    assert n == 1


SMS_AND_OPT_OUT = doc("""
    id: sms
    entry: {event: e}
    steps:
      - {id: text, send: {channel: SMS, template: s}}
    """)


async def test_sms_step_respects_endpoints_and_opt_outs(journey_test):
    journey_test.template("s", channel="SMS", body="Code {{ data.code | default('X') }} for {{ user.user_id }}")
    await journey_test.put(SMS_AND_OPT_OUT)
    pks = [journey_test.customer("has-phone", phone="+15550001"),
           journey_test.customer("opted-out", phone="+15550002", opt_out=True),
           journey_test.customer("no-phone")]
    await journey_test.run("sms", pks)
    [m] = journey_test.outbox("sms")
    assert (m["user_id"], m["address"], m["channel_type"], m["body"]) == ("has-phone", "+15550001", "SMS", "Code X for has-phone")
    outcomes = {u: {s["step"]: s.get("outcome") for s in r.steps}["text"] for u, r in journey_test.runs("sms").items()}
    assert outcomes == {"has-phone": "sent", "opted-out": "opted_out", "no-phone": "no_endpoint"}


BY_ENDPOINT = doc("""
    id: by-endpoint
    entry: {event: e}
    steps:
      - id: reachable-by-text
        split:
          branches:
            - when: {"some": [{"var": "customer.endpoints"},
                              {"and": [{"==": [{"var": "channel"}, "SMS"]}, {"!": {"var": "opt_out"}}]}]}
              next: text
          else: mail
      - {id: text, send: {channel: SMS, template: s}, next: end}
      - {id: mail, send: {channel: EMAIL, template: t}, next: end}
    """)


async def test_split_rules_see_the_customers_endpoints(journey_test):
    """The `customer` of a split rule is the segments' customer document, endpoints included."""
    journey_test.template("s", channel="SMS", body="Hi {{ user.user_id }}")
    await journey_test.put(BY_ENDPOINT)
    pks = [journey_test.customer("phone", phone="+15550011"),
           journey_test.customer("phone-opted-out", phone="+15550012", opt_out=True),
           journey_test.customer("mail-only")]
    await journey_test.run("by-endpoint", pks)
    assert sorted((u, step) for u, step, _ in journey_test.sends("by-endpoint")) == [
        ("mail-only", "mail"), ("phone", "text")]  # the opted-out one: its EMAIL endpoint is opted out too
    steps = {u: [s["step"] for s in r.steps] for u, r in journey_test.runs("by-endpoint").items()}
    assert steps == {"phone": ["reachable-by-text", "text", "end"],
                     "phone-opted-out": ["reachable-by-text", "mail", "end"],
                     "mail-only": ["reachable-by-text", "mail", "end"]}


async def test_missing_template_is_render_failed_and_nothing_is_sent(journey_test):
    await journey_test.put(SMS_AND_OPT_OUT.replace("template: s", "template: nope"))
    await journey_test.run("sms", [journey_test.customer("a", phone="+15550003")])
    assert journey_test.sends("sms") == []
    assert [s.get("outcome") for s in journey_test.runs("sms")["a"].steps if s["step"] == "text"] == ["render_failed"]


async def test_load_the_shipped_journeys_folder_and_run_welcome(journey_test):
    """What a user does with their own repository: load journeys/ (templates, segments, journeys)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "journeys"
    kinds = {(c.kind, c.id) for c in journey_test.load(folder)}
    assert ("Template", "welcome-email") in kinds and ("Journey", "welcome") in kinds
    ann = journey_test.customer("ann", attributes={"plan": "trial", "first_name": "Ann"}, metrics={"sessions": 1},
                                timezone="UTC")
    await journey_test.run("welcome", [ann], entry={"name": "signed_up", "attributes": {"plan": "trial"}})
    box = journey_test.outbox("welcome")
    assert [(m["user_id"], m["step_id"]) for m in box] == [("ann", "hello"), ("ann", "reminder")]
    assert box[0]["subject"] == "Welcome to Example, Ann!" and "https://example.com/start" in box[0]["text"]


BOUNCE_SPLIT = textwrap.dedent("""\
    apiVersion: tidings/v1
    kind: Journey
    id: bounce-check
    entry: {event: signed_up}
    steps:
      - {id: hello, send: {channel: EMAIL, template: t}}
      - {id: later, wait: 1h}
      - id: route
        split:
          branches:
            - {message_event: {step: hello, type: bounced}, next: by-sms}
          else: thanks
      - {id: by-sms, send: {channel: EMAIL, template: t, data: {x: bounced}}, next: end}
      - {id: thanks, send: {channel: EMAIL, template: t, data: {x: fine}}}
""")


async def test_split_on_a_bounce_reported_by_provider_feedback(journey_test):
    """A hard bounce recorded the way provider feedback records it routes that customer, and only them."""
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.messaging.ledger import Occurrence, find_messages, record_occurrences

    await journey_test.put(BOUNCE_SPLIT)
    ann, bob = journey_test.customer("ann"), journey_test.customer("bob")
    handle = await journey_test.start("bounce-check", [ann, bob])
    await journey_test.sleep(60)  # hello is out, the cohort waits an hour
    [ann_message] = [m["message_id"] for m in journey_test.messages("bounce-check") if m["user_id"] == "ann"]
    with journey_test.db.begin() as conn:
        refs, _ = find_messages(conn, journey_test.workspace.id, message_ids=[ann_message])
        record_occurrences(conn, journey_test.workspace.id, [(refs[ann_message], Occurrence(type="hard_bounce", ts=now_ms()))])
    await handle.result()
    later = {(u, step) for u, step, _ in journey_test.sends("bounce-check") if step != "hello"}
    assert later == {("ann", "by-sms"), ("bob", "thanks")}


def _send_times(history) -> dict[int, int]:
    """user_pk -> the workflow time (epoch ms) of the last `journey.send` call for them: the one that sent."""
    from temporalio.api.enums.v1 import EventType

    from tidings.engine.journeys.runtime.contracts import StepCall
    from tidings.engine.platform.temporal import DATA_CONVERTER

    async def decode():
        out = {}
        for e in history.events:
            attrs = e.activity_task_scheduled_event_attributes
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and attrs.activity_type.name == "journey.send":
                [call] = await DATA_CONVERTER.decode(attrs.input.payloads, [StepCall])
                for m in call.members:
                    out[m.user_pk] = call.now
        return out
    return decode()


async def test_sending_hours_hold_a_send_to_the_next_open_minute_after_closed_days(journey_test):
    # open on Mondays 09:30-10:00 only, and closed all of next Monday (in each customer's zone): the mail
    # goes out the Monday after, at 09:30 local
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    from datetime import timedelta
    next_monday = today + timedelta(days=(7 - today.weekday()) % 7 or 7)
    await journey_test.put(doc(f"""
        id: hours
        entry: {{event: e}}
        settings:
          sending_hours:
            open:
              EMAIL: {{monday: ["09:30-10:00"]}}
            closed:
              EMAIL: [{{name: Closed Monday, start: "{next_monday}T00:00", end: "{next_monday + timedelta(days=1)}T00:00"}}]
        steps:
          - {{id: one, send: {{channel: EMAIL, template: t}}}}
        """))
    paris = journey_test.customer("paris", timezone="Europe/Paris")
    tokyo = journey_test.customer("tokyo", timezone="Asia/Tokyo")
    handle = await journey_test.start("hours", [paris, tokyo])
    await handle.result()
    assert sorted(journey_test.sends("hours")) == [("paris", "one", None), ("tokyo", "one", None)]
    sent_at = await _send_times(await handle.fetch_history())
    for pk, zone in ((paris, "Europe/Paris"), (tokyo, "Asia/Tokyo")):
        local = datetime.fromtimestamp(sent_at[pk] / 1000, ZoneInfo(zone))
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 30), local
        assert local.date() > next_monday, local  # not on the closed Monday
    assert {s.get("outcome") for s in journey_test.runs("hours")["paris"].steps if s["step"] == "one"} == {"sent"}
