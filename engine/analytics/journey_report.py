"""A journey's report: the funnel (entered, sent per send step, goal reached), counts per step, channel
and A/B variant, the holdout's share and the lift against it, and why customers were not sent to.

Nothing here is counted twice or anew: it puts together what the engine already records and what the
metrics already compute. Runs (journey_run: one per entry, with the steps taken and each send step's
outcome) give entered, waiting, ended, sent and the reasons for not sending (quiet hours, frequency cap,
opted out, no endpoint, render failure, provider failure); admissions (journey_cohort.refused) give the
entries turned away before a run began (already in the journey, entry limit, minimum interval, entry
filter); message events and goal attribution (tidings.engine.analytics.metrics.journey_metrics) give
messages delivered, opened, clicked, conversions, the control group's conversion and the lift.

Used by the console's journey page and GET /v1/journeys/{id}/report.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any

import msgspec
from sqlalchemy import Engine, func, select

from tidings.engine.analytics import metrics as mx
from tidings.engine.journeys import counts as journey_counts
from tidings.engine.journeys import store
from tidings.engine.journeys.ir import JourneyIR, SendNode
from tidings.engine.journeys.tables import journey_cohorts, journey_runs
from tidings.engine.platform.db import reading
from tidings.engine.workspaces.service import WorkspaceRef

# Send-step outcomes that are not a send, in the order a reader meets them.
NOT_SENT = ("quiet_hours", "quiet_hours_hold", "sending_hours_hold", "frequency_cap", "opted_out", "no_endpoint", "render_failed",
            "failed", "retrying")
MESSAGE_COUNTS = ("sent", "delivered", "failed", "bounced", "complained", "opened", "clicked", "unsubscribed")


class FunnelStage(msgspec.Struct, kw_only=True):
    stage: str  # entered | sent | goal
    step_id: str | None = None  # the send step, for `sent`
    customers: int
    # of the customers who entered (None when nobody did)
    share: float | None = None


class Messages(msgspec.Struct, kw_only=True):
    """Distinct messages per outcome (sent, delivered, opened, ...), and customers converted."""
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    complained: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    customers_sent: int = 0
    converted: int = 0  # customers whose goal event followed a message of this group within the window
    conversion_rate: float | None = None  # converted / customers_sent


class StepReport(msgspec.Struct, kw_only=True):
    step_id: str
    kind: str  # send, wait, wait_for, split, random_split, holdout, exit
    entered: int  # runs that reached the step
    waiting: int  # active runs on it now
    ended: int  # runs that ended on it
    sent: int  # runs it sent to (send steps)
    not_sent: dict[str, int]  # runs it did not send to, by reason (send steps)
    messages: Messages | None = None  # send steps: what became of their messages


class GroupReport(msgspec.Struct, kw_only=True):
    name: str | None  # the channel or variant (None: sends outside any A/B split)
    messages: Messages


class Holdout(msgspec.Struct, kw_only=True):
    """The control group (runs that ended at a holdout step) against the customers sent to."""
    customers: int  # held out
    rate: float | None  # held out / entered
    converted: int  # held-out customers whose goal event came within the window
    conversion_rate: float | None
    treated: int  # customers sent at least one message
    treated_converted: int
    treated_conversion_rate: float | None
    lift: float | None  # (treated rate - control rate) / control rate


class Goal(msgspec.Struct, kw_only=True):
    event: str
    within_seconds: int


class JourneyReport(msgspec.Struct, kw_only=True):
    journey_id: str
    version: int | None  # None: every version
    status: str
    entered: int  # runs (one per entry)
    active: int
    completed: int
    exited: int
    held_out: int
    goal: Goal | None
    funnel: list[FunnelStage]
    steps: list[StepReport]
    channels: list[GroupReport]
    variants: list[GroupReport]
    holdout: Holdout
    not_sent: dict[str, int]  # over every send step, by reason
    refused_at_admission: dict[str, int]  # entries turned away before a run began, by reason
    exit_reasons: dict[str, int]  # runs that exited or completed at an exit step, by reason


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _messages(m: dict[str, dict[str, int]]) -> Messages:
    counts = {k: m[k]["messages"] for k in MESSAGE_COUNTS}
    sent_to, converted = m["sent"]["customers"], m["converted"]["customers"]
    return Messages(**counts, customers_sent=sent_to, converted=converted,
                    conversion_rate=_ratio(converted, sent_to))


def step_order(ir: JourneyIR) -> list[str]:
    """The steps breadth-first from the start (the order they are drawn and read), unreachable ones last."""
    seen = {ir.start: None}
    queue = deque([ir.start])
    while queue:
        for nxt in ir.successors(queue.popleft()):
            if nxt not in seen and nxt in ir.nodes:
                seen[nxt] = None
                queue.append(nxt)
    return [*seen, *(n for n in ir.nodes if n not in seen)]


def _kind(node: Any) -> str:
    return str(type(node).__struct_config__.tag or "")


def journey_report(db: Engine, workspace: WorkspaceRef, journey_id: str, version: int | None = None) -> JourneyReport:
    """NotFound for a journey (or version) this workspace does not have."""
    info = store.get_journey(db, workspace, journey_id)
    ir = store.get_ir(db, workspace, journey_id, version)
    metrics = mx.journey_metrics(db, workspace, journey_id, version=version)
    steps = journey_counts.step_counts(db, workspace, journey_id, version)
    statuses, exits, refused = _runs_and_admissions(db, workspace, journey_id, version)
    entered = sum(statuses.values())

    by_step = {row["step_id"]: row["metrics"] for row in metrics["steps"]}
    order = step_order(ir)
    reports, funnel = [], [FunnelStage(stage="entered", customers=entered, share=1.0 if entered else None)]
    not_sent: Counter[str] = Counter()
    for step_id in order:
        node, c = ir.nodes[step_id], steps.get(step_id)
        outcomes = dict(c.outcomes) if c else {}
        sent = outcomes.pop("sent", 0)
        not_sent.update(outcomes)
        is_send = isinstance(node, SendNode)
        reports.append(StepReport(
            step_id=step_id, kind=_kind(node), entered=c.entered if c else 0, waiting=c.waiting if c else 0,
            ended=c.ended if c else 0, sent=sent, not_sent=_ordered(outcomes),
            messages=_messages(by_step.get(step_id) or mx._empty()) if is_send else None))
        if is_send:
            funnel.append(FunnelStage(stage="sent", step_id=step_id, customers=sent, share=_ratio(sent, entered)))

    goal = metrics["goal"]
    totals = metrics["totals"]["metrics"]
    if goal:
        reached = totals["converted"]["customers"]
        funnel.append(FunnelStage(stage="goal", customers=reached, share=_ratio(reached, entered)))
    control = metrics["control"]
    holdout = Holdout(customers=statuses.get("held_out", 0), rate=_ratio(statuses.get("held_out", 0), entered),
                      converted=control["converted"], conversion_rate=control["rate"],
                      treated=totals["sent"]["customers"], treated_converted=totals["converted"]["customers"],
                      treated_conversion_rate=metrics["treatment_rate"], lift=metrics["lift"])
    return JourneyReport(
        journey_id=journey_id, version=version, status=info.status, entered=entered,
        active=statuses.get("active", 0), completed=statuses.get("completed", 0), exited=statuses.get("exited", 0),
        held_out=statuses.get("held_out", 0),
        goal=Goal(event=goal["event"], within_seconds=goal["within_seconds"]) if goal else None,
        funnel=funnel, steps=reports,
        channels=[GroupReport(name=r["channel"], messages=_messages(r["metrics"])) for r in metrics["channels"]],
        variants=[GroupReport(name=r["variant"], messages=_messages(r["metrics"])) for r in metrics["variants"]],
        holdout=holdout, not_sent=_ordered(not_sent), refused_at_admission=refused, exit_reasons=exits)


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    known = [k for k in NOT_SENT if counts.get(k)]
    return {k: counts[k] for k in [*known, *sorted(k for k in counts if k not in NOT_SENT and counts[k])]}


def _runs_and_admissions(db: Engine, workspace: WorkspaceRef, journey_id: str, version: int | None):
    """(runs by status, exit reasons of runs that exited or completed at an exit step, refusals by reason)."""
    runs = select(journey_runs.c.status, journey_runs.c.exit_reason, func.count().label("n")).where(
        journey_runs.c.workspace_id == workspace.id, journey_runs.c.journey_id == journey_id)
    cohorts = select(journey_cohorts.c.refused).where(journey_cohorts.c.workspace_id == workspace.id,
                                                      journey_cohorts.c.journey_id == journey_id,
                                                      journey_cohorts.c.refused.is_not(None))
    if version is not None:
        runs = runs.where(journey_runs.c.version == version)
        cohorts = cohorts.where(journey_cohorts.c.version == version)
    statuses: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    with reading(db) as conn:
        for status, reason, n in conn.execute(runs.group_by(journey_runs.c.status, journey_runs.c.exit_reason)):
            statuses[status] += n
            if reason and status in ("exited", "completed"):
                exits[reason] += n
        for (found,) in conn.execute(cohorts):
            refused.update({k: int(v) for k, v in (found or {}).items() if isinstance(v, int) and v})
    return statuses, dict(sorted(exits.items())), dict(sorted(refused.items()))
