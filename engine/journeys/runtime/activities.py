"""Journey activities: every read and write the journey workflows need, each acting on a whole batch.

Activities are registered by name ("journey.send", ...) so the workflow module never imports this one.
Event-time comparisons ("did it happen after the customer entered / started waiting") use the
store's own clock (`received_at`); schedules (quiet hours, `until_time`) use the workflow time the
call carries, so replays and time-skipping tests agree.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import msgspec
from sqlalchemy import Engine, insert, select, update
from temporalio import activity

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import bulk_insert, bulk_update, reading, rows_where_in, writing
from tidings.engine.platform.installation import installation_id
from tidings.engine.platform.metrics_registry import JOURNEY_ADMISSION_LAG
from tidings.engine.journeys.runtime import admission
from tidings.engine.journeys import ir
from tidings.engine.journeys.runtime import audience, localtime
from tidings.engine.journeys.runtime.localtime import in_quiet_hours, next_local, next_open
from tidings.engine.journeys.runtime.contracts import (
    AdmitCall, Admitted, Member, PageCall, StepCall, StepResult, cohort_workflow_id, idempotency_key,
)
from tidings.engine.journeys.runtime.rules import event_doc, holds
from tidings.engine.journeys.tables import journey_cohorts, journey_entries, journey_runs, journey_versions, journeys
from tidings.engine.messaging.ledger import journey_event_names, journey_message_event_names, sends_since
from tidings.engine.messaging.custom_channel import CustomSend, native_channels
from tidings.engine.messaging.dispatch import JourneySend, send_journey_step
from tidings.engine.messaging.tables import messages
from tidings.engine.customers.tables import users
from tidings.engine.customers import on_write as changes
from tidings.engine.customers.events import events_of, insert_new
from tidings.engine.segments.documents import documents


# A member whose message another attempt of this send is handing over right now looks again this much later.
IN_FLIGHT_ELSEWHERE_MS = 10_000


class JourneyActivities:
    def __init__(self, db: Engine, settings=None, plugins=None):
        from tidings.engine.channels.config import load_plugins

        self.db, self.settings = db, settings
        self.plugins = plugins if plugins is not None else load_plugins()  # once per worker, not per send
        self._irs: dict[tuple[int, str, int], ir.JourneyIR] = {}
        self._zone_filters: dict[tuple, Any] = {}  # per firing: computed on its first page, not on every page
        self.entry_watch = admission.EntryWatch(db)  # wakes this worker's idle admission workflows

    def all(self) -> list:
        return [self.send, self.wait, self.wait_for, self.split, self.finish, self.admit, self.broadcast_page]

    # ---- shared pieces -------------------------------------------------------------------

    def _status(self, conn, workspace: int, journey_id: str) -> str | None:
        return conn.execute(select(journeys.c.status).where(journeys.c.workspace_id == workspace,
                                                            journeys.c.journey_id == journey_id)).scalar()

    def _exits(self, conn, call: StepCall, members: list[Member]) -> dict[int, str]:
        """run_id -> reason, for members an exit criterion (or a stopped journey) takes out."""
        crit = call.settings.exit
        if not crit or not members:
            return {}
        matches = {id(c): set(journey_event_names(c.event, c.names)) for c in crit if isinstance(c, ir.EventExit)}
        names = set().union(*matches.values())
        if any(isinstance(c, ir.SegmentExit) for c in crit):
            names.add("_segment.exit")
        found = events_of(conn, call.workspace_id, [m.user_pk for m in members], names,
                             min(m.entered_at for m in members))
        out: dict[int, str] = {}
        for m in members:
            for ev in found.get(m.user_pk, []):
                if ev["received_at"] < m.entered_at:
                    continue
                for c in crit:
                    if isinstance(c, ir.EventExit) and ev["name"] in matches[id(c)] and holds(
                            c.filter, {"event": event_doc(ev["name"], ev["attributes"], ev["metrics"], ev["ts"])}):
                        out[m.run_id] = f"event {c.event}"
                    elif isinstance(c, ir.SegmentExit) and ev["name"] == "_segment.exit" and \
                            ev["attributes"].get("segment_id") == c.segment:
                        out[m.run_id] = f"left segment {c.segment}"
                if m.run_id in out:
                    break
        return out

    def _mark(self, conn, call: StepCall, members: list[Member], *, outcomes: dict[int, str] | None = None,
              status: str | None = None, reasons: dict[int, str] | None = None, variant: bool = True) -> None:
        """Record in journey_run that `members` took (or are at) call.node: steps, current step, status."""
        if not members:
            return
        now = now_ms()
        current = {r[0]: r[1] for r in rows_where_in(conn, journey_runs, ["id", "steps"], "id",
                                                     [m.run_id for m in members])}
        rows = []
        for m in members:
            steps = list(current.get(m.run_id) or [])
            seen = {(s.get("step"), s.get("hop")) for s in steps}
            for i, past in enumerate(m.trail):
                key = (past, m.hops - len(m.trail) + i)
                if key not in seen:
                    steps.append({"step": past, "hop": key[1]})
            if (call.node.id, m.hops) not in seen:
                steps.append({"step": call.node.id, "hop": m.hops, "at": now})
            if outcomes and m.run_id in outcomes:
                for s in steps:
                    if (s.get("step"), s.get("hop")) == (call.node.id, m.hops):
                        s["outcome"] = outcomes[m.run_id]
            row = {"steps": steps, "current_step": call.node.id, "updated_at": now, "variant": m.variant,
                   "id": m.run_id}
            if status:
                row = {**row, "status": status, "exit_reason": (reasons or {}).get(m.run_id)}
            rows.append(row)
        for shape in {tuple(r) for r in rows}:
            bulk_update(conn, journey_runs, [r for r in rows if tuple(r) == shape])

    def _drop_exits(self, conn, call: StepCall, members: list[Member], stopped: bool) -> list[Member]:
        reasons = {m.run_id: "journey stopped" for m in members} if stopped else self._exits(conn, call, members)
        gone = [m for m in members if m.run_id in reasons]
        if gone:
            self._mark(conn, call, gone, status="exited", reasons=reasons)
        return [m for m in members if m.run_id not in reasons]

    def _zones(self, conn, call: StepCall, members: list[Member]) -> dict[int, str]:
        found = dict(rows_where_in(conn, users, ["id", "timezone"], "id", [m.user_pk for m in members]))
        return {m.user_pk: found.get(m.user_pk) or call.settings.default_timezone for m in members}

    # ---- node activities -----------------------------------------------------------------

    @activity.defn(name="journey.send")
    async def send(self, call: StepCall) -> StepResult:
        node: ir.SendNode = call.node  # type: ignore[assignment]
        prep = await asyncio.to_thread(self._send_prepare, call)
        if isinstance(prep, StepResult):
            return prep
        go, skipped, held, sends = prep
        outcomes = {m.run_id: why for m, why in skipped}
        retrying: list[Member] = []
        if go:
            beat = asyncio.create_task(_heartbeat_forever())
            try:
                results = await send_journey_step(self.db, self.plugins, self.settings, call.workspace_id,
                                                  channel_type=node.channel, template_id=node.template,
                                                  data=dict(node.data), sends=sends, journey_id=call.journey_id,
                                                  journey_version=call.version, step_id=node.id,
                                                  custom=_custom_send(call, node))
            finally:
                beat.cancel()
            go, retrying = self._route_outcomes(call, go, results, outcomes)
            held = held + retrying
        moving = go + [m for m, _ in skipped]

        def record(conn) -> None:
            self._mark(conn, call, moving + retrying, outcomes=outcomes)
            if call.then_exit is not None:  # the exit that follows, as journey.finish would record it
                self._finish(conn, msgspec.structs.replace(call, node=call.then_exit, then_exit=None),
                             [msgspec.structs.replace(m, hops=m.hops + 1, trail=[]) for m in moving])

        await asyncio.to_thread(self._in_txn, record)
        return StepResult(routes={node.next: [msgspec.structs.replace(m, trail=[]) for m in moving]}, held=held)

    @staticmethod
    def _route_outcomes(call: StepCall, go: list[Member], results, outcomes: dict[int, str]):
        """(members who move on, members whose message is still being retried). The latter stay at this
        send step until the next attempt is due (a deadline, as quiet hours hold): the workflow brings them
        back then and this activity resumes their messages, so a dead provider holds no worker thread and
        no other member of the cohort. They wait together, until the last of their next attempts."""
        by_pk = {o.user_pk: o for o in results}
        moving, retrying, due = [], [], []
        for m in go:
            o = by_pk.get(m.user_pk)
            status = (o.prior or o.status) if o and o.status == "duplicate" else (o.status if o else "failed")
            outcomes[m.run_id] = status
            if status == "retrying":
                retrying.append(m)
                due.append(o.retry_at or now_ms() + IN_FLIGHT_ELSEWHERE_MS)
            else:
                moving.append(m)
        if not retrying:
            return moving, []
        deadline = call.now + max(0, max(due) - now_ms())  # workflow time, as the workflow sleeps on it
        return moving, [msgspec.structs.replace(m, deadline=deadline, trail=[]) for m in retrying]

    def _in_txn(self, fn):
        with writing(self.db) as conn:
            return fn(conn)

    def _outside_quiet_hours(self, conn, call: StepCall, go: list[Member], skipped: list[tuple[Member, str]],
                             held: list[Member]) -> list[Member]:
        """The members outside their local quiet hours; the others are skipped or held until the hours end."""
        zones = self._zones(conn, call, go)
        q, keep = call.settings.quiet_hours, []
        for m in go:
            if not in_quiet_hours(call.now, zones[m.user_pk], q.start, q.end):
                keep.append(m)
            elif q.action == "skip":
                skipped.append((m, "quiet_hours"))
            else:
                held.append(msgspec.structs.replace(m, deadline=next_local(call.now, zones[m.user_pk], q.end,
                                                                          inclusive=True)))
        return keep

    def _within_sending_hours(self, conn, call: StepCall, go: list[Member], held: list[Member]) -> list[Member]:
        """The members whose channel may send now (settings.sending_hours); the others are held until it may."""
        hours = call.settings.sending_hours
        channel = call.node.channel  # type: ignore[union-attr]
        days, closed = hours.open.get(channel), hours.closed.get(channel, [])
        if days is None and not closed:
            return go
        zones = self._zones(conn, call, go) if hours.timezone == "customer" else {}
        keep = []
        for m in go:
            opens = next_open(call.now, zones.get(m.user_pk, hours.timezone), days, closed)
            (keep.append(m) if opens is None else held.append(msgspec.structs.replace(m, deadline=opens)))
        return keep

    @staticmethod
    def _under_frequency_cap(conn, call: StepCall, go: list[Member], skipped: list[tuple[Member, str]]) -> list[Member]:
        """The members sent fewer messages than the cap within its window; the others are skipped."""
        cap = call.settings.frequency_cap
        # messages are stamped with the wall clock when sent, so the window is wall-clock too
        # (under a time-skipping test server a cap does not expire as workflow time moves)
        counts = sends_since(conn, call.workspace_id, [m.user_pk for m in go], now_ms() - cap.per_seconds * 1000)
        keep = []
        for m in go:
            (keep.append(m) if counts.get(m.user_pk, 0) < cap.messages else skipped.append((m, "frequency_cap")))
        return keep

    def _send_prepare(self, call: StepCall):
        s = call.settings
        with writing(self.db) as conn:
            status = self._status(conn, call.workspace_id, call.journey_id)
            if status == "paused":
                return StepResult(paused=True)
            members = self._drop_exits(conn, call, call.members, status in (None, "stopped"))
            kept = {m.run_id for m in members}
            self._give_up_retrying(conn, call, [m for m in call.members if m.run_id not in kept],
                                   "the customer left the journey while it was being retried")
            skipped: list[tuple[Member, str]] = []
            held: list[Member] = []
            go = members
            if s.quiet_hours and go:
                go = self._outside_quiet_hours(conn, call, go, skipped, held)
            quiet_held = len(held)
            if s.sending_hours and go:
                go = self._within_sending_hours(conn, call, go, held)
            if s.frequency_cap and go:
                go = self._under_frequency_cap(conn, call, go, skipped)
            # A member parked here (its message retrying) and skipped on coming back moves on without it
            self._give_up_retrying(conn, call, [m for m, _ in skipped], "skipped when it was due again "
                                   "(quiet hours or the frequency cap)")
            if held:
                self._mark(conn, call, held, outcomes={m.run_id: "quiet_hours_hold" if i < quiet_held else
                                                       "sending_hours_hold" for i, m in enumerate(held)})
        node: ir.SendNode = call.node  # type: ignore[assignment]
        sends = [JourneySend(user_pk=m.user_pk, idempotency_key=idempotency_key(call.workflow_id, node.id, m),
                             variant=m.variant, data={**node.data, "event": m.entry.get("attributes", {})})
                 for m in go]
        return go, skipped, [msgspec.structs.replace(m, trail=[]) for m in held], sends

    def _give_up_retrying(self, conn, call: StepCall, gone: list[Member], why: str) -> None:
        """Members not sent to by this call (they left the journey, or were skipped) while their message from
        this step was still being retried: that message is failed now (nobody would bring it back), with
        the reason."""
        if not gone:
            return
        keys = [idempotency_key(call.workflow_id, call.node.id, m) for m in gone]
        conn.execute(update(messages).where(messages.c.workspace_id == call.workspace_id,
                                            messages.c.idempotency_key.in_(keys), messages.c.status == "retrying")
                     .values(status="failed", error=f"not delivered: {why}", next_attempt_at=None, content=None,
                             updated_at=now_ms()))

    @activity.defn(name="journey.wait")
    def wait(self, call: StepCall) -> StepResult:
        node: ir.WaitNode = call.node  # type: ignore[assignment]
        with writing(self.db) as conn:
            status = self._status(conn, call.workspace_id, call.journey_id)
            members = self._drop_exits(conn, call, call.members, status in (None, "stopped"))
            zones = self._zones(conn, call, members) if node.until_time else {}
            self._mark(conn, call, members)
        out = []
        for m in members:
            if node.seconds is not None:
                deadline = call.now + node.seconds * 1000
            elif node.until_epoch is not None:
                deadline = max(call.now, node.until_epoch * 1000)
            else:
                deadline = next_local(call.now, zones[m.user_pk], node.until_time)
            out.append(msgspec.structs.replace(m, deadline=deadline, trail=[]))
        return StepResult(routes={node.id: out})

    @activity.defn(name="journey.wait_for")
    def wait_for(self, call: StepCall) -> StepResult:
        node: ir.WaitForNode = call.node  # type: ignore[assignment]
        wall = now_ms()
        with writing(self.db) as conn:
            status = self._status(conn, call.workspace_id, call.journey_id)
            members = self._drop_exits(conn, call, call.members, status in (None, "stopped"))
            fresh = [m for m in members if m.since is None]
            if fresh:
                self._mark(conn, call, fresh)
            members = [m if m.since is not None else msgspec.structs.replace(
                m, since=wall, deadline=call.now + node.timeout_seconds * 1000, trail=[]) for m in members]
            matched = self._matching(conn, call, node, members)
        routes: dict[str, list[Member]] = {}
        waiting = []
        for m in members:
            if m.run_id in matched:
                routes.setdefault(node.on_event, []).append(m)
            elif m.deadline is not None and m.deadline <= call.now:
                routes.setdefault(node.on_timeout, []).append(m)
            else:
                waiting.append(m)
        return StepResult(routes=routes, waiting=waiting)

    def _matching(self, conn, call: StepCall, node: ir.WaitForNode, members: list[Member]) -> set[int]:
        if not members:
            return set()
        pks = [m.user_pk for m in members]
        if node.message_event is not None:
            ref = node.message_event
            return self._message_events(conn, call, ref.step, journey_message_event_names(ref.type, ref.names),
                                        members)
        found = events_of(conn, call.workspace_id, pks, journey_event_names(node.event or "", node.names),
                          min(m.since for m in members))
        out = set()
        for m in members:
            for ev in found.get(m.user_pk, []):
                if ev["received_at"] < m.since:
                    continue
                if node.correlate:
                    mine = _attr(ev, node.correlate)
                    theirs = _attr(m.entry, node.correlate)
                    if mine is None or mine != theirs:
                        continue
                if holds(node.filter, {"event": event_doc(ev["name"], ev["attributes"], ev["metrics"], ev["ts"])}):
                    out.add(m.run_id)
                    break
        return out

    def _message_events(self, conn, call: StepCall, step_id: str, names: list[str], members: list[Member]) -> set[int]:
        """Members with one of the message events `names` (`_email.open`, ...: every channel's, the channel
        of the referenced send step is not in this call) about their message from `step_id` of this journey."""
        found = events_of(conn, call.workspace_id, [m.user_pk for m in members], names,
                          min(m.entered_at for m in members))
        return {m.run_id for m in members
                if any(e["received_at"] >= m.entered_at and e["attributes"].get("step_id") == step_id
                       and e["attributes"].get("journey_id") == call.journey_id for e in found.get(m.user_pk, []))}

    @activity.defn(name="journey.split")
    def split(self, call: StepCall) -> StepResult:
        node: ir.SplitNode = call.node  # type: ignore[assignment]
        with writing(self.db) as conn:
            status = self._status(conn, call.workspace_id, call.journey_id)
            members = self._drop_exits(conn, call, call.members, status in (None, "stopped"))
            remaining = {m.run_id: m for m in members}
            routes: dict[str, list[Member]] = {}
            docs = None
            for b in node.branches:
                pool = list(remaining.values())
                if not pool:
                    break
                if isinstance(b, ir.RuleBranch):
                    if docs is None:
                        docs = _customer_docs(conn, call.workspace_id, [m.user_pk for m in members],
                                              [x.rule for x in node.branches if isinstance(x, ir.RuleBranch)])
                    hit = {m.run_id for m in pool if holds(b.rule, {"customer": docs.get(m.user_pk, {}),
                                                                    "event": _entry_doc(m.entry)})}
                elif isinstance(b, ir.SegmentBranch):
                    inside = audience.members_among(conn, call.workspace_id, b.segment, [m.user_pk for m in pool])
                    hit = {m.run_id for m in pool if m.user_pk in inside}
                else:
                    hit = self._message_events(conn, call, b.step, journey_message_event_names(b.type, b.names), pool)
                for run_id in hit:
                    routes.setdefault(b.next, []).append(remaining.pop(run_id))
            if remaining:
                routes.setdefault(node.else_next, []).extend(remaining.values())
            self._mark(conn, call, members)
        return StepResult(routes={k: [msgspec.structs.replace(m, trail=[]) for m in v] for k, v in routes.items()})

    @activity.defn(name="journey.finish")
    def finish(self, call: StepCall) -> StepResult:
        """Holdout (control group) or exit node: the run ends here."""
        with writing(self.db) as conn:
            self._finish(conn, call, call.members)
        return StepResult()

    def _finish(self, conn, call: StepCall, members: list[Member]) -> None:
        node = call.node
        status = "held_out" if isinstance(node, ir.HoldoutNode) else "completed"
        reason = getattr(node, "reason", None) or ("control group" if status == "held_out" else None)
        self._mark(conn, call, members, status=status, reasons={m.run_id: reason for m in members})
        if status == "held_out":
            _record_holdouts(conn, call, members)

    # ---- admission -----------------------------------------------------------------------

    def _ir(self, conn, workspace: int, journey_id: str, version: int) -> ir.JourneyIR:
        key = (workspace, journey_id, version)
        if key not in self._irs:
            text = conn.execute(select(journey_versions.c.ir).where(
                journey_versions.c.workspace_id == workspace, journey_versions.c.journey_id == journey_id,
                journey_versions.c.version == version)).scalar_one()
            self._irs[key] = ir.JourneyIR.from_json(text)
        return self._irs[key]

    def _claimed(self, conn, claim_key: str) -> Admitted | None:
        row = conn.execute(select(journey_cohorts).where(journey_cohorts.c.claim_key == claim_key)).first()
        if row is None:
            return None
        runs = conn.execute(select(journey_runs.c.id, journey_runs.c.user_pk, journey_runs.c.entered_at,
                                   journey_runs.c.entry).where(
            journey_runs.c.workspace_id == row.workspace_id, journey_runs.c.journey_id == row.journey_id,
            journey_runs.c.cohort == row.cohort).order_by(journey_runs.c.id)).all()
        return Admitted(cohort=row.cohort, workflow_id=row.workflow_id,
                        ir=self._ir(conn, row.workspace_id, row.journey_id, row.version),
                        members=[Member(user_pk=r.user_pk, run_id=r.id, entered_at=r.entered_at, entry=r.entry or {})
                                 for r in runs])

    def _admit_rows(self, conn, workspace: int, journey_id: str, version: int, claim_key: str,
                    candidates: list[tuple[int, dict]], refused: Counter[str] | None = None) -> Admitted:
        """Apply entry limits, record the runs and the cohort, with how many entries were refused and why
        (`refused` brings the entry filter's); all inside the caller's transaction."""
        refused = Counter() if refused is None else refused
        j = self._ir(conn, workspace, journey_id, version)
        lim = j.settings.entry
        now = now_ms()
        # The journey's row first: on PostgreSQL its lock queues the admissions of one journey (a broadcast page
        # and the queue of an `on_join` broadcast, say) so each reads the runs the one before it recorded
        # and a customer in both is admitted once.
        conn.execute(update(journeys).where(journeys.c.workspace_id == workspace, journeys.c.journey_id == journey_id)
                     .values(next_cohort=journeys.c.next_cohort + 1))
        # Another attempt of this same admission (a Temporal retry while the first still ran) may have committed
        # while this one queued on the row: its cohort is the answer, instead of a second one on the same key.
        claimed = self._claimed(conn, claim_key)
        if claimed is not None:
            return claimed
        cohort = conn.execute(select(journeys.c.next_cohort).where(
            journeys.c.workspace_id == workspace, journeys.c.journey_id == journey_id)).scalar_one() - 1
        pks = sorted({pk for pk, _ in candidates})
        past: dict[int, list] = {}
        for r in rows_where_in(conn, journey_runs, ["user_pk", "status", "entered_at"], "user_pk", pks,
                               {"workspace_id": workspace, "journey_id": journey_id}):
            past.setdefault(r[0], []).append(r)
        chosen: dict[int, dict] = {}
        for pk, entry in candidates:
            runs = past.get(pk, [])
            if pk in chosen or any(r[1] == "active" for r in runs):
                refused["already_in_journey"] += 1
            elif lim.max_entries is not None and len(runs) >= lim.max_entries:
                refused["entry_limit"] += 1
            elif lim.min_interval_seconds and runs and max(r[2] for r in runs) > now - lim.min_interval_seconds * 1000:
                refused["min_interval"] += 1
            else:
                chosen[pk] = entry
        wf_id = cohort_workflow_id(installation_id(self.db), workspace, journey_id, version, cohort)
        conn.execute(insert(journey_cohorts).values(workspace_id=workspace, journey_id=journey_id, cohort=cohort,
                                                    version=version, claim_key=claim_key, workflow_id=wf_id,
                                                    size=len(chosen), created_at=now,
                                                    refused=dict(refused) or None))
        bulk_insert(conn, journey_runs, [
            {"workspace_id": workspace, "journey_id": journey_id, "version": version, "user_pk": pk, "cohort": cohort,
             "workflow_id": wf_id, "current_step": None, "status": "active", "exit_reason": None, "entered_at": now,
             "updated_at": now, "converted_at": None, "steps": [], "variant": None, "entry": entry}
            for pk, entry in chosen.items()])
        return self._claimed(conn, claim_key)  # type: ignore[return-value]

    @activity.defn(name="journey.admit")
    async def admit(self, call: AdmitCall) -> Admitted:
        """Claim up to `limit` queued entries. With `wake`, return at once: nothing ready registers the
        admission workflow with this worker's entry watch, which signals it when there is (admission.py).
        Without (histories from before), long-poll for up to wait_seconds. Either way the waiting holds no
        worker thread: the store is read in short to_thread calls between asyncio sleeps."""
        if not call.wake:
            return await self._admit_long_poll(call)
        adm = await asyncio.to_thread(self._admit_now, call)
        if adm is None or (not adm.stopped and len(adm.members) < call.limit):
            # the workflow waits next (a full batch loops at once, there may be more): watch for it
            self.entry_watch.register(activity.client(), activity.info().workflow_id, call, call.wait_seconds)
        return adm or Admitted()

    def _admit_now(self, call: AdmitCall) -> Admitted | None:
        """A cohort claimed now, or stopped; None when nothing is ready to claim."""
        workspace, jid = call.workspace_id, call.journey_id
        with reading(self.db) as conn:
            done = self._claimed(conn, call.claim_key)  # a retry of a call whose claim committed
            if done is not None:
                return done if done.members else None
            status = self._status(conn, workspace, jid)
            if status in (None, "stopped"):
                return Admitted(stopped=True)
            if status != "active":
                return None
            queued, oldest = admission.queue_state(conn, workspace, [jid]).get(jid, (0, 0))
        if not admission.ready(queued, oldest, None, call.limit, call.window_seconds):
            return None
        adm = self._claim(call)
        return adm if adm is not None and adm.members else None

    def _claim(self, call: AdmitCall) -> Admitted | None:
        """Take up to `limit` queued entries, filter them, record the cohort; None when the queue was empty."""
        workspace, jid = call.workspace_id, call.journey_id
        with writing(self.db) as conn:
            version = conn.execute(select(journeys.c.active_version).where(
                journeys.c.workspace_id == workspace, journeys.c.journey_id == jid)).scalar_one()
            rows = conn.execute(select(journey_entries).where(
                journey_entries.c.workspace_id == workspace, journey_entries.c.journey_id == jid)
                .order_by(journey_entries.c.id).limit(call.limit)).all()
            if not rows:
                return None
            conn.execute(journey_entries.delete().where(journey_entries.c.id.in_([r.id for r in rows])))
            claimed_at = now_ms()
            for r in rows:
                JOURNEY_ADMISSION_LAG.observe(max(0, claimed_at - r.enqueued_at) / 1000)
            j = self._ir(conn, workspace, jid, version)
            rule = j.entry.filter if isinstance(j.entry, ir.EventEntry) else None
            docs = _customer_docs(conn, workspace, sorted({r.user_pk for r in rows}), rule)
            candidates = [(r.user_pk, r.event) for r in rows
                          if rule is None or holds(rule, {"event": _entry_doc(r.event),
                                                          "customer": docs.get(r.user_pk, {})})]
            refused = Counter({"entry_filter": len(rows) - len(candidates)} if len(rows) > len(candidates) else {})
            if call.now is not None and j.settings.ended(call.now):  # queued entries past the end are dropped
                refused["journey_ended"] += len(candidates)
                candidates = []
            return self._admit_rows(conn, workspace, jid, version, call.claim_key, candidates, refused)

    async def _admit_long_poll(self, call: AdmitCall) -> Admitted:
        """The admission of histories recorded before the entry watch: returns as soon as entries are
        ready, else after wait_seconds."""
        give_up = time.monotonic() + call.wait_seconds
        first_seen = None  # when this call first saw entries queued (bounds the window under clock skew)
        while True:
            activity.heartbeat()
            done, status, queued, oldest = await asyncio.to_thread(self._poll_queue, call)
            if done is not None:
                return done
            if status in (None, "stopped"):
                return Admitted(stopped=True)
            if queued and call.window_seconds:
                first_seen = first_seen or time.monotonic()
            due = admission.ready(queued, oldest, first_seen, call.limit, call.window_seconds) or \
                (queued > 0 and time.monotonic() >= give_up)
            if status == "active" and due:
                adm = await asyncio.to_thread(self._claim, call)
                if adm is not None:
                    return adm if adm.members else Admitted()  # everyone filtered out: the claim is used up
            if time.monotonic() >= give_up:
                return Admitted()
            await asyncio.sleep(0.05 if first_seen is None else min(0.05, max(0.005, call.window_seconds / 10)))

    def _poll_queue(self, call: AdmitCall):
        with reading(self.db) as conn:
            done = self._claimed(conn, call.claim_key)
            status = self._status(conn, call.workspace_id, call.journey_id)
            queued, oldest = admission.queue_state(conn, call.workspace_id, [call.journey_id]).get(
                call.journey_id, (0, 0))
        return done, status, queued, oldest

    def _due_zones(self, conn, j: ir.JourneyIR, call: PageCall):
        """The zones a `timezone: customer` firing admits. Reading the workspace's stored zones scans its
        customers, so each firing computes them once (this worker process), not once per 1,000-customer page."""
        key = (call.workspace_id, call.journey_id, call.version, call.fire_at)
        if key not in self._zone_filters:
            assert isinstance(j.entry, ir.BroadcastEntry)  # only broadcasts fire on a schedule
            local = localtime.local_schedule(j.entry)
            if len(self._zone_filters) >= 64:
                self._zone_filters.clear()
            self._zone_filters[key] = None if local is None else localtime.firing_filter(
                local, call.fire_at or now_ms(), audience.stored_zones(conn, call.workspace_id),
                j.settings.default_timezone)
        return self._zone_filters[key]

    @activity.defn(name="journey.broadcast_page")
    def broadcast_page(self, call: PageCall) -> Admitted:
        with writing(self.db) as conn:
            j = self._ir(conn, call.workspace_id, call.journey_id, call.version)
            assert isinstance(j.entry, ir.BroadcastEntry)
            if call.now is not None and j.settings.ended(call.now):
                return Admitted()  # a firing at or after the journey's `ends_at`: nobody enters
            zones = self._due_zones(conn, j, call) if call.local_zones else None
            if zones is not None and zones.empty:
                return Admitted()  # nobody's local time is due at this firing
            pks = audience.members_page(conn, call.workspace_id, j.entry.segment, call.after_pk, call.limit, zones)
            next_after = pks[-1] if len(pks) == call.limit else None
            status = self._status(conn, call.workspace_id, call.journey_id)
            if status not in ("active", "paused"):
                return Admitted(stopped=True)
            adm = self._claimed(conn, call.claim_key)
            if adm is None and not pks:
                return Admitted()
            if adm is None:
                adm = self._admit_rows(conn, call.workspace_id, call.journey_id, call.version, call.claim_key,
                                       [(pk, {}) for pk in pks])
        adm.next_after = next_after
        return adm


def _custom_send(call: StepCall, node: ir.SendNode) -> CustomSend | None:
    """A custom_channel step's send: a campaign's payload names the campaign and the activity (run) that
    GetCampaignActivities lists; a journey's names the journey and the step."""
    c = node.custom
    if c is None:
        return None
    campaign = c.campaign_treatment is not None
    return CustomSend(url=c.url, channels=native_channels(c.endpoint_types), data=c.data,
                      id_member="CampaignId" if campaign else "JourneyId", id_value=call.journey_id,
                      treatment_id=c.campaign_treatment or "0",
                      activity_id=f"{call.journey_id[:24]}{call.version:08x}" if campaign else node.id,
                      scheduled_ms=call.now)


def _record_holdouts(conn, call: StepCall, members: list[Member]) -> None:
    """One `_journey.holdout` event per customer the holdout step keeps out (the control group), in the
    transaction that marks their runs `held_out`: streams, the events API and segments see the control
    group. The id is the run's, so a retried step records it once."""
    now = now_ms()
    rows = [{"workspace_id": call.workspace_id, "event_id": f"holdout:{m.run_id}", "user_pk": m.user_pk,
             "endpoint_pk": None, "name": "_journey.holdout", "ts": now, "received_at": now, "metrics": {},
             "attributes": {"journey_id": call.journey_id, "journey_version": call.version, "step_id": call.node.id,
                            "run_id": m.run_id, **({"variant": m.variant} if m.variant else {})}}
            for m in members]
    fresh = insert_new(conn, call.workspace_id, rows)
    if fresh:
        changes.events_recorded(conn, call.workspace_id, fresh)


async def _heartbeat_forever() -> None:
    """Heartbeat three times per heartbeat timeout. Progress itself is in the store: each chunk's results
    are recorded as it completes (tidings.engine.messaging.dispatch), so a retried attempt resumes after them. An attempt
    that stops heartbeating is retried elsewhere and the retry takes the claim's open rows over; an older
    attempt still running stops at its next chunk, or is cancelled at its next heartbeat."""
    timeout = activity.info().heartbeat_timeout
    every = min(2.0, timeout.total_seconds() / 3) if timeout else 2.0
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


def _attr(ev: dict, key: str):
    attrs = ev.get("attributes") or {}
    if key in attrs:
        return attrs[key]
    return (ev.get("metrics") or {}).get(key)


def _entry_doc(entry: dict) -> dict:
    if not entry:
        return {}
    return event_doc(entry.get("name", ""), entry.get("attributes", {}), entry.get("metrics", {}), entry.get("ts", 0))


def _customer_docs(conn, workspace_id: int, pks: list[int], rule: Any) -> dict[int, dict]:
    """The `customer` split rules and entry filters see: the document segment rules see (profile, endpoints,
    segment and import memberships), built for the whole batch by the segments' own builder. Nothing is
    read for a rule that never names `customer` (most entry filters look at the event only)."""
    if b'"customer' not in msgspec.json.encode(rule):
        return {}
    return documents(conn, workspace_id, pks, {}, now_ms())
