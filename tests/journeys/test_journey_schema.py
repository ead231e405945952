"""engine/journeys/language/schema.json (for editors) accepts the shipped examples and rejects what the compiler rejects."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # a test dependency (pyproject.toml): missing, the test errors rather than skips
import pytest
import yaml

from tidings.engine.journeys import JourneyCompileError, compile_journey, load_resources

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "engine" / "journeys" / "language" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
RESOURCES = load_resources(ROOT / "journeys")


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r.kind}:{r.id}")
def test_every_example_document_validates(resource):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(resource.doc)]
    assert errors == []


HEAD = "apiVersion: tidings/v1\nkind: Journey\nid: t\nentry: {event: go}\nsteps:\n"
# Mistakes both the schema (in the editor) and the compiler (in CI) must catch.
BAD = {
    "unknown step key": "- {id: a, wait: 1d, colour: red}\n",
    "two actions": "- {id: a, wait: 1d, exit: {}}\n",
    "no action": "- {id: a}\n",
    "bad duration": "- {id: a, wait: 1 day}\n",
    "bad step id": "- {id: A B, exit: {}}\n",
    "next on split": "- {id: a, split: {branches: [{segment: s, next: end}]}, next: end}\n",
    "branch with two conditions": "- {id: a, split: {branches: [{segment: s, when: true, next: end}]}}\n",
    "holdout 100": "- {id: a, holdout: {percent: 100}}\n",
    "random weight 0": "- {id: a, random_split: {branches: [{weight: 0, next: end}, {weight: 100, next: end}]}}\n",
    "lowercase channel": "- {id: a, send: {channel: email, template: t}}\n",
    "wait_for without timeout": "- {id: a, wait_for: {event: e}}\n",
    "wait until without zone": "- {id: a, wait: {until: '2026-12-01T09:00:00'}}\n",
    "quiet hours 9pm": "- {id: a, exit: {}}\nsettings: {quiet_hours: {start: 9pm, end: '08:00'}}\n",
    "sending hours 9-5": "- {id: a, exit: {}}\nsettings: {sending_hours: {open: {EMAIL: {monday: ['9-5']}}}}\n",
    "sending hours on a fax": "- {id: a, exit: {}}\nsettings: {sending_hours: {open: {FAX: {monday: ['09:00-10:00']}}}}\n",
    "ends_at without zone": "- {id: a, exit: {}}\nsettings: {ends_at: '2026-12-01T09:00:00'}\n",
}


@pytest.mark.parametrize("name", BAD)
def test_schema_and_compiler_reject_the_same_mistakes(name):
    text = HEAD + BAD[name]
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))), f"schema accepted: {name}"
    with pytest.raises(JourneyCompileError):
        compile_journey(text)


BROADCAST = "apiVersion: tidings/v1\nkind: Journey\nid: t\nentry: {broadcast: %s}\nsteps:\n- {id: a, exit: {}}\n"


@pytest.mark.parametrize("broadcast", [
    "{segment: s, at: '2026-12-01T09:00:00Z', timezone: customer}",  # an offset contradicts each customer's zone
    "{segment: s, at: '2026-12-01T09:00:30', timezone: customer}",  # local times are to the minute
    "{segment: s, at: '2026-12-01T09:00:00'}",  # an instant needs its zone
    "{segment: s, every: 1d, timezone: customer}",  # an interval is the same instant for everyone
    "{segment: s, refresh: 1d, timezone: customer}",  # so is a refresh
    "{segment: s, refresh: 1d, every: 1d}",  # one schedule
    "{segment: s, timezone: customer}",
    "{segment: s, on_join: true, at: '2026-12-01T09:00:00Z'}",  # joiners are admitted from the activation on
    "{segment: s, on_join: true, every: 1d}",
    "{segment: s, on_join: yes please}",
])
def test_schema_and_compiler_reject_the_same_broadcast_zone_mistakes(broadcast):
    text = BROADCAST % broadcast
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))), f"schema accepted: {broadcast}"
    with pytest.raises(JourneyCompileError):
        compile_journey(text)


@pytest.mark.parametrize("broadcast", [
    "{segment: s, at: '2026-12-01T09:00', timezone: customer}",
    "{segment: s, cron: '0 9 * * MON', timezone: customer}",
    "{segment: s, at: '2026-12-01T09:00:00+09:00'}",
    "{segment: s, refresh: 1h}",
    "{segment: s, on_join: true}",
    "{segment: s, on_join: true, refresh: 1h}",
    "{segment: s, on_join: false, at: '2026-12-01T09:00:00Z'}",
])
def test_schema_and_compiler_accept_the_same_broadcast_zones(broadcast):
    text = BROADCAST % broadcast
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []
    compile_journey(text)
