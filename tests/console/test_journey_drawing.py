"""The journey drawing for any valid journey (the generator of tests/journeys' property test): every step
drawn once, inside the picture, no two boxes overlapping, one arrow per pair of steps an edge joins,
labelled with its branches; and for the example journeys in journeys/."""
from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings

from tidings.api.console.graph import BOX_H, BOX_W, draw
from tidings.engine.journeys import compile_journey
from tests.journeys.test_journey_graphs_property import journeys

EXAMPLES = Path(__file__).resolve().parents[2] / "journeys"


def check(ir) -> None:
    counts = {n: {"entered": i, "waiting": 0, "ended": 0, "sent": 0} for i, n in enumerate(ir.nodes)}
    d = draw(ir, counts)
    assert sorted(b.id for b in d.boxes) == sorted(ir.nodes)
    for b in d.boxes:
        assert 0 <= b.x and b.x + BOX_W <= d.width and 0 <= b.y and b.y + BOX_H <= d.height
        assert b.counts == counts[b.id]
    for i, a in enumerate(d.boxes):
        for b in d.boxes[i + 1:]:
            assert a.x + BOX_W <= b.x or b.x + BOX_W <= a.x or a.y + BOX_H <= b.y or b.y + BOX_H <= a.y, (a, b)
    pairs = {(e.source, e.target) for e in ir.edges()}
    assert len(d.arrows) == len(pairs)
    branch_labels = {e.label for e in ir.edges() if e.label and e.label != "next"}
    drawn = {part for a in d.arrows for part in a.label.split(" / ") if a.label}
    assert drawn == branch_labels


@settings(max_examples=150, deadline=None)
@given(journeys())
def test_any_valid_journey_is_drawn_whole(case):
    doc, _ = case
    check(compile_journey(yaml.safe_dump(doc, sort_keys=False), path="random.yaml"))


def test_the_example_journeys_are_drawn_whole():
    drawn = 0
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Journey":
                check(compile_journey(yaml.safe_dump(doc, sort_keys=False), path=str(path)))
                drawn += 1
    assert drawn >= 4
