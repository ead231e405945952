"""Evaluating segments: compiled rules cached per workspace, the Python evaluator over customer
documents, full evaluation in SQL (with Python for the rows SQL leaves unsure), and writing the
membership changes with their `_segment.enter` / `_segment.exit` events."""
from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

import datalogic_py
import msgspec
from sqlalchemy import Connection, bindparam, func, select, text

from tidings.engine.platform.batching import chunks
from tidings.engine.platform.db import bulk_delete, insert_tuples, without_jit
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.metrics_registry import SEGMENT_EVALUATION
from tidings.engine.segments.tables import segment_members, segments
from tidings.engine.customers import history, on_write
from tidings.engine.segments import backfill, typed_index as paths, rules
from tidings.engine.segments.documents import documents
from tidings.engine.segments.to_sql import (
    Ctx, Prefilter, driving_sets, full_query, seek_columns, selectivity_sample, wide_conjunct_filters,
)

ENGINE = rules.ENGINE
BATCH = 2000
MMAP_BYTES = 1 << 30  # SQLite maps at most the file's size
# A direct evaluation on SQLite scans the users' JSON in this many parts at once (user pk ranges), one on the
# caller's connection and the others on read-only connections of their own (see _fetch_in_parts); a
# workspace whose user pks span fewer than PARALLEL_MIN_ROWS is scanned in one part.
SCAN_PARTS = min(2, os.cpu_count() or 1)
PARALLEL_MIN_ROWS = 200_000
RANGE_AFTER, RANGE_UPTO = "range_after", "range_upto"  # the direct scan's pk bounds (parameters)
MAX_PK = (1 << 63) - 1


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
    user_paths: frozenset[str] = frozenset()  # user-level paths it reads (the typed index holds these)
    ep_paths: frozenset[str] = frozenset()  # endpoint paths it reads inside some/all/none
    reads_endpoints: bool = False  # any endpoint data (iteration, within_km, recency)

    def index_paths(self) -> set[tuple[str, str]]:
        return {("u", p) for p in self.user_paths} | {("e", p) for p in self.ep_paths}


def compile_segment(seg_id: str, kind: str, rule: Any) -> Compiled:
    """A stored segment as an evaluable rule (stored rules were validated when saved)."""
    if kind == "static":
        ex = rules.expand(rule) if rule is not None else rules.Expanded(logic=None)
        logic = rules.static_logic(seg_id, ex.logic)
    else:
        ex = rules.expand(rule)
        logic = ex.logic
    user_paths, ep_paths, reads_eps = paths.rule_reads(logic, ex.facts)
    return Compiled(seg_id, kind, logic, ex.facts, set(ex.refs), ex.clock, ex.events, ex.any_event,
                    ENGINE.compile(logic), user_paths, ep_paths, reads_eps)


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


@dataclass
class Rules:
    """A workspace's compiled segments and the paths its typed index maintains."""

    stamp: Any
    segs: list[Compiled]
    user_paths: frozenset[str]
    ep_paths: frozenset[str]
    slots: dict[str, int] = field(default_factory=dict)  # user-level path -> wide-table slot
    # Worked out once per entry (every write asks): which segments read each user-level path, and per set of
    # segments re-checked, their evaluation groups and behaviour facts.
    _readers: dict[str, frozenset[str]] | None = field(default=None, repr=False)
    _plans: dict[tuple[str, ...], tuple[list[list[Compiled]], dict[str, dict[str, Any]]]] = field(
        default_factory=dict, repr=False)

    def reading(self, fields: Collection[str]) -> set[str]:
        """The ids of the segments whose rules read one of these user-level paths."""
        readers = self._readers
        if readers is None:
            index: dict[str, set[str]] = {}
            for s in self.segs:
                for p in s.user_paths:
                    index.setdefault(p, set()).add(s.id)
            readers = self._readers = {p: frozenset(ids) for p, ids in index.items()}
        return set().union(*(readers.get(f, ()) for f in fields))

    def plan(self, segs: list[Compiled]) -> tuple[list[list[Compiled]], dict[str, dict[str, Any]]]:
        """(levels(segs), union_facts(segs)) for segments of this entry, kept for the entry's life (bounded:
        a workspace's writes re-check a few distinct sets)."""
        key = tuple(s.id for s in segs)
        hit = self._plans.get(key)
        if hit is None:
            hit = (levels(segs), union_facts(segs))
            if len(self._plans) < 64:
                self._plans[key] = hit
        return hit


_cache: dict[int, Rules] = {}
_lock = threading.Lock()
# Built once: every customer write asks it, and building the statement cost more than the indexed aggregate.
_STAMP = (select(func.count(), func.max(segments.c.updated_at), func.sum(segments.c.version))
          .where(segments.c.workspace_id == bindparam("workspace_id")))


def workspace_rules(conn: Connection, workspace_id: int) -> Rules:
    """Every segment of the workspace compiled, dependencies first, with the index's paths; cached until
    a segment changes (one cheap aggregate query per call). A recompile also syncs the index's paths."""
    stamp = tuple(conn.execute(_STAMP, {"workspace_id": workspace_id}).one())
    hit = _cache.get(workspace_id)
    if hit and hit.stamp == stamp:
        return hit
    rows = conn.execute(select(segments.c.id, segments.c.kind, segments.c.rule)
                        .where(segments.c.workspace_id == workspace_id)).all()
    compiled = topological([compile_segment(r.id, r.kind, r.rule) for r in rows])
    want = set().union(*(s.index_paths() for s in compiled)) if compiled else set()
    paths.sync(conn, workspace_id, want)
    entry = Rules(stamp, compiled, frozenset(p for s, p in want if s == "u"), frozenset(p for s, p in want if s == "e"),
                  paths.slots(conn, workspace_id))
    _keep_scan_indexes(conn, workspace_id, compiled, entry.slots)
    with _lock:
        _cache[workspace_id] = entry
    return entry


def workspace_segments(conn: Connection, workspace_id: int) -> list[Compiled]:
    return workspace_rules(conn, workspace_id).segs


def _sync_paths(conn: Connection, workspace_id: int, seg: Compiled) -> None:
    if paths.sync(conn, workspace_id, paths.maintained(conn, workspace_id) | seg.index_paths(), drop_unwanted=False):
        with _lock:
            _cache.pop(workspace_id, None)


def ensure_indexed(conn: Connection, workspace_id: int, seg: Compiled) -> None:
    """Before full evaluation of a rule that may not be saved (tests, benchmarks): index what it reads, and
    build its scan index (paths.ensure_scan_index), as saving it would. Saved segments' paths are
    indexed by workspace_rules; extra paths and scan indexes are dropped at the next sync."""
    _sync_paths(conn, workspace_id, seg)
    backfill.fill_in(conn, workspace_id)
    plan = _wide_plan(conn, workspace_id, seg, 0)
    if plan is not None and conn.dialect.name == "postgresql":  # the index its scan would build
        _pg_wide_query(conn, workspace_id, seg, *plan)
    elif plan is not None:
        _ensure_scan_index(conn, workspace_id, seg, plan[0], plan[2])


def scan_columns(seg: Compiled, slots: dict[str, int]) -> set[str]:
    """Every wide-table column the rule's full evaluation may read (whatever kinds its slots hold)."""
    cols = {f"{c}{slots[p]}" for p in seg.user_paths if p in slots for c in ("k", "n", "t")}
    return cols | {f"d{slots[f['path']]}" for f in seg.facts.values()
                   if f["type"] in ("date", "ago") and f["path"] in slots}


def _ensure_scan_index(conn: Connection, workspace_id: int, seg: Compiled, ctx: Ctx,
                       prefilters: list[Prefilter]) -> str | None:
    """The covering index serving this rule's scan, built when missing, leading with its equality /
    IN comparisons in the order of their sampled selectivity, then its most selective range
    (paths.ensure_scan_index); None without one."""
    assert ctx.wide is not None
    seek = seek_columns(seg.logic, ctx)
    ordered = [seek[p.conjunct] for p in prefilters if p.conjunct in seek]
    lead = list(dict.fromkeys([c for c, eq in ordered if eq] + [c for c, eq in ordered if not eq][:1]))
    return paths.ensure_scan_index(conn, workspace_id, scan_columns(seg, ctx.wide), lead, {c for c, _ in seek.values()},
                                   {s: p for p, s in ctx.wide.items()})


def _keep_scan_indexes(conn: Connection, workspace_id: int, segs: list[Compiled], slots: dict[str, int]) -> None:
    """Drop the scan indexes no segment's full evaluation can use (each costs every write)."""
    wants = []
    for s in segs:
        if s.user_paths and s.user_paths <= set(slots):
            ctx = Ctx(dialect="sqlite", workspace_id=workspace_id, now=0, wide=slots)
            wants.append((scan_columns(s, slots), {c for c, _ in seek_columns(s.logic, ctx).values()}))
    paths.drop_scan_indexes(conn, workspace_id, keep=lambda cols: any(paths.serves(cols, n, k) for n, k in wants))


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


def python_member(seg: Compiled, doc: dict[str, Any]) -> bool:
    """The reference evaluator: datalogic on the customer document; a rule that raises is a no."""
    try:
        result = seg.rule.evaluate(doc)
    except datalogic_py.DataLogicError:
        return False
    if isinstance(result, bool):
        return result
    return ENGINE.truthy(msgspec.json.encode(result).decode())


def levels(segs: list[Compiled]) -> list[list[Compiled]]:
    """Segments (in dependency order) grouped so each group only references segments of earlier groups:
    one native evaluate_many call per customer and group. Without in_segment there is one group."""
    level: dict[str, int] = {}
    groups: list[list[Compiled]] = []
    for s in segs:
        n = max((level[r] + 1 for r in s.refs if r in level), default=0)
        level[s.id] = n
        while len(groups) <= n:
            groups.append([])
        groups[n].append(s)
    return groups


def _truthy(result: Any) -> bool:
    if result == "true":
        return True
    if result == "false" or isinstance(result, datalogic_py.BatchItemError):
        return False  # a rule that raises for a customer leaves the customer out
    return ENGINE.truthy(result)


def evaluate_docs(segs: list[Compiled], docs: dict[int, dict[str, Any]],
                  groups: list[list[Compiled]] | None = None) -> dict[str, set[int]]:
    """Members among these users for each segment. Each document is parsed once per group and every rule of
    the group evaluated in one native call; in_segment sees the results of earlier groups."""
    result: dict[str, set[int]] = {s.id: set() for s in segs}
    session = ENGINE.session()
    groups = levels(segs) if groups is None else groups
    for n, group in enumerate(groups):
        compiled = [s.rule for s in group]
        for pk, doc in docs.items():
            outcomes = session.evaluate_many(compiled, datalogic_py.DataHandle(doc))
            for seg, out in zip(group, outcomes):
                if _truthy(out):
                    result[seg.id].add(pk)
        if n + 1 < len(groups):  # later groups read these memberships
            for pk, doc in docs.items():
                current = set(doc["segments"])
                for seg in group:
                    (current.add if pk in result[seg.id] else current.discard)(seg.id)
                doc["segments"] = sorted(current)
    return result


def union_facts(segs: Iterable[Compiled]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in segs:
        out.update(s.facts)
    return out


def write_changes(conn: Connection, workspace_id: int, changes: list[tuple[str, int, bool]], now: int,
                  record_events: bool = True) -> None:
    """Membership changes (segment id, user pk, entered?) in bulk inserts and deletes, and their
    `_segment.enter` / `_segment.exit` events (one row per customer, see customers/history.py), in the
    caller's transaction. Callers keep `changes` bounded (a write's batch; full evaluation in slices)."""
    for part in chunks(changes, 50_000):
        insert_tuples(conn, segment_members, ["workspace_id", "segment_id", "user_pk", "since"],
                      [(workspace_id, sid, pk, now) for sid, pk, entered in part if entered])
        bulk_delete(conn, segment_members, ["workspace_id", "segment_id", "user_pk"],
                    [(workspace_id, sid, pk) for sid, pk, entered in part if not entered])
    if not record_events or not changes:
        return
    # Segment-entry journeys and `left_segment` exits listen for these: they go to the listeners of own events
    # only (segments never re-check segments on them); and the event dicts are built only when one listens,
    # since a batch write can change hundreds of thousands of memberships.
    listening = on_write.listened(conn, workspace_id, history.SEGMENT_EVENTS)
    own = history.record(conn, workspace_id, changes, now, expanded=listening)
    if own:
        on_write.own_events_recorded(conn, workspace_id, own)


def apply_changes(conn: Connection, workspace_id: int, segment_id: str, entered: Iterable[int],
                  exited: Iterable[int], now: int, record_events: bool = True) -> tuple[int, int]:
    """Write one segment's membership changes and their events inside the caller's transaction, in
    slices: a full evaluation can change millions."""
    entered, exited = sorted(entered), sorted(exited)
    for pks, flag in ((entered, True), (exited, False)):
        for part in chunks(pks, 50_000):
            write_changes(conn, workspace_id, [(segment_id, pk, flag) for pk in part], now, record_events)
    return len(entered), len(exited)


def update_for_users(conn: Connection, workspace_id: int, segs: list[Compiled], user_pks: list[int],
                     loaded=None, now: int | None = None,
                     plan: tuple[list[list[Compiled]], dict[str, dict[str, Any]]] | None = None) -> dict[int, list[str]]:
    """Re-evaluate these segments for these users (the per-write path) and write the differences. `plan`:
    Rules.plan(segs), when the caller has the workspace's rules. Returns each found user's dynamic segment
    ids after the write (sorted; what memberships_of would read now)."""
    if not segs or not user_pks:
        return {}
    with SEGMENT_EVALUATION.labels("incremental").time():
        return _update_for_users(conn, workspace_id, segs, user_pks, loaded, now or now_ms(),
                                 plan or (levels(segs), union_facts(segs)))


def _update_for_users(conn: Connection, workspace_id: int, segs: list[Compiled], user_pks: list[int], loaded,
                      now: int, plan: tuple[list[list[Compiled]], dict[str, dict[str, Any]]]) -> dict[int, list[str]]:
    groups, facts = plan
    docs = documents(conn, workspace_id, user_pks, facts, now, loaded)
    after = {pk: set(d["segments"]) for pk, d in docs.items()}  # before evaluate_docs, which rewrites them
    before: dict[str, set[int]] = {}  # segment id -> which of these users were members
    for pk, d in docs.items():
        for sid in d["segments"]:
            before.setdefault(sid, set()).add(pk)
    result = evaluate_docs(segs, docs, groups)
    changes: list[tuple[str, int, bool]] = []
    nobody: set[int] = set()
    for seg in segs:  # set differences: a batch of new customers has ~50 memberships each
        members, was = result[seg.id], before.get(seg.id, nobody)
        if members == was:  # most segments, for a single write
            continue
        entered, exited = sorted(members - was), sorted(was - members)
        changes += [(seg.id, pk, True) for pk in entered]
        changes += [(seg.id, pk, False) for pk in exited]
        for pk in entered:
            after[pk].add(seg.id)
        for pk in exited:
            after[pk].discard(seg.id)
    write_changes(conn, workspace_id, changes, now)
    return {pk: sorted(sids) for pk, sids in after.items()}


def full_members(conn: Connection, workspace_id: int, seg: Compiled, now: int, register: bool = True,
                 direct: bool = False) -> set[int]:
    """Every member of the segment: SQL decides what it can, Python the unsure rows in batches. `register`:
    index the rule's paths (False for an unsaved rule: a path not filled is read from the JSON); `direct`:
    read every path from the users' JSON (segments.backfill.direct_source), as while the index fills."""
    query, params, wide = full_evaluation_query(conn, workspace_id, seg, now, register, direct)
    parts = _scan_parts(conn, seg, params)
    if parts:
        members, unsure = _fetch_in_parts(conn, query, params, parts)
    else:
        members, unsure = _fetch_outcomes(conn, query, params, big_scan=wide)
    for part in chunks(unsure, BATCH):
        docs = documents(conn, workspace_id, list(part), seg.facts, now)
        members.update(pk for pk, doc in docs.items() if python_member(seg, doc))
    return members


def full_evaluation_query(conn: Connection, workspace_id: int, seg: Compiled, now: int, register: bool = True,
                          direct: bool = False, sample: tuple[str, dict[str, Any]] | None = None
                          ) -> tuple[str, dict[str, Any], bool]:
    """(query, params, over the wide table?) of the segment's full evaluation: (pk, outcome) rows with
    outcome 1 (member) or 3 (ask Python). Indexes the rule's paths first (`register`), and its scan index on
    SQLite; while some user-level path it reads is not filled, a direct evaluation over the users' JSON.
    `sample` (with `direct`, for a rule reading user-level paths): SQL over `u.id` keeping only the users it
    is true for, and its parameters (estimate.py's sample)."""
    held = paths.state(conn, workspace_id)
    if register and not seg.index_paths() <= {(s, p) for s, p, _, _ in held}:
        _sync_paths(conn, workspace_id, seg)
        held = paths.state(conn, workspace_id)
    done = {(s, p) for s, p, _, mark in held if mark is None}
    ep_unfilled = frozenset(p for p in seg.ep_paths if ("e", p) not in done)
    if seg.user_paths and (direct or not seg.user_paths <= {p for s, p in done if s == "u"}):
        order = sorted(seg.user_paths)
        ctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace_id, now=now, wide={p: i for i, p in enumerate(order)},
                  direct=True, ep_unfilled=ep_unfilled)
        pk_range = None
        # the whole table unless scanned in parts (_fetch_in_parts); not with a sample, which the planner should
        # look up by pk (without statistics SQLite took the pk range and scanned every row)
        if ctx.dialect == "sqlite" and sample is None:
            ctx.params.update({RANGE_AFTER: -1, RANGE_UPTO: MAX_PK})
            pk_range = (f":{RANGE_AFTER}", f":{RANGE_UPTO}")
        if sample is not None:
            ctx.params.update(sample[1])
        table = backfill.direct_source(ctx.dialect, ctx.p(workspace_id), order, ctx.p, pk_range,
                                       None if sample is None else sample[0])
        without_jit(conn)  # a scan of every customer's JSON through long CASEs
        prefilters = _by_selectivity(conn, ctx, seg.logic, table)
        return full_query(seg.logic, seg.facts, ctx, wide_table=table, prefilters=prefilters), ctx.params, True
    filled_slots = {p: slot for s, p, slot, mark in held if s == "u" and slot is not None and mark is None}
    plan = _wide_plan(conn, workspace_id, seg, now, ep_unfilled, filled_slots)
    if plan is not None:  # one scan of the wide table (or of its scan index), a row per customer
        ctx, table, prefilters = plan
        if ctx.dialect == "postgresql":
            return (*_pg_wide_query(conn, workspace_id, seg, ctx, table, prefilters), True)
        index = _ensure_scan_index(conn, workspace_id, seg, ctx, prefilters)  # one catalog lookup when it exists
        # Without a scan index of its own, the table: another rule's index could look selective to the
        # planner (no statistics) and cost a table lookup per row.
        hint = "NOT INDEXED" if ctx.dialect == "sqlite" and index is None else ""
        return (full_query(seg.logic, seg.facts, ctx, wide_table=table, prefilters=prefilters, table_hint=hint),
                ctx.params, True)
    ctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace_id, now=now, ep_unfilled=ep_unfilled)
    return full_query(seg.logic, seg.facts, ctx, _narrowest(conn, ctx, seg)), ctx.params, False


def _pg_wide_query(conn: Connection, workspace_id: int, seg: Compiled, ctx: Ctx, table: str,
                   prefilters: list[Prefilter]) -> tuple[str, dict[str, Any]]:
    """PostgreSQL's scan of the wide table, in two parts of one statement (one snapshot under read committed,
    so no write falls between them): the rows where none of the rule's slots holds a rare kind, translated
    for the common kinds only, so its comparisons are plain ranges an index-only scan of the rule's scan
    index seeks; UNION ALL the rows where one does (found through the slots' partial indexes), translated
    for every kind. The two are disjoint and cover every row. Without a scan index, one scan of the table."""
    assert ctx.wide is not None
    rule_slots = sorted({ctx.wide[p] for p in seg.user_paths})
    common = Ctx(dialect=ctx.dialect, workspace_id=workspace_id, now=ctx.now, params=ctx.params, counter=ctx.counter,
                 wide=ctx.wide, rare={s: set() for s in rule_slots}, ep_unfilled=ctx.ep_unfilled, _seen=ctx._seen)
    needed, seekable = scan_columns(seg, ctx.wide), {c for c, _ in seek_columns(seg.logic, common).values()}
    if any(paths.serves(cols, needed, seekable) for cols in paths.scan_indexes(conn, workspace_id).values()):
        common_prefilters = wide_conjunct_filters(seg.logic, common)  # the index decides; no order to sample
    else:
        common_prefilters = _by_selectivity(conn, common, seg.logic, table)
        if _ensure_scan_index(conn, workspace_id, seg, common, common_prefilters) is None:
            without_jit(conn)  # a scan of every wide row
            prefilters = _by_selectivity(conn, ctx, seg.logic, table)
            return full_query(seg.logic, seg.facts, ctx, wide_table=table, prefilters=prefilters), ctx.params
    rare_in = ", ".join(f"'{k}'" for k in paths.RARE_KINDS)
    some_rare_cond = " OR ".join(f"w.k{s} IN ({rare_in})" for s in rule_slots)
    # Where no slot of the rule holds a rare kind at all (the usual case), one test per statement (an
    # uncorrelated subquery, run once through the partial indexes) answers for every row; testing each
    # row's kinds instead cost a third of the index-only scan at 1M customers.
    none_rare = f"(SELECT NOT EXISTS (SELECT 1 FROM {table} w WHERE {some_rare_cond}))"
    per_row = " AND ".join(f"(w.k{s} IS NULL OR w.k{s} NOT IN ({rare_in}))" for s in rule_slots)
    no_rare = Prefilter(f"{none_rare} OR ({per_row})", False, -1)
    some_rare = Prefilter(some_rare_cond, False, -1)
    main = full_query(seg.logic, seg.facts, common, wide_table=table, prefilters=[*common_prefilters, no_rare])
    rare = full_query(seg.logic, seg.facts, ctx, wide_table=table, prefilters=[*prefilters, some_rare])
    return f"{main} UNION ALL {rare}", ctx.params


def _wide_plan(conn: Connection, workspace_id: int, seg: Compiled, now: int, ep_unfilled: frozenset[str] = frozenset(),
               slots: dict[str, int] | None = None) -> tuple[Ctx, str, list[Prefilter]] | None:
    """When every user-level path the rule reads has a filled wide slot (`slots`: paths.slots(filled=True),
    when the caller has read them): the context, the wide table and the prefilters in the order to test
    them; None otherwise."""
    if slots is None:
        slots = paths.slots(conn, workspace_id, filled=True)
    if not (seg.user_paths and seg.user_paths <= set(slots)):
        return None
    ctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace_id, now=now, wide=slots, ep_unfilled=ep_unfilled)
    if conn.dialect.name == "sqlite":  # same transaction as the scan; PostgreSQL's read committed is not
        ctx.rare = paths.rare_kinds(conn, workspace_id, {slots[p] for p in seg.user_paths})
    table = paths.wide_table(workspace_id)
    if ctx.dialect == "postgresql":  # _pg_wide_query samples what it scans (its rare rows' part needs no order)
        return ctx, table, wide_conjunct_filters(seg.logic, ctx)
    return ctx, table, _by_selectivity(conn, ctx, seg.logic, table)


def _by_selectivity(conn: Connection, ctx: Ctx, logic: Any, table: str) -> list[Prefilter]:
    """The rule's wide-table prefilters, the one that the fewest sampled rows pass first (a scan tests its
    WHERE terms in the order written, so most rows are then rejected by the first comparison)."""
    pre = wide_conjunct_filters(logic, ctx)
    if len(pre) < 2:
        return pre
    counts = conn.execute(text(selectivity_sample(table, [p.cond for p in pre], ctx.dialect)), ctx.params).one()
    return [p for _, _, p in sorted((n or 0, i, p) for i, (n, p) in enumerate(zip(counts, pre)))]


def _fetch_outcomes(conn: Connection, query: str, params: dict[str, Any], big_scan: bool) -> tuple[set[int], list[int]]:
    """(members, unsure pks) from a full query's (pk, outcome) rows. On SQLite as one JSON array of signed
    pks (pk a member, -pk unsure) built by the database and decoded in C: no result row per customer for
    what can be hundreds of thousands of them (half the time of fetching them as rows at 1M customers).
    A scan of the whole wide table reads the file memory-mapped (set on this connection for this query
    only: the page cache would otherwise copy every page)."""
    if conn.dialect.name == "postgresql":  # the same in one row: fetching rows cost 3x the index-only scan
        signed, most = conn.execute(text(f"SELECT coalesce(json_agg(CASE f.o WHEN 1 THEN f.pk ELSE -f.pk END), "
                                         f"'[]')::text, max(f.o) FROM ({query}) f"), params).one()
        return _signed_pks(signed, most)
    if conn.dialect.name != "sqlite":
        members: set[int] = set()
        unsure: list[int] = []
        for pk, o in conn.execute(text(query), params):
            (members.add if o == 1 else unsure.append)(pk)
        return members, unsure
    cur = conn.connection.dbapi_connection.cursor()
    try:
        if big_scan:
            cur.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        try:
            signed, most = cur.execute(f"SELECT json_group_array(CASE f.o WHEN 1 THEN f.pk ELSE -f.pk END), max(f.o) "
                                       f"FROM ({query}) f", params).fetchone()
        finally:
            if big_scan:
                cur.execute("PRAGMA mmap_size = 0")
    finally:
        cur.close()
    return _signed_pks(signed, most)


def _scan_parts(conn: Connection, seg: Compiled, params: dict[str, Any]) -> list[tuple[int, int]]:
    """The user pk ranges, (after, upto], to scan at once for a direct evaluation on SQLite; [] for one scan.

    Parts are read by other connections, which see the last committed state of the database: the same as
    this connection's only when it holds the write lock (every connection but `reading`'s takes it at BEGIN:
    nothing can commit meanwhile) and when what the rule reads is not written by this transaction. The
    direct scan reads the users rows; the rules scanned in parts read nothing else (no in_segment, events,
    endpoints or dates: those read tables a transaction evaluating segments writes, or are Python's), and
    no caller writes users rows before evaluating segments in the same transaction. WAL only: in rollback
    mode a reader can meet this transaction's exclusive lock."""
    if (SCAN_PARTS < 2 or RANGE_AFTER not in params or conn.dialect.name != "sqlite"
            or conn.get_execution_options().get("readonly") or not conn.in_transaction()):
        return []
    if seg.refs or seg.events or seg.any_event or seg.reads_endpoints or seg.ep_paths or seg.facts:
        return []
    if not _database_file(conn):
        return []
    lo, hi = conn.exec_driver_sql("SELECT min(id), max(id) FROM users").one()
    if lo is None or hi - lo < PARALLEL_MIN_ROWS:
        return []
    if conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
        return []
    bounds = [lo - 1 + (hi - lo + 1) * i // SCAN_PARTS for i in range(SCAN_PARTS)] + [MAX_PK]
    return list(zip(bounds, bounds[1:]))


def _database_file(conn: Connection) -> str | None:
    path = conn.engine.url.database
    if not path or path == ":memory:" or path.startswith("file:") or conn.engine.url.query:
        return None  # in memory, or a URI form the readers would not open alike
    return path


def _fetch_in_parts(conn: Connection, query: str, params: dict[str, Any],
                    parts: list[tuple[int, int]]) -> tuple[set[int], list[int]]:
    """_fetch_outcomes of a direct scan over each pk range at once: the first on this connection, the others
    on read-only connections of their own in threads (sqlite3 releases the GIL while it steps a statement),
    the parts' members and unsure pks put together (the ranges are disjoint and cover every pk)."""
    path = _database_file(conn)
    assert path is not None

    def other(part: tuple[int, int]) -> tuple[set[int], list[int]]:
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        try:
            reader.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            signed, most = reader.execute(
                f"SELECT json_group_array(CASE f.o WHEN 1 THEN f.pk ELSE -f.pk END), max(f.o) FROM ({query}) f",
                {**params, RANGE_AFTER: part[0], RANGE_UPTO: part[1]}).fetchone()
        finally:
            reader.close()
        return _signed_pks(signed, most)

    with ThreadPoolExecutor(max_workers=len(parts) - 1, thread_name_prefix="tidings-scan") as pool:
        futures = [pool.submit(other, part) for part in parts[1:]]
        first = parts[0]
        members, unsure = _fetch_outcomes(conn, query, {**params, RANGE_AFTER: first[0], RANGE_UPTO: first[1]},
                                          big_scan=True)
        for future in futures:
            more, unsure_more = future.result()
            members |= more
            unsure += unsure_more
    return members, unsure


def _signed_pks(signed: str, most: int | None) -> tuple[set[int], list[int]]:
    """(members, unsure pks) from a JSON array of signed pks (pk a member, -pk unsure) and the largest outcome."""
    pks = msgspec.json.decode(signed)
    if most == 3:  # some unsure (user pks are positive)
        return {v for v in pks if v > 0}, [-v for v in pks if v < 0]
    return set(pks), []


def _narrowest(conn: Connection, ctx: Ctx, seg: Compiled) -> str | None:
    """The smallest of the rule's driving sets, counted from the index (each count stops at the best so far)."""
    sets = driving_sets(seg.logic, ctx, ctx.p(ctx.workspace_id))
    if len(sets) < 2:
        return sets[0] if sets else None
    best, best_n = None, None
    for s in sets:
        cap = "" if best_n is None else f" LIMIT {best_n}"
        n = conn.execute(text(f"SELECT count(*) FROM ({s}{cap}) c"), ctx.params).scalar()
        if best_n is None or n < best_n:
            best, best_n = s, n
    return best


def evaluate_full(conn: Connection, workspace_id: int, seg: Compiled, now: int | None = None,
                  record_events: bool = True) -> tuple[int, int]:
    """Full evaluation of one segment; returns (entered, exited)."""
    now = now or now_ms()
    with SEGMENT_EVALUATION.labels("full").time():
        if not record_events and not _has_members(conn, workspace_id, seg.id):
            return _insert_new_members(conn, workspace_id, seg, now), 0
        members = full_members(conn, workspace_id, seg, now)
        current = set(conn.execute(select(segment_members.c.user_pk).where(
            segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == seg.id)).scalars())
        return apply_changes(conn, workspace_id, seg.id, members - current, current - members, now, record_events)


def _has_members(conn: Connection, workspace_id: int, segment_id: str) -> bool:
    return conn.execute(select(segment_members.c.user_pk).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id).limit(1)).first() is not None


def _insert_new_members(conn: Connection, workspace_id: int, seg: Compiled, now: int) -> int:
    """A segment without members yet and no events to record (a new one): its members in one INSERT of one
    array parameter (PostgreSQL unnest, SQLite json_each) rather than statements of 8,000 rows of bound values each (at
    1M customers those were a quarter of a new segment's first answer). The scan stays a plain SELECT: a
    data-modifying statement around it would keep it out of a parallel plan. Returns how many entered."""
    if seg.kind == "static" and seg.logic == rules.static_logic(seg.id, None):
        # exactly its imported customers (no filter rule): one INSERT ... SELECT of the import's rows, not a
        # scan of every customer whose answer comes back as an array and goes out again (6.7 s of a
        # 200,000-row import on PostgreSQL)
        return conn.execute(text(
            "INSERT INTO segment_member (workspace_id, segment_id, user_pk, since) "
            "SELECT sm.workspace_id, sm.segment_id, sm.user_pk, :now FROM static_member sm "
            "JOIN users u ON u.id = sm.user_pk AND u.workspace_id = sm.workspace_id "
            "WHERE sm.workspace_id = :ws AND sm.segment_id = :seg"),
            {"ws": workspace_id, "seg": seg.id, "now": now}).rowcount
    members = sorted(full_members(conn, workspace_id, seg, now))
    pks: list[int] | str = members
    source = "unnest(CAST(:pks AS BIGINT[])) m(pk)"
    if conn.dialect.name != "postgresql":  # SQLite: the same as one JSON array
        source, pks = "(SELECT value AS pk FROM json_each(:pks)) m", msgspec.json.encode(members).decode()
    conn.execute(text(f"INSERT INTO segment_member (workspace_id, segment_id, user_pk, since) "
                      f"SELECT :ws, :seg, m.pk, :now FROM {source}"),
                 {"ws": workspace_id, "seg": seg.id, "now": now, "pks": pks})
    return len(members)


def evaluate_many_full(conn: Connection, workspace_id: int, ids: set[str], now: int | None = None,
                       record_events: bool = True) -> dict[str, tuple[int, int]]:
    """Full evaluation of these segments and their dependents, dependencies first."""
    segs = with_dependents(workspace_segments(conn, workspace_id), ids)
    return {s.id: evaluate_full(conn, workspace_id, s, now, record_events=record_events or s.id not in ids)
            for s in segs}

