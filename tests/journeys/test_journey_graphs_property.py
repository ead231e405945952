"""Random journeys that obey the rules compile to exactly the graph they describe, and round-trip."""
from __future__ import annotations

import msgspec
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.engine.journeys import JourneyCompileError, JourneyIR, compile_journey

KINDS = ["send", "wait", "wait_for", "split", "random_split", "holdout"]
PAUSING = {"wait", "wait_for"}


@st.composite
def journeys(draw):
    """A YAML dict plus the edges it should compile to.

    Validity by construction: every step but the last also leads to the step after it (so all are
    reachable), and backward edges only target wait/wait_for steps (so every loop pauses)."""
    n = draw(st.integers(1, 8))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n - 1)] + [draw(st.sampled_from(KINDS + ["exit"]))]
    ids = [f"s{i}" for i in range(n)]

    def target(i: int) -> str:
        choices = ["end"] + ids[i + 1:] + [ids[j] for j in range(i + 1) if kinds[j] in PAUSING]
        return draw(st.sampled_from(choices))

    steps, expected = [], {}
    for i, (sid, kind) in enumerate(zip(ids, kinds)):
        chain = ids[i + 1] if i + 1 < n else target(i)
        step: dict = {"id": sid}
        if kind == "send":
            step["send"] = {"channel": "EMAIL", "template": "t"}
            natural = ids[i + 1] if i + 1 < n else "end"
            if chain != natural or draw(st.booleans()):  # `next` may be left out when it is the fall-through
                step["next"] = chain
            edges = [chain]
        elif kind == "wait":
            step["wait"] = draw(st.sampled_from(["30s", "15m", "2h", "7d", "2w", "1d12h", "365d"]))
            step["next"] = chain
            edges = [chain]
        elif kind == "wait_for":
            other = target(i)
            step["wait_for"] = {"event": "e", "timeout": "1d", "on_event": other, "on_timeout": chain}
            edges = [other, chain]
        elif kind == "split":
            sends = [ids[j] for j in range(i) if kinds[j] == "send"]
            branches, edges = [], []
            for _ in range(draw(st.integers(1, 3))):
                to = target(i)
                if sends and draw(st.booleans()):
                    cond = {"message_event": {"step": draw(st.sampled_from(sends)), "type": "clicked"}}
                else:
                    cond = draw(st.sampled_from([{"segment": "vip"}, {"when": {">": [{"var": "customer.n"}, 1]}}]))
                branches.append({**cond, "next": to})
                edges.append(to)
            step["split"] = {"branches": branches, "else": chain}
            edges.append(chain)
        elif kind == "random_split":
            k = draw(st.integers(2, 4))
            weights = [100 // k] * (k - 1) + [100 - 100 // k * (k - 1)]
            targets = [chain] + [target(i) for _ in range(k - 1)]
            step["random_split"] = {"branches": [{"weight": w, "next": t} for w, t in zip(weights, targets)]}
            edges = targets
        elif kind == "holdout":
            step["holdout"] = {"percent": draw(st.sampled_from([1, 10, 50, 99.5]))}
            step["next"] = chain
            edges = [chain]
        else:
            step["exit"] = {}
            edges = []
        steps.append(step)
        expected[sid] = list(dict.fromkeys(edges))
    doc = {"apiVersion": "tidings/v1", "kind": "Journey", "id": "random", "entry": {"event": {"name": "go"}}, "steps": steps}
    return doc, expected


@settings(max_examples=200, deadline=None)
@given(journeys())
def test_random_valid_graphs_compile_to_their_edges_and_roundtrip(case):
    doc, expected = case
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        journey = compile_journey(text, path="random.yaml")
    except JourneyCompileError as exc:  # pragma: no cover - shows the YAML when it fails
        raise AssertionError(f"{exc}\n---\n{text}") from None
    assert {k: journey.successors(k) for k in expected} == expected
    assert set(journey.nodes) - set(expected) <= {"end"}
    assert msgspec.json.decode(msgspec.json.encode(journey), type=JourneyIR) == journey
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(journey), type=JourneyIR) == journey


@settings(max_examples=100, deadline=None)
@given(journeys(), st.data())
def test_a_cycle_without_a_wait_is_always_reported(case, data):
    doc, _ = case
    steps = doc["steps"]
    i = data.draw(st.integers(0, len(steps) - 1))
    sid = steps[i]["id"]
    # step i now sends and goes to `back`, which holds out and returns to step i: nothing waits
    steps[i] = {"id": sid, "send": {"channel": "EMAIL", "template": "t"}, "next": "back"}
    steps.append({"id": "back", "holdout": {"percent": 10}, "next": sid})
    try:
        compile_journey(yaml.safe_dump(doc, sort_keys=False), path="loop.yaml")
    except JourneyCompileError as exc:
        assert any(f"steps `{sid}` -> `back` -> `{sid}` form a loop with no `wait` or `wait_for`" in e.message
                   for e in exc.errors), str(exc)
    else:
        raise AssertionError("a loop without a wait compiled")
