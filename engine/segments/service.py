"""Segment management: create, update (versioned), duplicate, delete, read, members, and the
functions other parts of Tidings (journeys, `tidings apply`) call."""
from __future__ import annotations

import re
import uuid
from typing import Any, Iterator

from msgspec import UNSET, Struct, UnsetType
from sqlalchemy import Connection, Engine, delete, func, insert, literal, or_, select, update

from tidings.engine.platform.batching import chunks
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import reading, rows_where_in, writing
from tidings.engine.platform.errors import Conflict, InvalidInput, NotFound
from tidings.engine.customers.tables import users
from tidings.engine.platform.pagination import check_limit, decode_cursor, encode_cursor
from tidings.engine.segments.tables import (
    journey_segment_refs, segment_members, segment_versions, segments, static_members,
)
from tidings.engine.segments import backfill, rules
from tidings.engine.segments.evaluate import compile_segment, evaluate_many_full
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tags import add_tags, drop_tags

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SegmentIn(Struct, forbid_unknown_fields=True):
    name: str
    rule: Any = None
    id: str | None = None


class SegmentPatch(Struct, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    rule: Any = UNSET


class SegmentOut(Struct):
    id: str
    name: str
    kind: str
    rule: Any
    version: int
    size: int
    created_at: str
    updated_at: str
    # `evaluating` while the typed index of a path the rule reads is being filled (segments/backfill.py):
    # the members are exact meanwhile (a direct evaluation of the users at save, then every write), but a full
    # re-evaluation reads the customers' JSON; `progress` (0..1) is how far the filling is. Then `current`.
    state: str = "current"
    progress: float | None = None


class VersionOut(Struct):
    version: int
    name: str
    rule: Any
    created_at: str


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise InvalidInput("name is 1-255 characters", field="name")
    return name.strip()


def _refs_graph(conn: Connection, workspace_id: int) -> dict[str, set[str]]:
    graph = {}
    for r in conn.execute(select(segments.c.id, segments.c.rule).where(segments.c.workspace_id == workspace_id)):
        graph[r.id] = _collect_refs(r.rule)
    return graph


def _collect_refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_collect_refs(x) for x in node)) if node else set()
    if isinstance(node, dict):
        if len(node) == 1 and "in_segment" in node:
            v = node["in_segment"]
            v = v[0] if isinstance(v, list) and v else v
            return {v} if isinstance(v, str) else set()
        return set().union(*(_collect_refs(v) for v in node.values())) if node else set()
    return set()


def validate_rule(conn: Connection, workspace_id: int, segment_id: str, rule: Any) -> rules.Expanded:
    """Validate a rule for saving under segment_id; refuses unknown segments and cycles."""
    graph = _refs_graph(conn, workspace_id)
    ex = rules.expand(rule, known_segments=set(graph) | {segment_id})
    graph[segment_id] = set(ex.refs)
    seen, stack = set(), list(ex.refs)
    while stack:
        s = stack.pop()
        if s == segment_id:
            raise InvalidInput(f"in_segment makes a cycle back to {segment_id!r}", field="rule",
                               details=[{"pointer": "", "message": "cycle", "code": "cycle"}])
        if s not in seen:
            seen.add(s)
            stack.extend(graph.get(s, ()))
    return ex


def _row(conn: Connection, workspace_id: int, segment_id: str):
    row = conn.execute(select(segments).where(segments.c.workspace_id == workspace_id,
                                              segments.c.id == segment_id)).first()
    if row is None:
        raise NotFound(f"no segment {segment_id!r}", field="id")
    return row


def _state(conn: Connection, row, filling: bool) -> tuple[str, float | None]:
    """(state, progress) of a segment row; `filling`: the workspace has paths being filled."""
    if not filling or row.rule is None and row.kind == "static":
        return "current", None
    done = backfill.progress(conn, row.workspace_id, compile_segment(row.id, row.kind, row.rule).index_paths())
    return ("current", None) if done is None else ("evaluating", done)


def _filling(conn: Connection, workspace_id: int) -> bool:
    return bool(backfill.pending(conn, workspace_id))


def _out(conn: Connection, row) -> SegmentOut:
    size = conn.execute(select(func.count()).select_from(segment_members).where(
        segment_members.c.workspace_id == row.workspace_id, segment_members.c.segment_id == row.id)).scalar()
    state, progress = _state(conn, row, _filling(conn, row.workspace_id))
    return SegmentOut(id=row.id, name=row.name, kind=row.kind, rule=row.rule, version=row.version, size=size,
                      created_at=ms_to_iso(row.created_at), updated_at=ms_to_iso(row.updated_at), state=state,
                      progress=progress)


def check_new_id(conn: Connection, workspace_id: int, seg_id: str) -> None:
    if not _ID.match(seg_id):
        raise InvalidInput("id is 1-100 letters, digits, '_', '.', '-' starting with a letter or digit", field="id")
    if conn.execute(select(segments.c.id).where(segments.c.workspace_id == workspace_id,
                                                segments.c.id == seg_id)).first():
        raise Conflict(f"segment {seg_id!r} exists", field="id")


def create_in(conn: Connection, workspace_id: int, data: SegmentIn, kind: str = "dynamic") -> str:
    name = _check_name(data.name)
    seg_id = data.id or uuid.uuid4().hex[:12]
    check_new_id(conn, workspace_id, seg_id)
    if kind == "dynamic" and data.rule is None:
        raise InvalidInput("a dynamic segment needs a rule", field="rule")
    if data.rule is not None:
        validate_rule(conn, workspace_id, seg_id, data.rule)
    now = now_ms()
    conn.execute(insert(segments).values(workspace_id=workspace_id, id=seg_id, name=name, kind=kind, rule=data.rule,
                                         version=1, created_at=now, updated_at=now))
    conn.execute(insert(segment_versions).values(workspace_id=workspace_id, segment_id=seg_id, version=1, name=name,
                                                 rule=data.rule, created_at=now))
    evaluate_many_full(conn, workspace_id, {seg_id}, now, record_events=False)
    return seg_id


def create_segment(db: Engine, workspace: WorkspaceRef, data: SegmentIn, tags: dict[str, str] | None = None) -> SegmentOut:
    """Create; `tags` (tidings.engine.workspaces.tags) are stored in the same transaction."""
    with writing(db) as conn:
        seg_id = create_in(conn, workspace.id, data)
        if tags:
            add_tags(conn, workspace.id, f"segments/{seg_id}", tags)
        out = _out(conn, _row(conn, workspace.id, seg_id))
    backfill.kick(db, workspace.id)
    return out


def update_in(conn: Connection, workspace_id: int, segment_id: str, patch: SegmentPatch) -> bool:
    row = _row(conn, workspace_id, segment_id)
    name = row.name if patch.name is UNSET else _check_name(patch.name)
    rule = row.rule if patch.rule is UNSET else patch.rule
    if row.kind == "dynamic" and rule is None:
        raise InvalidInput("a dynamic segment needs a rule", field="rule")
    if name == row.name and rule == row.rule:
        return False
    if rule is not None:
        validate_rule(conn, workspace_id, segment_id, rule)
    now = max(now_ms(), row.updated_at + 1)
    version = row.version + 1
    conn.execute(update(segments).where(segments.c.workspace_id == workspace_id, segments.c.id == segment_id)
                 .values(name=name, rule=rule, version=version, updated_at=now))
    conn.execute(insert(segment_versions).values(workspace_id=workspace_id, segment_id=segment_id, version=version,
                                                 name=name, rule=rule, created_at=now))
    if rule != row.rule:
        evaluate_many_full(conn, workspace_id, {segment_id}, now)
    return True


def update_segment(db: Engine, workspace: WorkspaceRef, segment_id: str, patch: SegmentPatch) -> SegmentOut:
    with writing(db) as conn:
        update_in(conn, workspace.id, segment_id, patch)
        out = _out(conn, _row(conn, workspace.id, segment_id))
    backfill.kick(db, workspace.id)
    return out


def duplicate_segment(db: Engine, workspace: WorkspaceRef, segment_id: str, new_id: str | None = None,
                      name: str | None = None) -> SegmentOut:
    with writing(db) as conn:
        row = _row(conn, workspace.id, segment_id)
        data = SegmentIn(name=name or f"{row.name} (copy)", rule=row.rule, id=new_id)
        seg_id = create_in(conn, workspace.id, data, kind=row.kind)
        if row.kind == "static":
            conn.execute(insert(static_members).from_select(
                ["workspace_id", "segment_id", "user_pk"],
                select(static_members.c.workspace_id, literal(seg_id), static_members.c.user_pk)
                .where(static_members.c.workspace_id == workspace.id, static_members.c.segment_id == segment_id)))
            evaluate_many_full(conn, workspace.id, {seg_id}, record_events=False)
        out = _out(conn, _row(conn, workspace.id, seg_id))
    backfill.kick(db, workspace.id)
    return out


def segment_in_use_by(conn: Connection, workspace_id: int, segment_id: str) -> list[str]:
    """Active journeys that use the segment (rows the journeys work writes in journey_segment_ref)."""
    return list(conn.execute(select(journey_segment_refs.c.journey_id).where(
        journey_segment_refs.c.workspace_id == workspace_id, journey_segment_refs.c.segment_id == segment_id,
        journey_segment_refs.c.active.is_(True)).order_by(journey_segment_refs.c.journey_id)).scalars())


def delete_segment(db: Engine, workspace: WorkspaceRef, segment_id: str) -> None:
    with writing(db) as conn:
        _row(conn, workspace.id, segment_id)
        journeys = segment_in_use_by(conn, workspace.id, segment_id)
        if journeys:
            raise Conflict(f"segment {segment_id!r} is used by active journeys: {', '.join(journeys)}", field="id")
        users_of = [s for s, refs in _refs_graph(conn, workspace.id).items() if segment_id in refs and s != segment_id]
        if users_of:
            raise Conflict(f"segment {segment_id!r} is used by segments: {', '.join(sorted(users_of))}", field="id")
        for table in (segment_members, static_members, segment_versions):
            conn.execute(delete(table).where(table.c.workspace_id == workspace.id, table.c.segment_id == segment_id))
        conn.execute(delete(segments).where(segments.c.workspace_id == workspace.id, segments.c.id == segment_id))
        drop_tags(conn, workspace.id, f"segments/{segment_id}")


def get_segment(db: Engine, workspace: WorkspaceRef, segment_id: str) -> SegmentOut:
    with reading(db) as conn:
        return _out(conn, _row(conn, workspace.id, segment_id))


def list_segments(db: Engine, workspace: WorkspaceRef) -> list[SegmentOut]:
    with reading(db) as conn:
        sizes = dict(conn.execute(select(segment_members.c.segment_id, func.count()).where(
            segment_members.c.workspace_id == workspace.id).group_by(segment_members.c.segment_id)).all())
        rows = conn.execute(select(segments).where(segments.c.workspace_id == workspace.id).order_by(segments.c.id)).all()
        filling = _filling(conn, workspace.id)
        states = {r.id: _state(conn, r, filling) for r in rows}
    return [SegmentOut(id=r.id, name=r.name, kind=r.kind, rule=r.rule, version=r.version, size=sizes.get(r.id, 0),
                       created_at=ms_to_iso(r.created_at), updated_at=ms_to_iso(r.updated_at), state=states[r.id][0],
                       progress=states[r.id][1]) for r in rows]


def list_versions(db: Engine, workspace: WorkspaceRef, segment_id: str) -> list[VersionOut]:
    with reading(db) as conn:
        _row(conn, workspace.id, segment_id)
        rows = conn.execute(select(segment_versions).where(
            segment_versions.c.workspace_id == workspace.id, segment_versions.c.segment_id == segment_id)
            .order_by(segment_versions.c.version)).all()
    return [VersionOut(version=r.version, name=r.name, rule=r.rule, created_at=ms_to_iso(r.created_at)) for r in rows]


def members_page(db: Engine, workspace: WorkspaceRef, segment_id: str, cursor: str | None, limit: int) -> dict:
    check_limit(limit)
    after = decode_cursor(cursor)
    with reading(db) as conn:
        _row(conn, workspace.id, segment_id)
        rows = conn.execute(
            select(segment_members.c.user_pk, users.c.user_id, segment_members.c.since)
            .join(users, users.c.id == segment_members.c.user_pk)
            .where(segment_members.c.workspace_id == workspace.id, segment_members.c.segment_id == segment_id,
                   segment_members.c.user_pk > after)
            .order_by(segment_members.c.user_pk).limit(limit)).all()
    return {"items": [{"user_id": r.user_id, "since": ms_to_iso(r.since)} for r in rows],
            "next_cursor": encode_cursor(rows[-1].user_pk) if len(rows) == limit else None}


# ---- for journeys and `tidings apply` ---------------------------------------------------------

def segment_exists(conn_or_db: Connection | Engine, workspace_id: int, segment_id: str) -> bool:
    q = select(segments.c.id).where(segments.c.workspace_id == workspace_id, segments.c.id == segment_id)
    if isinstance(conn_or_db, Engine):
        with reading(conn_or_db) as conn:
            return conn.execute(q).first() is not None
    return conn_or_db.execute(q).first() is not None


def member_pks(conn: Connection, workspace_id: int, segment_id: str, after_pk: int, limit: int, *,
               timezones: tuple[str, ...] | None = None, or_no_timezone: bool = False) -> list[int]:
    """The next `limit` member user pks after `after_pk`, ascending; with `timezones`, only customers whose
    stored time zone is one of them (or unset, with `or_no_timezone`), filtered in SQL."""
    m = segment_members
    q = (select(m.c.user_pk).where(m.c.workspace_id == workspace_id, m.c.segment_id == segment_id,
                                   m.c.user_pk > after_pk).order_by(m.c.user_pk).limit(limit))
    if timezones is not None:
        zone = users.c.timezone.in_(timezones)
        q = q.join(users, users.c.id == m.c.user_pk).where(or_(zone, users.c.timezone.is_(None))
                                                            if or_no_timezone else zone)
    return list(conn.execute(q).scalars())


def members_among(conn: Connection, workspace_id: int, segment_id: str, user_pks: list[int]) -> set[int]:
    """Which of these customers are members."""
    return {r[0] for r in rows_where_in(conn, segment_members, ["user_pk"], "user_pk", user_pks,
                                        {"workspace_id": workspace_id, "segment_id": segment_id})}


def set_journey_refs(conn: Connection, workspace_id: int, journey_id: str, segment_ids: set[str],
                     active: bool) -> None:
    """The segments a journey uses (an active journey's cannot be deleted: segment_in_use_by)."""
    refs = journey_segment_refs
    conn.execute(delete(refs).where(refs.c.workspace_id == workspace_id, refs.c.journey_id == journey_id))
    for seg in sorted(segment_ids):
        conn.execute(refs.insert().values(workspace_id=workspace_id, journey_id=journey_id, segment_id=seg,
                                          active=active))


def put_static_segment(db: Engine, workspace: WorkspaceRef, segment_id: str, user_pks: list[int]) -> None:
    """A static segment holding exactly these customers (created, or its members replaced), without
    `_segment.*` events: how tests and the journey test harness place customers in a segment."""
    with writing(db) as conn:
        exists = conn.execute(select(segments.c.kind).where(segments.c.workspace_id == workspace.id,
                                                            segments.c.id == segment_id)).scalar()
        if exists is None:
            create_in(conn, workspace.id, SegmentIn(name=segment_id, id=segment_id), kind="static")
        elif exists != "static":
            raise Conflict(f"segment {segment_id!r} is not static", field="id")
        conn.execute(delete(static_members).where(static_members.c.workspace_id == workspace.id,
                                                  static_members.c.segment_id == segment_id))
        for part in chunks(sorted(set(user_pks))):
            conn.execute(insert(static_members), [{"workspace_id": workspace.id, "segment_id": segment_id, "user_pk": pk}
                                                  for pk in part])
        evaluate_many_full(conn, workspace.id, {segment_id}, record_events=False)


def segment_size(conn: Connection, workspace_id: int, segment_id: str) -> int:
    return conn.execute(select(func.count()).select_from(segment_members).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id)).scalar() or 0


def is_member(conn: Connection, workspace_id: int, segment_id: str, user_pk: int) -> bool:
    return conn.execute(select(segment_members.c.user_pk).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id,
        segment_members.c.user_pk == user_pk)).first() is not None


def members(db: Engine, workspace_id: int, segment_id: str, batch: int = 5000) -> Iterator[int]:
    """Stream the member user pks in ascending order, one short read per batch."""
    after = 0
    while True:
        with reading(db) as conn:
            part = list(conn.execute(select(segment_members.c.user_pk).where(
                segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id,
                segment_members.c.user_pk > after).order_by(segment_members.c.user_pk).limit(batch)).scalars())
        yield from part
        if len(part) < batch:
            return
        after = part[-1]


def export_rows(db: Engine, workspace: WorkspaceRef, segment_id: str) -> Iterator[dict[str, Any]]:
    """Members as customer documents (user id, attributes, metrics, endpoints), streamed."""
    from tidings.engine.segments.documents import load_customers

    with reading(db) as conn:
        _row(conn, workspace.id, segment_id)
    pks: list[int] = []
    for pk in members(db, workspace.id, segment_id):
        pks.append(pk)
        if len(pks) == 1000:
            yield from _export_batch(db, pks, load_customers)
            pks = []
    if pks:
        yield from _export_batch(db, pks, load_customers)


def _export_batch(db: Engine, pks: list[int], load_customers) -> Iterator[dict[str, Any]]:
    with reading(db) as conn:
        found, eps = load_customers(conn, pks)
    for pk in pks:
        u = found.get(pk)
        if u is None:
            continue
        yield {"user_id": u.user_id, "attributes": u.attributes, "metrics": u.metrics, "timezone": u.timezone,
               "locale": u.locale,
               "endpoints": [{"endpoint_id": e.endpoint_id, "channel": e.channel, "address": e.address,
                              "opt_out": e.opt_out} for e in eps.get(pk, [])]}


def apply_segment_resource(db: Engine, workspace: WorkspaceRef, doc: dict[str, Any]) -> str:
    """Idempotent upsert of a `kind: Segment` YAML resource; returns created | updated | unchanged."""
    if doc.get("kind") != "Segment":
        raise InvalidInput("kind must be Segment", field="kind")
    if doc.get("apiVersion") not in (None, "tidings/v1"):
        raise InvalidInput("apiVersion must be tidings/v1", field="apiVersion")
    unknown = set(doc) - {"apiVersion", "kind", "id", "name", "rule"}
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    seg_id = doc.get("id")
    if not isinstance(seg_id, str):
        raise InvalidInput("a Segment resource needs an id", field="id")
    with writing(db) as conn:
        exists = conn.execute(select(segments.c.id).where(segments.c.workspace_id == workspace.id,
                                                          segments.c.id == seg_id)).first()
        if not exists:
            create_in(conn, workspace.id, SegmentIn(name=doc.get("name") or seg_id, rule=doc.get("rule"), id=seg_id))
            outcome = "created"
        else:
            changed = update_in(conn, workspace.id, seg_id, SegmentPatch(name=doc.get("name") or seg_id, rule=doc.get("rule")))
            outcome = "updated" if changed else "unchanged"
    backfill.kick(db, workspace.id)
    return outcome


__all__ = ["SegmentIn", "SegmentPatch", "SegmentOut", "create_segment", "update_segment", "duplicate_segment",
           "delete_segment", "get_segment", "list_segments", "list_versions", "members_page", "segment_exists",
           "is_member", "members", "segment_in_use_by", "apply_segment_resource", "export_rows", "chunks"]
