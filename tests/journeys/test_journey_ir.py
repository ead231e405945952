"""The IR survives the trips it makes into Temporal (JSON and msgpack) and draws as a graph."""
from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tidings.engine.journeys import JourneyIR, compile_journey, compile_path, successors

EXAMPLES = Path(__file__).resolve().parents[2] / "journeys"


@pytest.fixture(scope="module")
def examples() -> list[JourneyIR]:
    return compile_path(EXAMPLES)


def test_json_roundtrip_is_lossless(examples):
    for journey in examples:
        assert msgspec.json.decode(msgspec.json.encode(journey), type=JourneyIR) == journey
        assert JourneyIR.from_json(journey.to_json()) == journey


def test_msgpack_roundtrip_is_lossless(examples):
    for journey in examples:
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(journey), type=JourneyIR) == journey


def test_nodes_are_tagged_by_kind_in_json(examples):
    cart = next(j for j in examples if j.id == "cart-abandon")
    data = msgspec.json.decode(cart.to_json())
    assert data["entry"]["kind"] == "event"
    assert {n["kind"] for n in data["nodes"].values()} == {"holdout", "wait_for", "random_split", "send", "exit"}
    assert data["nodes"]["wait-for-purchase"]["on_timeout"] == "ab"


def test_every_edge_targets_a_node(examples):
    for journey in examples:
        for edge in journey.edges():
            assert edge.source in journey.nodes and edge.target in journey.nodes, edge


def test_edges_and_successors_for_drawing():
    journey = compile_journey("""\
apiVersion: tidings/v1
kind: Journey
id: t
entry: {segment_entry: vip}
steps:
  - id: ab
    random_split:
      branches: [{weight: 70, next: w}, {weight: 30, variant: control, next: end}]
  - id: w
    wait_for: {event: bought, timeout: 2d, on_event: end}
""")
    assert journey.edges() == [("ab", "w", "A 70%"), ("ab", "end", "control 30%"),
                               ("w", "end", "event"), ("w", "end", "timeout")]
    assert successors(journey.nodes["w"]) == ["end"]  # one successor, even with two edges to it
    assert journey.successors("ab") == ["w", "end"]
    assert journey.nodes["w"].line == 9


def test_version_is_set_by_the_caller():
    text = (EXAMPLES / "weekly-digest.yaml").read_text()
    assert compile_journey(text).version == 1
    assert compile_journey(text, version=7).version == 7
