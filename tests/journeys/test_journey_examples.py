"""The journeys shipped in journeys/ compile against the segments and templates shipped beside them."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tidings.engine.journeys import JourneyCompileError, StaticCatalog, compile_journey, compile_path, load_resources
from tidings.engine.journeys import ir
from tidings.engine.messaging.ledger import CHANNELS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "journeys"
JOURNEY_FILES = sorted(p for p in EXAMPLES.glob("*.y*ml") if "kind: Journey" in p.read_text())


@pytest.fixture(scope="module")
def catalog() -> StaticCatalog:
    return StaticCatalog.from_resources(load_resources(EXAMPLES), channels=["EMAIL", "SMS"])


@pytest.fixture(scope="module")
def journeys(catalog) -> dict[str, ir.JourneyIR]:
    return {j.id: j for j in compile_path(EXAMPLES, catalog)}


@pytest.mark.parametrize("path", JOURNEY_FILES, ids=lambda p: p.name)
def test_every_example_journey_compiles_against_the_example_catalog(path, catalog):
    [journey] = compile_path(path, catalog)
    assert journey.id == path.stem
    assert journey.source_hash == hashlib.sha256(path.read_text().encode()).hexdigest()


def test_load_resources_finds_segments_and_templates_with_their_lines():
    resources = load_resources(EXAMPLES)
    by_kind = {(r.kind, r.id): r for r in resources}
    assert {i for k, i in by_kind if k == "Segment"} == {"all-users", "trial-users"}
    assert {i for k, i in by_kind if k == "Template"} == {
        "welcome-email", "digest-email", "cart-reminder-a", "cart-reminder-b", "cart-reminder-sms", "launch-email"}
    sms = by_kind[("Template", "cart-reminder-sms")]
    assert sms.doc["channel"] == "SMS" and "fr" in sms.doc["locales"]
    assert sms.path.endswith("templates.yaml") and sms.line > 1
    assert type(sms.doc) is dict  # plain data for the CLI, no position wrappers


def test_welcome_journey_shape(journeys):
    j = journeys["welcome"]
    assert j.entry == ir.EventEntry(event="signed_up", filter={"==": [{"var": "event.plan"}, "trial"]},
                                    names=["signed_up"])
    hello = j.nodes[j.start]
    assert (hello.channel, hello.template, hello.next) == ("EMAIL", "welcome-email", "wait-a-day")
    assert j.nodes["wait-a-day"].seconds == 86400
    split = j.nodes["did-they-click"]
    assert split.branches[0] == ir.MessageEventBranch(step="hello", type="clicked", next="engaged",
                                                      names=[f"_{c}.click" for c in CHANNELS])
    assert split.else_next == "reminder"
    # `unsubscribed` is resolved once, by the compiler: the customer's own event and every channel's
    # unsubscribe (a one-click unsubscribe records `_email.unsubscribe`), as `message_event` types read it
    unsubscribed = ["unsubscribed", *(f"_{c}.unsubscribe" for c in CHANNELS)]
    assert j.settings.exit == [ir.EventExit(event="unsubscribed", names=unsubscribed),
                               ir.SegmentExit(segment="trial-users")]


def test_weekly_digest_is_a_recurring_broadcast(journeys):
    j = journeys["weekly-digest"]
    assert j.entry == ir.BroadcastEntry(segment="all-users", cron="0 9 * * MON", timezone="customer")
    assert j.settings.entry == ir.EntryLimits(max_entries=None, min_interval_seconds=6 * 86400)


def test_cart_abandon_uses_every_feature(journeys):
    j = journeys["cart-abandon"]
    wait = j.nodes["wait-for-purchase"]
    assert (wait.event, wait.correlate, wait.timeout_seconds, wait.on_event, wait.on_timeout) == (
        "purchased", "cart_id", 4 * 3600, "bought", "ab")
    assert [(b.variant, b.weight, b.next) for b in j.nodes["ab"].branches] == [
        ("A", 50, "reminder-a"), ("B", 50, "reminder-b")]
    assert j.nodes["control"] == ir.HoldoutNode(id="control", line=19, percent=10, next="wait-for-purchase")
    assert j.settings.goal == ir.Goal(event="purchased", within_seconds=7 * 86400, names=["purchased"])
    assert wait.names == ["purchased"]
    assert j.settings.quiet_hours == ir.QuietHours(start="21:00", end="08:00", action="hold")
    assert j.settings.frequency_cap == ir.FrequencyCap(messages=3, per_seconds=86400)
    assert j.nodes["sms"].channel == "SMS"


def test_missing_template_in_catalog_is_reported_with_the_file(tmp_path):
    path = tmp_path / "welcome.yaml"
    path.write_text((EXAMPLES / "welcome.yaml").read_text())
    catalog = StaticCatalog(segments=["trial-users"], templates=[])
    with pytest.raises(JourneyCompileError) as info:
        compile_path(tmp_path, catalog)
    assert f"{path}:22:17: unknown template `welcome-email`" in str(info.value).splitlines()


def test_compile_path_reports_errors_of_all_files_and_duplicate_ids(tmp_path):
    (tmp_path / "a.yaml").write_text((EXAMPLES / "weekly-digest.yaml").read_text())
    (tmp_path / "b.yml").write_text((EXAMPLES / "weekly-digest.yaml").read_text())
    (tmp_path / "c.yaml").write_text("kind: Journey\nid: [\n")
    with pytest.raises(JourneyCompileError) as info:
        compile_path(tmp_path)
    paths = {e.path for e in info.value.errors}
    assert paths == {str(tmp_path / "b.yml"), str(tmp_path / "c.yaml")}
    assert any("journey id `weekly-digest` is already used in" in e.message and e.line == 4 for e in info.value.errors)


def test_multi_document_file_compiles_only_journeys():
    text = (EXAMPLES / "segments.yaml").read_text() + "\n---\n" + (EXAMPLES / "weekly-digest.yaml").read_text()
    journey = compile_journey(text, path="mixed.yaml")
    assert journey.id == "weekly-digest"
    # a document's own text is hashed when the file holds several
    assert journey.source_hash != hashlib.sha256(text.encode()).hexdigest()


def test_load_resources_rejects_a_document_without_kind(tmp_path):
    (tmp_path / "x.yaml").write_text("id: a\n---\nkind: Segment\nid: b\n")
    with pytest.raises(JourneyCompileError) as info:
        load_resources(tmp_path)
    assert str(info.value) == f"{tmp_path / 'x.yaml'}:1:1: document needs a string `kind`"


def test_compile_path_refuses_a_missing_folder_and_reports_non_utf8_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        compile_path(tmp_path / "nope")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(JourneyCompileError) as info:
        compile_path(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'latin1.yaml'}:1:1: not UTF-8 text")


def test_outcome_names_as_events_mean_the_applications_own_events(catalog):
    """`delivered`, `sent`, `opened` are common names of an application's events ("order delivered", "app
    opened"): as an `event:` they match that event only, never the journey's own mail (an `entry: {event:
    sent}` re-entering on its own send would loop). Message events are read with `message_event`."""
    from tidings.engine.journeys import compile_journey

    j = compile_journey("""apiVersion: tidings/v1
kind: Journey
id: orders
entry: {event: sent}
settings:
  exit: [{event: delivered}]
  goal: {event: opened, within: 1d}
steps:
  - {id: hello, send: {channel: EMAIL, template: welcome-email}}
""", catalog=catalog)
    assert j.entry.names == ["sent"]
    assert j.settings.exit[0].names == ["delivered"]
    assert j.settings.goal.names == ["opened"]
