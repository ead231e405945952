"""Journey workflows: the cohort interpreter, the per-journey admission loop and broadcasts.

Deterministic code only: time is `workflow.now()`, every read or write of the store happens in an
activity (engine/journeys/runtime/activities.py), called by name so this module never imports database or
plugin code. One cohort workflow carries a batch of customers through the graph together: each node
kind has one small method (see `HANDLERS`) that acts on the whole batch with one activity; a branch
splits the cohort into sub-cohorts walked concurrently inside the same workflow.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    import msgspec

    from tidings.engine.journeys import ir
    from tidings.engine.journeys.runtime.contracts import (
        ENTRIES_READY, AdmissionInput, AdmitCall, Admitted, BroadcastInput, CohortInput, CohortResult, Group,
        Member, PageCall, StepCall, StepResult, bucket, cohorts_finish_promptly,
    )

JOURNEY = SearchAttributeKey.for_keyword("TidingsJourney")
VERSION = SearchAttributeKey.for_int("TidingsJourneyVersion")
STEP = SearchAttributeKey.for_keyword_list("TidingsStep")
# set by Temporal on every workflow a Schedule starts: the nominal firing time (also for catch-up and backfill)
SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60))


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000)


def poll_interval(timeout_seconds: int) -> float:
    """How often a waiting cohort looks for the awaited events: every 5 to 30 s."""
    return max(5.0, min(30.0, timeout_seconds / 20))


def _replace(m: Member, **kw) -> Member:
    return msgspec.structs.replace(m, **kw)


@workflow.defn(name="JourneyCohort")
class JourneyCohortWorkflow:
    HANDLERS = {
        "send": "on_send", "wait": "on_wait", "wait_for": "on_wait_for", "split": "on_split",
        "random_split": "on_random_split", "holdout": "on_holdout", "exit": "on_exit",
    }

    def __init__(self) -> None:
        self.draining = False
        self.parked: list[Group] = []
        self.here: dict[str, int] = {}  # customers at each step right now
        # Visibility is written once per workflow task (before the cohort waits on anything), not at every
        # step boundary: each upsert is a history event and a visibility write on the server. Histories
        # recorded before this replay the old way.
        self.coalesce = False
        self.dirty = False  # coalesced visibility: changed since the last flush
        self.published: tuple | None = None

    @workflow.run
    async def run(self, inp: CohortInput) -> CohortResult:
        self.inp, self.ir = inp, inp.ir
        self.counts = dict(inp.counts)
        self.coalesce = workflow.patched("coalesced-visibility")
        if inp.visibility and not self.coalesce:
            workflow.upsert_search_attributes([JOURNEY.value_set(self.ir.id), VERSION.value_set(self.ir.version)])
        await asyncio.gather(*(self.walk(g.node, g.members) for g in inp.groups))
        if self.parked:
            self._flush()
            workflow.continue_as_new(msgspec.structs.replace(inp, groups=self.parked, counts=self.counts))
        self._publish()
        self._flush()
        return CohortResult(counts=self.counts)

    @workflow.query
    def positions(self) -> dict[str, int]:
        return {k: v for k, v in self.here.items() if v}

    # ---- the walk ------------------------------------------------------------------------

    async def walk(self, node_id: str, members: list[Member]) -> None:
        while members:
            if self.must_drain():
                self.parked.append(Group(node=node_id, members=members))
                return
            node = self.ir.nodes[node_id]
            kind = node.__struct_config__.tag
            if kind in ("send", "wait") and any(m.deadline is not None for m in members):
                by_deadline: dict[int, list[Member]] = {}
                for m in members:
                    by_deadline.setdefault(m.deadline or 0, []).append(m)
                if len(by_deadline) > 1:
                    await asyncio.gather(*(self.walk(node_id, g) for _, g in sorted(by_deadline.items())))
                    return
                if not await self.sleep_until(next(iter(by_deadline))):
                    self.parked.append(Group(node=node_id, members=members))
                    return
            fresh = sum(1 for m in members if m.deadline is None and m.since is None)
            self.arrive(node_id, len(members), fresh)
            routes = await getattr(self, self.HANDLERS[str(kind)])(node, members)
            # Not in a `finally`: when a worker stops, Temporal closes evicted workflows' coroutines outside
            # the workflow loop, where upserting search attributes raises.
            self.arrive(node_id, -len(members), 0)
            moves: list[tuple[str, list[Member]]] = []
            for target, ms in routes:
                if not ms:
                    continue
                if target != node_id or all(m.deadline is None and m.since is None for m in ms):
                    ms = [_replace(m, hops=m.hops + 1, deadline=None, since=None) for m in ms]
                moves.append((target, ms))
            if not moves:
                return
            if len(moves) == 1:
                node_id, members = moves[0]
                continue
            await asyncio.gather(*(self.walk(t, ms) for t, ms in moves))
            return

    def must_drain(self) -> bool:
        """Continue-as-new before the history grows large: every sub-cohort parks at its next boundary."""
        if not self.draining:
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() >= self.inp.history_limit:
                self.draining = True
        return self.draining

    async def sleep_until(self, deadline_ms: int) -> bool:
        """Sleep until the instant; False if the cohort must continue-as-new first (the caller parks)."""
        delta = deadline_ms - _ms(workflow.now())
        if delta <= 0:
            return True
        self._flush()
        try:
            await workflow.wait_condition(lambda: self.draining, timeout=timedelta(milliseconds=delta))
        except asyncio.TimeoutError:
            return True
        return False

    def arrive(self, node_id: str, delta: int, fresh: int) -> None:
        self.here[node_id] = self.here.get(node_id, 0) + delta
        if fresh:
            self.counts[node_id] = self.counts.get(node_id, 0) + fresh
        self._publish()

    def _publish(self) -> None:
        if self.coalesce:
            self.dirty = True
            return
        if not self.inp.visibility:
            return
        steps = sorted(k for k, v in self.here.items() if v > 0)
        workflow.upsert_search_attributes([STEP.value_set(steps)])
        workflow.upsert_memo({"steps": self.counts, "at": {k: self.here[k] for k in steps}})

    def _flush(self) -> None:
        """Write what changed since the last flush (coalesced visibility): called before every wait."""
        if not (self.inp.visibility and self.coalesce and self.dirty):
            return
        self.dirty = False
        steps = sorted(k for k, v in self.here.items() if v > 0)
        memo = {"steps": dict(self.counts), "at": {k: self.here[k] for k in steps}}
        if self.published is None:
            workflow.upsert_search_attributes([JOURNEY.value_set(self.ir.id), VERSION.value_set(self.ir.version),
                                               STEP.value_set(steps)])
        elif self.published[0] != steps:
            workflow.upsert_search_attributes([STEP.value_set(steps)])
        if self.published is None or self.published[1] != memo:
            workflow.upsert_memo(memo)
        self.published = (steps, memo)

    async def act(self, name: str, node: ir.Node, members: list[Member], **kw) -> StepResult:
        self._flush()
        call = StepCall(workspace_id=self.inp.workspace_id, journey_id=self.ir.id, version=self.ir.version,
                        workflow_id=workflow.info().workflow_id, settings=self.ir.settings, node=node,
                        members=members, now=_ms(workflow.now()), entry_event=self._entry_event(), **kw)
        # sends go to the send queue when the input names one (an input field: replays of older histories,
        # which have none, schedule on the workflow's queue as they did)
        queue = self.inp.send_queue if name == "journey.send" else None
        return await workflow.execute_activity(
            name, call, result_type=StepResult, start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=self.inp.heartbeat_seconds), retry_policy=RETRY,
            task_queue=queue)

    def _entry_event(self) -> str | None:
        return self.ir.entry.event if isinstance(self.ir.entry, ir.EventEntry) else None

    # ---- one method per node kind: (node, members) -> [(next node id, members)] ------------

    async def on_send(self, node: ir.SendNode, members: list[Member]):
        members = [_replace(m, deadline=None) for m in members]
        # A send followed by an exit (every journey's last send) finishes its customers' runs in the send's
        # own transaction: one activity, one workflow task and one write fewer per cohort.
        then = self.ir.nodes.get(node.next)  # by tag: under the test sandbox `ir` is a re-import of its own
        is_exit = then is not None and then.__struct_config__.tag == "exit"
        then_exit = then if is_exit and workflow.patched("send-then-exit") else None
        while True:
            res = await self.act("journey.send", node, members, then_exit=then_exit)
            if not res.paused:
                break
            self._flush()
            await workflow.sleep(self.inp.pause_poll_seconds)
        if then_exit is not None:
            done = res.routes.pop(node.next, [])
            if done:  # counted at the exit step, as if they had walked into it
                self.counts[node.next] = self.counts.get(node.next, 0) + len(done)
                self._publish()
        return [*res.routes.items(), (node.id, res.held)]

    async def on_wait(self, node: ir.WaitNode, members: list[Member]):
        now = _ms(workflow.now())
        woke = [m for m in members if m.deadline is not None and m.deadline <= now]
        if woke:
            return [(node.next, woke)]
        res = await self.act("journey.wait", node, members)  # marks the step, checks exits, plans wake-ups
        return [(node.id, res.routes.get(node.id, []))]

    async def on_wait_for(self, node: ir.WaitForNode, members: list[Member]):
        interval = self.inp.poll_seconds or poll_interval(node.timeout_seconds)
        while True:
            now = _ms(workflow.now())
            res = await self.act("journey.wait_for", node, members)
            members = res.waiting
            moved = [(t, ms) for t, ms in res.routes.items() if ms]
            if moved or not members:
                return [*moved, (node.id, members)]
            first = min(m.deadline or now for m in members)
            wake = min(first, now + int(interval * 1000))
            if not await self.sleep_until(wake):
                self.parked.append(Group(node=node.id, members=members))
                return []

    async def on_split(self, node: ir.SplitNode, members: list[Member]):
        res = await self.act("journey.split", node, members)
        return list(res.routes.items())

    async def on_random_split(self, node: ir.RandomSplitNode, members: list[Member]):
        routes: dict[str, list[Member]] = {}
        for m in members:
            point, acc, chosen = bucket(self.ir.id, m.user_pk, node.id), 0.0, node.branches[-1]
            for b in node.branches:
                acc += b.weight
                if point < acc:
                    chosen = b
                    break
            routes.setdefault(chosen.next, []).append(_replace(m, variant=chosen.variant, trail=[*m.trail, node.id]))
        return list(routes.items())

    async def on_holdout(self, node: ir.HoldoutNode, members: list[Member]):
        out: list[Member] = []
        keep: list[Member] = []
        for m in members:
            (out if bucket(self.ir.id, m.user_pk, node.id) < node.percent else keep).append(m)
        if out:
            await self.act("journey.finish", node, out)
        return [(node.next, [_replace(m, trail=[*m.trail, node.id]) for m in keep])]

    async def on_exit(self, node: ir.ExitNode, members: list[Member]):
        await self.act("journey.finish", node, members)
        return []


@workflow.defn(name="JourneyAdmission")
class JourneyAdmissionWorkflow:
    """One per event- or segment-triggered journey: claims queued entries in micro-batches and starts
    a cohort workflow for each batch. Ends when the journey is stopped.

    Idle, it sleeps on a long timer that the worker's entry watch cuts short with ENTRIES_READY when
    entries are ready (engine/journeys/runtime/admission.py): no activity is in flight while it waits. Histories
    recorded before ("admission-wake" not patched) long-poll in `journey.admit` instead."""

    def __init__(self) -> None:
        self.woken = False

    @workflow.signal(name=ENTRIES_READY)
    def entries_ready(self) -> None:
        self.woken = True

    @workflow.run
    async def run(self, inp: AdmissionInput) -> int:
        wake = workflow.patched("admission-wake")
        seq = inp.seq
        wf_id = workflow.info().workflow_id
        window = inp.window_seconds
        while True:
            seq += 1
            self.woken = False
            call = AdmitCall(workspace_id=inp.workspace_id, journey_id=inp.journey_id, claim_key=f"{wf_id}/{seq}",
                             limit=inp.limit, wait_seconds=inp.idle_seconds if wake else inp.wait_seconds,
                             window_seconds=window, wake=wake, now=_ms(workflow.now()))
            if wake:
                adm = await workflow.execute_activity(
                    "journey.admit", call, result_type=Admitted, start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=RETRY)
            else:
                adm = await workflow.execute_activity(
                    "journey.admit", call, result_type=Admitted,
                    start_to_close_timeout=timedelta(seconds=inp.wait_seconds + 120),
                    heartbeat_timeout=timedelta(seconds=10), retry_policy=RETRY)
            if adm.stopped:
                return seq
            if adm.members:
                await _start_cohort(inp.workspace_id, adm, inp.cohort_poll_seconds, inp.send_queue)
            window = inp.window_seconds
            if wake and len(adm.members) < inp.limit:  # the queue is drained: wait for the watch's signal
                idle = inp.idle_seconds * (0.75 + 0.25 * workflow.random().random())  # replays draw the same
                try:
                    await workflow.wait_condition(lambda: self.woken, timeout=timedelta(seconds=idle))
                except asyncio.TimeoutError:
                    pass
                # woken by the watch (it judged the window) or by the timer: claim what is queued now
                window = 0.0
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > 5_000:
                workflow.continue_as_new(msgspec.structs.replace(inp, seq=seq))


async def _start_cohort(workspace_id: int, adm: Admitted, poll_seconds: float | None,
                        send_queue: str | None) -> workflow.ChildWorkflowHandle | None:
    """Start the cohort's workflow; its handle (None when a retried broadcast or admission had started it)."""
    assert adm.ir is not None
    try:
        return await workflow.start_child_workflow(
            "JourneyCohort",
            CohortInput(workspace_id=workspace_id, ir=adm.ir, cohort=adm.cohort,
                        groups=[Group(node=adm.ir.start, members=adm.members)], poll_seconds=poll_seconds,
                        send_queue=send_queue),
            id=adm.workflow_id, parent_close_policy=workflow.ParentClosePolicy.ABANDON)
    except WorkflowAlreadyStartedError:
        return None  # a retried broadcast or admission: that cohort is already on its way


@workflow.defn(name="JourneyBroadcast")
class JourneyBroadcastWorkflow:
    """Snapshots the segment page by page and starts a cohort per page (up to `page_size` customers),
    with at most `cohorts_in_flight` cohorts unfinished at once when they finish promptly (no waits, no
    quiet hours: cohorts_finish_promptly): the worker holds each running cohort (its members, its sandbox)
    in memory, so a broadcast of any size costs the same memory. Histories from before ("broadcast-bounded"
    not patched) start every cohort at once, as they did."""

    @workflow.run
    async def run(self, inp: BroadcastInput) -> int:
        info = workflow.info()
        wf_id = info.workflow_id
        after, page, started = inp.after_pk, inp.page, inp.started
        fire_at = inp.fire_at
        if fire_at is None:  # `timezone: customer` admits the zones due at this instant
            scheduled = info.typed_search_attributes.get(SCHEDULED_AT)
            fire_at = _ms(scheduled) if scheduled is not None else _ms(info.start_time) // 60_000 * 60_000
        fired_at = inp.fired_at
        if fired_at is None:
            scheduled = info.typed_search_attributes.get(SCHEDULED_AT)
            fired_at = _ms(scheduled) if scheduled is not None else _ms(info.start_time)
        bounded = inp.cohorts_in_flight > 0 and workflow.patched("broadcast-bounded")
        running: list[asyncio.Task] = []  # a list, not a set: workflow.wait keeps its order on every replay
        while True:
            page += 1
            adm = await workflow.execute_activity(
                "journey.broadcast_page", PageCall(workspace_id=inp.workspace_id, journey_id=inp.journey_id,
                                                   version=inp.version, claim_key=f"{wf_id}/{page}",
                                                   after_pk=after, limit=inp.page_size, fire_at=fire_at,
                                                   local_zones=inp.local_zones, now=fired_at),
                result_type=Admitted, start_to_close_timeout=timedelta(minutes=5), retry_policy=RETRY)
            if adm.members:
                handle = await _start_cohort(inp.workspace_id, adm, None, inp.send_queue)
                started += len(adm.members)
                if bounded and handle is not None and adm.ir is not None and cohorts_finish_promptly(adm.ir):
                    running.append(handle)
            if adm.next_after is None or adm.stopped:
                return started
            after = adm.next_after
            info = workflow.info()
            if bounded:
                await _at_most(running, inp.cohorts_in_flight - 1)  # room for the next page's cohort
                if info.get_current_history_length() > 5_000 or info.get_current_history_size() > inp.history_bytes:
                    await _at_most(running, 0)  # the next run cannot wait on this one's cohorts
                    workflow.continue_as_new(msgspec.structs.replace(inp, after_pk=after, page=page,
                                                                     started=started, fire_at=fire_at,
                                                                     fired_at=fired_at))
            elif info.get_current_history_length() > 5_000:
                workflow.continue_as_new(msgspec.structs.replace(inp, after_pk=after, page=page, started=started,
                                                                 fire_at=fire_at, fired_at=fired_at))


async def _at_most(running: list[asyncio.Task], limit: int) -> None:
    """Wait until at most `limit` of the cohorts are unfinished. A failed cohort counts as finished: its
    customers' runs say what happened, and the broadcast goes on."""
    while len(running) > max(0, limit):
        await workflow.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in [t for t in running if t.done()]:
            running.remove(task)
            if not task.cancelled():
                task.exception()  # retrieved: a failed cohort does not fail the broadcast
