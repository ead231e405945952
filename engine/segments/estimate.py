"""The size the segment builder shows as a rule is typed, at any workspace size: exact up to a threshold
(200,000 customers unless TIDINGS_SEGMENT_ESTIMATE_ABOVE says otherwise), above it an estimate from a
sample, with its 95% interval, clearly marked as one. Saving the rule evaluates it in full as always:
the saved segment's size is exact.

The sample: every customer whose pk hashes below a fraction (sample / customers) of the hash range, a
Bernoulli sample that the database picks in one pass over the workspace's pk index. The hash is fixed, so
the same customers are sampled while a rule is typed (the size does not jitter between keystrokes), and
the rule is evaluated on their documents by the evaluator the write path uses (python_member), so an
estimate and a full evaluation differ only by sampling. The interval is Wilson's score interval for the
share of sampled customers who match, with the finite-population correction, times the customers."""
from __future__ import annotations

import math
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, func, select, text

from tidings.engine.customers.tables import users
from tidings.engine.platform.batching import chunks
from tidings.engine.platform.clock import now_ms
from tidings.engine.segments.documents import documents
from tidings.engine.segments.evaluate import (
    Compiled, _fetch_outcomes, compile_segment, full_evaluation_query, full_members, python_member,
)
from tidings.engine.segments.preview import UNSAVED
from tidings.engine.segments.service import validate_rule
from tidings.engine.workspaces.service import WorkspaceRef

EXACT_UP_TO = 200_000
SAMPLE = 5_000  # customers evaluated for an estimate: +-1.4% of the workspace at worst (95%)
Z95 = 1.959964
HASH_MULTIPLIER, HASH_RANGE = 2654435761, 2**32  # Knuth's multiplicative hash of the pk
BATCH = 1_000


class SizeEstimate(msgspec.Struct, kw_only=True):
    size: int  # exact, or the estimate
    exact: bool
    low: int  # the 95% interval (low == size == high when exact)
    high: int
    customers: int  # in the workspace
    evaluated: int  # customers the rule was evaluated on (all of them when exact)
    sample: list[str]  # a few members' user ids


def estimate_rule(db: Engine, workspace: WorkspaceRef, rule: Any, *, exact_up_to: int = EXACT_UP_TO,
                  sample_size: int = SAMPLE, examples: int = 10) -> SizeEstimate:
    """InvalidInput (field `rule`) for a rule that could not be saved."""
    now = now_ms()
    with db.begin() as conn:
        validate_rule(conn, workspace.id, UNSAVED, rule)
        seg = compile_segment(UNSAVED, "dynamic", rule)
        total = conn.execute(select(func.count()).select_from(users).where(users.c.workspace_id == workspace.id)).scalar_one()
        if total <= exact_up_to:
            members = sorted(full_members(conn, workspace.id, seg, now))
            return SizeEstimate(size=len(members), exact=True, low=len(members), high=len(members), customers=total,
                                evaluated=total, sample=_names(conn, members[:examples]))
        # a quarter at most of the customers (a low threshold, as in tests, is below the usual sample)
        below = math.ceil(HASH_RANGE * min(sample_size, max(1, total // 4)) / total)
        pks = list(conn.execute(text(
            f"SELECT id FROM users WHERE workspace_id = :ws AND (id * {HASH_MULTIPLIER}) % {HASH_RANGE} < :below "
            "ORDER BY id"), {"ws": workspace.id, "below": below}).scalars())
        hits = _sampled_members(conn, workspace.id, seg, now, pks)
        names = _names(conn, hits[:examples])
    n = len(pks)
    if n == 0:  # no customer hashed into a tiny sample: nothing known
        return SizeEstimate(size=0, exact=False, low=0, high=total, customers=total, evaluated=0, sample=[])
    low, high = wilson(len(hits), n, total)
    return SizeEstimate(size=round(total * len(hits) / n), exact=False, low=low, high=high, customers=total,
                        evaluated=n, sample=names)


def _sampled_members(conn: Connection, workspace_id: int, seg: Compiled, now: int, pks: list[int]) -> list[int]:
    """The sampled customers (`pks`, ascending) the rule holds for, in pk order. A rule over user-level paths
    is evaluated as a new segment's first answer is, by the direct evaluation of the users' JSON
    (segments.backfill.direct_source) kept to the sampled pks: evaluating 5,000 documents in Python, after
    fetching each, took more than a second at 1,000,000 customers. The rows SQL leaves unsure, and other
    rules, go to the evaluator of the write path (python_member): the hits are the same."""
    if seg.user_paths and pks:
        sample: tuple[str, dict[str, Any]]
        if conn.dialect.name == "postgresql":
            sample = ("u.id = ANY(CAST(:sample_pks AS BIGINT[]))", {"sample_pks": pks})
        else:  # one JSON array parameter: SQLite binds at most 32,766 parameters
            sample = ("u.id IN (SELECT value FROM json_each(:sample_pks))", {"sample_pks": msgspec.json.encode(pks).decode()})
        query, params, _ = full_evaluation_query(conn, workspace_id, seg, now, register=False, direct=True,
                                                 sample=sample)
        members, unsure = _fetch_outcomes(conn, query, params, big_scan=False)
        for part in chunks(sorted(unsure), BATCH):
            docs = documents(conn, workspace_id, list(part), seg.facts, now)
            members.update(pk for pk in part if pk in docs and python_member(seg, docs[pk]))
        return sorted(members)
    hits: list[int] = []
    for part in chunks(pks, BATCH):
        docs = documents(conn, workspace_id, list(part), seg.facts, now)
        hits += [pk for pk in part if pk in docs and python_member(seg, docs[pk])]
    return hits


def wilson(hits: int, n: int, population: int, z: float = Z95) -> tuple[int, int]:
    """The (low, high) count in `population` of Wilson's interval for hits/n, finite-population corrected."""
    p = hits / n
    # the finite-population correction scales z: a sample of everyone leaves no uncertainty
    z *= math.sqrt(max(0.0, (population - n) / (population - 1))) if population > 1 else 0.0
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0, math.floor(population * (centre - half))), min(population, math.ceil(population * (centre + half)))


def _names(conn, pks: list[int]) -> list[str]:
    if not pks:
        return []
    found = dict(conn.execute(select(users.c.id, users.c.user_id).where(users.c.id.in_(pks))).all())
    return [found[pk] for pk in pks if pk in found]
