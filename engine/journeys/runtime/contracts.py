"""Messages between the journey workflows and their activities (pure msgspec: safe in workflow code).

A cohort is a batch of customers walking a journey's graph together. Each `Member` carries what its
own run needs to be reproduced exactly: when it entered, the entry event (for filters and
`correlate`), the A/B variant it drew, the number of steps it has taken (`hops`, part of every
idempotency key) and, while it waits, its own wake-up instant (`deadline`, workflow time).
"""
from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from tidings.engine.journeys.ir import JourneyIR, Node, Settings
from tidings.engine.platform.installation import scoped


class Member(msgspec.Struct, kw_only=True, omit_defaults=True):
    user_pk: int
    run_id: int  # journey_run.id
    entered_at: int  # epoch ms (wall clock at admission)
    entry: dict[str, Any] = {}  # the entry event: {name, attributes, metrics, ts}; {} for broadcasts
    variant: str | None = None
    hops: int = 0  # steps taken so far: makes idempotency keys unique when a loop revisits a step
    deadline: int | None = None  # epoch ms (workflow time) this member waits until, at its current node
    since: int | None = None  # wait_for: wall-clock ms the wait started (events after it count)
    trail: list[str] = []  # steps taken but not yet written to journey_run


class Group(msgspec.Struct, kw_only=True):
    node: str
    members: list[Member]


class CohortInput(msgspec.Struct, kw_only=True):
    workspace_id: int
    ir: JourneyIR
    cohort: int
    groups: list[Group]
    counts: dict[str, int] = {}  # customers that reached each step (memo), carried over continue-as-new
    poll_seconds: float | None = None  # wait_for poll interval; default max(5, min(30, timeout/20))
    pause_poll_seconds: float = 60.0
    history_limit: int = 10_000  # continue-as-new once the history is this long (or when Temporal suggests)
    heartbeat_seconds: float = 10.0  # a killed worker's activity is retried elsewhere after this long
    visibility: bool = True  # upsert search attributes and memo (the time-skipping test server has none)
    # The task queue of its send steps (`journey.send`): every worker process polls it with a bound on the
    # sends it holds at once (TIDINGS_WORKER_MAX_COHORTS), so a broadcast's cohorts spread over the
    # processes. None: on the workflow's own queue (inputs from before, and test workers polling one queue).
    send_queue: str | None = None


class CohortResult(msgspec.Struct, kw_only=True):
    counts: dict[str, int]
    continued: int = 0


class StepCall(msgspec.Struct, kw_only=True):
    """One activity call: a node acting on a batch of members."""

    workspace_id: int
    journey_id: str
    version: int
    workflow_id: str
    settings: Settings
    node: Node
    members: list[Member]
    now: int  # workflow time, epoch ms (schedules are computed from it, so replays agree)
    entry_event: str | None = None
    final: bool = False  # wait_for: the last poll, at the timeout
    then_exit: Node | None = None  # send: the exit node that follows; its runs end in the send's transaction


class StepResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Members routed by target node id; `None` key is not allowed, so `held` carries quiet-hour holds."""

    routes: dict[str, list[Member]] = {}
    held: list[Member] = []  # stay at this node until their deadline (quiet hours)
    waiting: list[Member] = []  # wait_for: nothing yet
    paused: bool = False  # the journey is paused: try again later


class AdmitCall(msgspec.Struct, kw_only=True):
    workspace_id: int
    journey_id: str
    claim_key: str
    limit: int = 500
    # long-poll: return at once when entries exist, else after this long; with `wake`: how long the
    # workflow sleeps at most, which is how long the registration with the entry watch lasts
    wait_seconds: float = 20.0
    window_seconds: float = 0.0  # claim once the oldest queued entry is this old (or `limit` are queued)
    # Return at once (never long-poll): with nothing to claim, the worker's entry watch signals the
    # admission workflow (ENTRIES_READY) when there is. Histories from before it send False.
    wake: bool = False
    now: int | None = None  # workflow time (epoch ms): after the journey's `ends_at` nobody is admitted


# The signal the worker's entry watch (engine/journeys/runtime/admission.py) sends an idle admission workflow
# when its journey has entries ready to claim, or was stopped.
ENTRIES_READY = "entries_ready"


class BroadcastInput(msgspec.Struct, kw_only=True):
    workspace_id: int
    journey_id: str
    version: int
    page_size: int = 1000
    after_pk: int = 0
    page: int = 0
    started: int = 0
    # `timezone: customer`: the firing instant (epoch ms) whose due zones enter; None = the schedule's
    # nominal time (TemporalScheduledStartTime) or the start time
    fire_at: int | None = None
    # Set only by the grid schedule of a `timezone: customer` broadcast: admit only the zones due at
    # fire_at. Schedules made before customer zones existed fired in UTC and start without it, so their
    # firings keep admitting everyone instead of silently narrowing to the zones at UTC+0.
    local_zones: bool = False
    send_queue: str | None = None  # given to every cohort it starts (CohortInput.send_queue)
    # The instant of this firing (epoch ms, workflow time: the schedule's nominal time, else the start),
    # carried over continue-as-new: a firing at or after the journey's `ends_at` admits nobody
    fired_at: int | None = None
    # At most this many of its cohorts unfinished at once (the next page waits): a broadcast's memory in the
    # worker and the server is the same at 1,000 or 1,000,000 customers. Four times a worker's send bound
    # (TIDINGS_WORKER_MAX_COHORTS, 8) keeps the send queue full for up to four worker processes. 0: no bound.
    # Only journeys whose cohorts finish promptly are bounded (cohorts_finish_promptly).
    cohorts_in_flight: int = 32
    # Its own history holds every page it read and every cohort input it started (a 1,000-customer page is
    # ~100 kB): past this size it waits for its cohorts and continues as new, well under the server's 50 MB.
    history_bytes: int = 16 * 1024 * 1024


class PageCall(msgspec.Struct, kw_only=True):
    workspace_id: int
    journey_id: str
    version: int
    claim_key: str
    after_pk: int
    limit: int
    fire_at: int | None = None  # see BroadcastInput
    local_zones: bool = False  # see BroadcastInput
    now: int | None = None  # BroadcastInput.fired_at


class Admitted(msgspec.Struct, kw_only=True):
    """A cohort the store has recorded: start its workflow with this id."""

    cohort: int = 0
    workflow_id: str = ""
    ir: JourneyIR | None = None
    members: list[Member] = []
    next_after: int | None = None  # broadcast: the next page starts after this user_pk; None = done
    stopped: bool = False  # the journey is no longer active: the admission loop ends


class AdmissionInput(msgspec.Struct, kw_only=True):
    workspace_id: int
    journey_id: str
    seq: int = 0
    limit: int = 500
    wait_seconds: float = 20.0
    # Entries gather this long before a cohort starts (the oldest waits at most this much more): under a
    # steady stream a cohort per HTTP batch of 100 cost Temporal ~45 ms of CPU per cohort, 0.45 ms per mail.
    window_seconds: float = 0.25
    cohort_poll_seconds: float | None = None
    # Idle, the workflow sleeps up to this long (spread over its last quarter, so journeys activated
    # together do not wake together) unless the entry watch signals first: the timer is a safety net.
    idle_seconds: float = 600.0
    send_queue: str | None = None  # given to every cohort it starts (CohortInput.send_queue)


def cohorts_finish_promptly(j: JourneyIR) -> bool:
    """Whether the journey's cohorts end as soon as their steps have run: no `wait` or `wait_for` step and no
    quiet hours or sending hours to hold them. Only such broadcasts bound their cohorts in flight (a cohort that sleeps for two
    days would hold the next page back for two days); the others start every page's cohort at once."""
    sleeping = {"wait", "wait_for"}
    return j.settings.quiet_hours is None and j.settings.sending_hours is None and not any(
        n.__struct_config__.tag in sleeping for n in j.nodes.values())  # by tag: the test sandbox re-imports ir


def bucket(journey_id: str, user_pk: int, step_id: str) -> float:
    """A stable number in [0, 100) for (journey, customer, step): random splits and holdouts use it,
    so a customer draws the same branch in a cohort as in a run of their own, on every replay."""
    digest = hashlib.sha256(f"{journey_id}\x1f{user_pk}\x1f{step_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 / 10_000


# Temporal ids start with the installation token (tidings.engine.platform.installation), so installations sharing a
# namespace never meet; workflows learn their own ids from Temporal, activities and the store pass the token.
def cohort_workflow_id(installation: str, workspace_id: int, journey_id: str, version: int, cohort: int) -> str:
    return scoped(installation, f"journey/{workspace_id}/{journey_id}/v{version}/cohort/{cohort}")


def admission_workflow_id(installation: str, workspace_id: int, journey_id: str) -> str:
    return scoped(installation, f"journey/{workspace_id}/{journey_id}/admission")


def broadcast_workflow_id(installation: str, workspace_id: int, journey_id: str, version: int) -> str:
    return scoped(installation, f"journey/{workspace_id}/{journey_id}/v{version}/broadcast")


def schedule_id(installation: str, workspace_id: int, journey_id: str, version: int) -> str:
    return scoped(installation, f"journey/{workspace_id}/{journey_id}/v{version}/schedule")


def idempotency_key(workflow_id: str, step_id: str, member: Member) -> str:
    """Per workflow, step and customer (and visit, for loops): retries of a send reuse it."""
    return f"{workflow_id}/{step_id}/{member.user_pk}/{member.run_id}/{member.hops}"
