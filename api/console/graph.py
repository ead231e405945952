"""A journey's compiled IR drawn as inline SVG: steps as boxes in layers (by distance from the start),
branches as labelled arrows, each box with its counts. No layout library: journeys are small trees and
short chains, and a layered drawing reads top to bottom like their YAML."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from tidings.engine.analytics.journey_report import JourneyReport
from tidings.engine.journeys.ir import JourneyIR

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 74, 40, 70, 20


@dataclass
class Box:
    id: str
    kind: str
    x: int
    y: int
    counts: dict[str, int]


@dataclass
class Arrow:
    x1: int
    y1: int
    x2: int
    y2: int
    label: str
    back: bool  # to a step at the same or an earlier layer (a loop): drawn curved


@dataclass
class Drawing:
    width: int
    height: int
    boxes: list[Box]
    arrows: list[Arrow]


def layers(ir: JourneyIR) -> dict[str, int]:
    """Each step's shortest distance from the start (steps no path reaches go below the rest)."""
    depth = {ir.start: 0}
    queue = deque([ir.start])
    while queue:
        node = queue.popleft()
        for nxt in ir.successors(node):
            if nxt not in depth and nxt in ir.nodes:
                depth[nxt] = depth[node] + 1
                queue.append(nxt)
    bottom = max(depth.values(), default=0) + 1
    return {n: depth.get(n, bottom) for n in ir.nodes}


def draw(ir: JourneyIR, counts: dict[str, dict[str, int]]) -> Drawing:
    depth = layers(ir)
    rows: dict[int, list[str]] = {}
    for node_id in ir.nodes:  # source order within a layer
        rows.setdefault(depth[node_id], []).append(node_id)
    widest = max(len(r) for r in rows.values())
    width = MARGIN * 2 + widest * BOX_W + (widest - 1) * GAP_X
    where: dict[str, tuple[int, int]] = {}
    for level, ids in rows.items():
        span = len(ids) * BOX_W + (len(ids) - 1) * GAP_X
        left = (width - span) // 2
        for i, node_id in enumerate(ids):
            where[node_id] = (left + i * (BOX_W + GAP_X), MARGIN + level * (BOX_H + GAP_Y))
    boxes = [Box(n, str(type(node).__struct_config__.tag or ""), *where[n], counts.get(n, {}))
             for n, node in ir.nodes.items()]
    labels: dict[tuple[str, str], list[str]] = {}  # two branches to one step: one arrow, both labels
    for edge in ir.edges():
        if edge.target in where:
            names = labels.setdefault((edge.source, edge.target), [])
            if edge.label and edge.label != "next" and edge.label not in names:  # "next" says nothing
                names.append(edge.label)
    arrows = []
    for (source, target), names in labels.items():
        (sx, sy), (tx, ty) = where[source], where[target]
        back = depth[target] <= depth[source]
        arrows.append(Arrow(sx + BOX_W // 2, sy + BOX_H, tx + BOX_W // 2, ty if not back else ty + BOX_H // 2,
                            " / ".join(names), back))
    height = MARGIN * 2 + (max(rows) + 1) * (BOX_H + GAP_Y) - GAP_Y
    return Drawing(width, height, boxes, arrows)


def node_counts(report: JourneyReport) -> dict[str, dict[str, int]]:
    """Per step, from the journey's report: entered, waiting now, ended here, and messages sent."""
    return {s.step_id: {"entered": s.entered, "waiting": s.waiting, "ended": s.ended,
                        "sent": s.messages.sent if s.messages else 0} for s in report.steps}


def send_outcomes(report: JourneyReport) -> dict[str, dict[str, int]]:
    """Per send step that has run, how many runs it sent to and why it did not send to the others."""
    return {s.step_id: {**({"sent": s.sent} if s.sent else {}), **s.not_sent} for s in report.steps
            if s.sent or s.not_sent}
