"""Evaluating segments: compiled rules cached per workspace, the Python evaluator over customer
documents, full evaluation in SQL (with Python for the rows SQL leaves unsure), and writing the
membership changes with their `_segment.enter` / `_segment.exit` events."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import datalogic_py
import msgspec
from sqlalchemy import Connection, and_, delete, func, insert, select, text

from engine.batching import chunks
from engine.clock import now_ms
from engine.models import users
from engine.schemas import EventIn
from engine.segment_models import segment_members, segments
from engine.segments import rules
from engine.segments.documents import documents
from engine.segments.sql import Ctx, full_query

ENGINE = rules.ENGINE
BATCH = 2000


@dataclass
class Compiled:
    id: str
    kind: str
    logic: Any
    facts: dict[str, dict[str, Any]]
    refs: set[str]
    clock: bool
    events: set[str]
    any_event: bool
    rule: datalogic_py.Rule = field(repr=False)


def compile_segment(seg_id: str, kind: str, rule: Any) -> Compiled:
    """A stored segment as an evaluable rule (stored rules were validated when saved)."""
    if kind == "static":
        ex = rules.expand(rule) if rule is not None else rules.Expanded(logic=None)
        logic = rules.static_logic(seg_id, ex.logic)
    else:
        ex = rules.expand(rule)
        logic = ex.logic
    return Compiled(seg_id, kind, logic, ex.facts, set(ex.refs), ex.clock, ex.events, ex.any_event,
                    ENGINE.compile(logic))


def topological(segs: list[Compiled]) -> list[Compiled]:
    by_id = {s.id: s for s in segs}
    out: list[Compiled] = []
    state: dict[str, int] = {}

    def visit(s: Compiled) -> None:
        if state.get(s.id) == 2:
            return
        state[s.id] = 1
        for r in sorted(s.refs):
            if r in by_id and state.get(r) != 1:
                visit(by_id[r])
        state[s.id] = 2
        out.append(s)

    for s in sorted(segs, key=lambda s: s.id):
        visit(s)
    return out


_cache: dict[int, tuple[Any, list[Compiled]]] = {}
_lock = threading.Lock()


def workspace_segments(conn: Connection, workspace_id: int) -> list[Compiled]:
    """Every segment of the workspace compiled, dependencies first; cached until a segment changes."""
    stamp = tuple(conn.execute(
        select(func.count(), func.max(segments.c.updated_at), func.sum(segments.c.version))
        .where(segments.c.workspace_id == workspace_id)).one())
    hit = _cache.get(workspace_id)
    if hit and hit[0] == stamp:
        return hit[1]
    rows = conn.execute(select(segments.c.id, segments.c.kind, segments.c.rule)
                        .where(segments.c.workspace_id == workspace_id)).all()
    compiled = topological([compile_segment(r.id, r.kind, r.rule) for r in rows])
    with _lock:
        _cache[workspace_id] = (stamp, compiled)
    return compiled


def with_dependents(all_segs: list[Compiled], chosen: set[str]) -> list[Compiled]:
    """The chosen segments and every segment whose rule reaches them through in_segment, in order."""
    wanted = set(chosen)
    grew = True
    while grew:
        grew = False
        for s in all_segs:
            if s.id not in wanted and s.refs & wanted:
                wanted.add(s.id)
                grew = True
    return [s for s in all_segs if s.id in wanted]


def is_truthy_json(result: Any) -> bool:
    if isinstance(result, datalogic_py.BatchItemError):
        return False
    return ENGINE.truthy(result)


def python_member(seg: Compiled, doc: dict[str, Any]) -> bool:
    """The reference evaluator: datalogic on the customer document; a rule that raises is a no."""
    try:
        result = seg.rule.evaluate(doc)
    except datalogic_py.DataLogicError:
        return False
    if isinstance(result, bool):
        return result
    return ENGINE.truthy(msgspec.json.encode(result).decode())


def evaluate_docs(segs: list[Compiled], docs: dict[int, dict[str, Any]]) -> dict[str, set[int]]:
    """Members among these users for each segment, in dependency order (in_segment sees earlier results)."""
    result: dict[str, set[int]] = {}
    for seg in segs:
        members = set()
        for pk, doc in docs.items():
            if python_member(seg, doc):
                members.add(pk)
        for pk, doc in docs.items():
            inside = seg.id in doc["segments"]
            if pk in members and not inside:
                doc["segments"] = doc["segments"] + [seg.id]
            elif pk not in members and inside:
                doc["segments"] = [s for s in doc["segments"] if s != seg.id]
        result[seg.id] = members
    return result


def union_facts(segs: Iterable[Compiled]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in segs:
        out.update(s.facts)
    return out


def apply_changes(conn: Connection, workspace_id: int, segment_id: str, entered: Iterable[int],
                  exited: Iterable[int], now: int, record_events: bool = True) -> tuple[int, int]:
    """Write membership changes and their events inside the caller's transaction."""
    from engine import changes
    from engine.events import record

    entered, exited = sorted(entered), sorted(exited)
    for part in chunks(entered, 5000):
        conn.execute(insert(segment_members), [{"workspace_id": workspace_id, "segment_id": segment_id,
                                                "user_pk": pk, "since": now} for pk in part])
    for part in chunks(exited):
        conn.execute(delete(segment_members).where(
            segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id,
            segment_members.c.user_pk.in_(part)))
    if record_events and (entered or exited):
        changed = [(pk, "_segment.enter") for pk in entered] + [(pk, "_segment.exit") for pk in exited]
        for part in chunks(changed, 5000):
            ids = dict(conn.execute(select(users.c.id, users.c.user_id).where(
                users.c.id.in_([pk for pk, _ in part]))).all())
            batch = [EventIn(name=name, user_id=ids[pk], attributes={"segment_id": segment_id})
                     for pk, name in part if pk in ids]
            if batch:
                _, stored = record(conn, workspace_id, batch)
                # Through the shared seam, so segment-entry journeys and `left_segment` exits hear of them.
                changes.events_recorded(conn, workspace_id, stored)
    return len(entered), len(exited)


def update_for_users(conn: Connection, workspace_id: int, segs: list[Compiled], user_pks: list[int],
                     loaded=None, now: int | None = None) -> None:
    """Re-evaluate these segments for these users (the per-write path) and write the differences."""
    if not segs or not user_pks:
        return
    now = now or now_ms()
    docs = documents(conn, workspace_id, user_pks, union_facts(segs), now, loaded)
    before = {pk: set(d["segments"]) for pk, d in docs.items()}
    result = evaluate_docs(segs, docs)
    for seg in segs:
        members = result[seg.id]
        entered = [pk for pk in docs if pk in members and seg.id not in before[pk]]
        exited = [pk for pk in docs if pk not in members and seg.id in before[pk]]
        apply_changes(conn, workspace_id, seg.id, entered, exited, now)


def full_members(conn: Connection, workspace_id: int, seg: Compiled, now: int) -> set[int]:
    """Every member of the segment: SQL decides what it can, Python the unsure rows in batches."""
    ctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace_id, now=now)
    query = full_query(seg.logic, seg.facts, ctx)
    members: set[int] = set()
    unsure: list[int] = []
    for pk, o in conn.execute(text(query), ctx.params):
        if o == 1:
            members.add(pk)
        else:
            unsure.append(pk)
    for part in chunks(unsure, BATCH):
        docs = documents(conn, workspace_id, list(part), seg.facts, now)
        members.update(pk for pk, doc in docs.items() if python_member(seg, doc))
    return members


def evaluate_full(conn: Connection, workspace_id: int, seg: Compiled, now: int | None = None,
                  record_events: bool = True) -> tuple[int, int]:
    """Full evaluation of one segment; returns (entered, exited)."""
    now = now or now_ms()
    members = full_members(conn, workspace_id, seg, now)
    current = set(conn.execute(select(segment_members.c.user_pk).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == seg.id)).scalars())
    return apply_changes(conn, workspace_id, seg.id, members - current, current - members, now, record_events)


def evaluate_many_full(conn: Connection, workspace_id: int, ids: set[str], now: int | None = None,
                       record_events: bool = True) -> dict[str, tuple[int, int]]:
    """Full evaluation of these segments and their dependents, dependencies first."""
    segs = with_dependents(workspace_segments(conn, workspace_id), ids)
    return {s.id: evaluate_full(conn, workspace_id, s, now, record_events=record_events or s.id not in ids)
            for s in segs}


def member_count(conn: Connection, workspace_id: int, segment_id: str) -> int:
    return conn.execute(select(func.count()).select_from(segment_members).where(and_(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id))).scalar()
