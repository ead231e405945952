"""Console pages: each handler reads the form or query, calls the engine function the JSON API calls,
and renders a template. Engine errors become pages (tidings.api.console.routes maps them)."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import yaml
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Stream
from sqlalchemy import Engine

from tidings.api.console import conditions, graph
from tidings.api.console.render import page
from tidings.api.console.session import PREFIX, start
from tidings.engine.analytics import deliverability, streams
from tidings.engine.analytics import metrics as mx
from tidings.engine.analytics.journey_report import journey_report
from tidings.engine.channels.config import list_channels
from tidings.engine.channels.contract import ChannelType
from tidings.engine.customers import users as customers
from tidings.engine.customers.events import list_events
from tidings.engine.customers.lookup import find_user_ids
from tidings.engine.journeys import store
from tidings.engine.messaging import reads as message_reads
from tidings.engine.messaging import template_store, transactional
from tidings.engine.messaging.feed import list_messages
from tidings.engine.messaging.preview import preview_template
from tidings.engine.platform.errors import InvalidInput, TidingsError
from tidings.engine.segments import imports as segment_imports
from tidings.engine.segments import service as segments
from tidings.engine.segments.estimate import estimate_rule
from tidings.engine.workspaces import service as workspaces
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.sessions import key_hash, workspace_of_key_hash

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
METRIC_NAMES = ["sent", "delivered", "bounced", "complained", "opened", "clicked", "unsubscribed", "converted"]
STATUSES = ["queued", "retrying", "sent", "failed"]
CHANNELS = [c.value for c in ChannelType]
EVENTS_PER_PAGE = 20
MESSAGE_COLUMNS = ["sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "converted"]
BUILDER: dict[str, Any] = {"kinds": conditions.KINDS, "operators": conditions.OPERATORS}


class SignInController(Controller):
    path = "/"

    @get("/sign-in", sync_to_thread=False)
    def sign_in_form(self, request: Request) -> Response:
        return page(request, "sign_in.html")

    @post("/sign-in", sync_to_thread=True)
    def sign_in(self, request: Request, db: Engine, data: Form) -> Response:
        hashed = key_hash(data.get("key", ""))
        try:
            workspace_of_key_hash(db, hashed)
        except TidingsError:
            return page(request, "sign_in.html", status_code=401, error="That key is unknown or revoked.")
        start(request, hashed)
        return Redirect(PREFIX + "/")

    @post("/sign-out", sync_to_thread=False)
    def sign_out(self, request: Request) -> Response:
        request.clear_session()
        return Redirect(PREFIX + "/sign-in")


def _day(value: str | None, default: date, field: str) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} is a date like 2026-12-01", field=field) from None


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


class ConsoleController(Controller):
    """Every page below needs a signed-in session (the `ws` dependency raises SignInNeeded)."""

    path = "/"

    @get("/", sync_to_thread=True)
    def overview(self, request: Request, db: Engine, workspace: WorkspaceRef, since: str | None = None,
                 until: str | None = None) -> Response:
        today = datetime.now(UTC).date()
        last = _day(until, today, "until")
        first = _day(since, last - timedelta(days=6), "since")
        if first > last:
            raise InvalidInput("since is on or before until", field="since")
        days = (last - first).days + 1
        now = mx.message_metrics(db, workspace, since_ms=_ms(first), until_ms=_ms(last + timedelta(days=1)))
        before = mx.message_metrics(db, workspace, since_ms=_ms(first - timedelta(days=days)), until_ms=_ms(first))
        previous = {row["channel"]: row["metrics"] for row in before["channels"]}
        return page(request, "overview.html", workspace=workspace, since=first.isoformat(), until=last.isoformat(), days=days,
                    channels=now["channels"], totals=now["totals"]["metrics"],
                    previous_totals=before["totals"]["metrics"], previous=previous, names=METRIC_NAMES)

    @get("/deliverability", sync_to_thread=True)
    def deliverability(self, request: Request, db: Engine, workspace: WorkspaceRef, since: str | None = None,
                       until: str | None = None) -> Response:
        """Hard-bounce and complaint rates per channel and day against the thresholds; suppressed addresses."""
        last = _day(until, datetime.now(UTC).date(), "until")
        first = _day(since, last - timedelta(days=13), "since")
        if first > last:
            raise InvalidInput("since is on or before until", field="since")
        rates = deliverability.daily_rates(db, workspace, since_ms=_ms(first), until_ms=_ms(last + timedelta(days=1)))
        return page(request, "deliverability.html", workspace=workspace, since=first.isoformat(), until=last.isoformat(),
                    channels=rates, suppressed=deliverability.suppressed_addresses(db, workspace),
                    bounce_threshold=deliverability.BOUNCE_THRESHOLD,
                    complaint_threshold=deliverability.COMPLAINT_THRESHOLD)

    # ---- customers ----------------------------------------------------------------------------

    @get("/customers", sync_to_thread=True)
    def find_customers(self, request: Request, db: Engine, workspace: WorkspaceRef, q: str | None = None) -> Response:
        found = find_user_ids(db, workspace, q) if q else []
        if q and len(found) == 1:
            return Redirect(f"{PREFIX}/customers/{found[0]}")
        return page(request, "customers.html", workspace=workspace, q=q or "", found=found)

    @get("/customers/{user_id:path}", sync_to_thread=True)
    def customer(self, request: Request, db: Engine, workspace: WorkspaceRef, user_id: str,
                 events: str | None = None) -> Response:
        user_id = user_id.removeprefix("/")
        user = customers.get_user(db, workspace, user_id)  # NotFound: the 404 page
        timeline = list_events(db, workspace, user_id=user_id, cursor=events, limit=EVENTS_PER_PAGE)
        sent = list_messages(db, workspace, user_id=user_id, limit=50)
        runs = [r for j in store.list_journeys(db, workspace) for r in store.list_runs(db, workspace, j.id, user_id=user_id, limit=20)]
        return page(request, "customer.html", workspace=workspace, user=user, events=timeline.items,
                    next_events=timeline.next_cursor, messages=sent["items"], runs=runs)

    # ---- segments -----------------------------------------------------------------------------

    @get("/segments", sync_to_thread=True)
    def list_segments(self, request: Request, db: Engine, workspace: WorkspaceRef) -> Response:
        return page(request, "segments.html", workspace=workspace, segments=segments.list_segments(db, workspace))

    @get("/segments/new", sync_to_thread=False)
    def new_segment(self, request: Request, workspace: WorkspaceRef) -> Response:
        return page(request, "segment.html", workspace=workspace, segment=None, **BUILDER, rule_text='{"==": [{"var": "attributes.plan"}, "pro"]}',
                    name="", members=[])

    @get("/segments/{segment_id:str}", sync_to_thread=True)
    def segment(self, request: Request, db: Engine, workspace: WorkspaceRef, segment_id: str) -> Response:
        seg = segments.get_segment(db, workspace, segment_id)
        sample = segments.members_page(db, workspace, segment_id, None, 10)["items"]
        return page(request, "segment.html", workspace=workspace, segment=seg, **BUILDER, name=seg.name, members=sample,
                    rule_text=json.dumps(seg.rule, indent=2, ensure_ascii=False),
                    versions=segments.list_versions(db, workspace, segment_id), yaml_text=_segment_yaml(seg))

    @post("/segments/preview", sync_to_thread=True)
    def preview(self, request: Request, db: Engine, workspace: WorkspaceRef, data: Form) -> Response:
        """The htmx fragment under the rule: the size it would have now, or why it cannot be saved."""
        try:
            found = estimate_rule(db, workspace, _rule(data.get("rule", "")),
                                  exact_up_to=request.app.state.settings.segment_estimate_above)
        except InvalidInput as exc:
            return page(request, "_size.html", error=str(exc))
        return page(request, "_size.html", preview=found)

    @post("/segments/condition", sync_to_thread=False)
    def add_condition(self, request: Request, workspace: WorkspaceRef, data: Form) -> Response:
        """The htmx fragment of the rule field, with one more condition AND-ed on (or why not)."""
        text = data.get("rule", "")
        try:
            extra = conditions.condition(data.get("c_kind", ""), data.get("c_name", ""), data.get("c_op", ""),
                                         data.get("c_value", ""))
            rule = conditions.and_onto(_rule(text) if text.strip() else None, extra)
        except InvalidInput as exc:
            return page(request, "_rule_field.html", rule_text=text, condition_error=str(exc))
        return page(request, "_rule_field.html", rule_text=json.dumps(rule, indent=2, ensure_ascii=False))

    @post("/segments", sync_to_thread=True)
    def save_segment(self, request: Request, db: Engine, workspace: WorkspaceRef, data: Form) -> Response:
        segment_id = data.get("segment_id") or None
        try:
            rule = _rule(data.get("rule", ""))
            if segment_id and data.get("existing") == "1":
                saved = segments.update_segment(db, workspace, segment_id, segments.SegmentPatch(name=data.get("name", ""),
                                                                                          rule=rule))
            else:
                saved = segments.create_segment(db, workspace, segments.SegmentIn(name=data.get("name", ""), rule=rule,
                                                                           id=segment_id))
        except (InvalidInput, TidingsError) as exc:
            existing = segments.get_segment(db, workspace, segment_id) if data.get("existing") == "1" and segment_id else None
            return page(request, "segment.html", status_code=400, workspace=workspace, segment=existing, **BUILDER, name=data.get("name", ""),
                        rule_text=data.get("rule", ""), new_id=segment_id or "", members=[], error=str(exc))
        return Redirect(f"{PREFIX}/segments/{saved.id}")

    @get("/segments/{segment_id:str}/export.csv", sync_to_thread=True)
    def export_segment(self, db: Engine, workspace: WorkspaceRef, segment_id: str) -> Stream:
        """The members as GET /v1/segments/{id}/export?format=csv writes them."""
        segments.get_segment(db, workspace, segment_id)  # the 404 page before the download starts
        return Stream(segment_imports.csv_lines(segments.export_rows(db, workspace, segment_id)), media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="{segment_id}.csv"'})

    @post("/segments/import")
    async def import_segment(self, request: Request, db: Engine, workspace: WorkspaceRef) -> Response:
        """A static segment from an uploaded file (as POST /v1/segments/import); bad rows listed, nothing written."""
        form = await request.form()  # parsed once, by the CSRF check before this handler
        upload, name, fmt = form.get("file"), str(form.get("name", "")).strip(), str(form.get("format", "plain"))
        try:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise InvalidInput("file: choose a CSV or JSON file to import", field="file")
            if not name:
                raise InvalidInput("name: the new segment needs a name", field="name")
            result = await asyncio.to_thread(segment_imports.run_import, db, workspace, upload.file, fmt, name)
        except InvalidInput as exc:
            found = await asyncio.to_thread(segments.list_segments, db, workspace)
            return page(request, "segments.html", status_code=400, workspace=workspace, segments=found, import_error=str(exc),
                        import_rows=exc.details, import_name=name)
        return Redirect(f"{PREFIX}/segments/{result['segment_id']}")

    # ---- journeys -----------------------------------------------------------------------------

    @get("/journeys", sync_to_thread=True)
    def list_journeys(self, request: Request, db: Engine, workspace: WorkspaceRef) -> Response:
        return page(request, "journeys.html", workspace=workspace, journeys=store.list_journeys(db, workspace))

    @get("/journeys/{journey_id:str}", sync_to_thread=True)
    def journey(self, request: Request, db: Engine, workspace: WorkspaceRef, journey_id: str) -> Response:
        info = store.get_journey(db, workspace, journey_id)
        ir = store.get_ir(db, workspace, journey_id)
        report = journey_report(db, workspace, journey_id)  # what GET /v1/journeys/{id}/report answers
        counts = graph.node_counts(report)
        return page(request, "journey.html", workspace=workspace, journey=info, ir=ir, drawing=graph.draw(ir, counts),
                    counts=counts, report=report, actions=_actions(info.status),
                    outcomes=graph.send_outcomes(report), metric_names=MESSAGE_COLUMNS)

    @post("/journeys/{journey_id:str}/{action:str}")
    async def lifecycle(self, request: Request, db: Engine, workspace: WorkspaceRef, journey_id: str,
                        action: str) -> Response:
        handlers = {"activate": store.activate, "pause": store.pause, "resume": store.resume, "stop": store.stop}
        if action not in handlers:
            raise InvalidInput(f"unknown action {action!r}; use one of {', '.join(handlers)}", field="action")
        await asyncio.to_thread(store.get_journey, db, workspace, journey_id)  # the 404 page before reaching Temporal
        client = await request.app.state.temporal.client()
        kwargs = request.app.state.settings.journey_queues() if action == "activate" else {}
        await handlers[action](client, db, workspace, journey_id, **kwargs)
        return Redirect(f"{PREFIX}/journeys/{journey_id}")

    # ---- messages -----------------------------------------------------------------------------

    @get("/messages", sync_to_thread=True)
    def messages(self, request: Request, db: Engine, workspace: WorkspaceRef, journey_id: str | None = None,
                 step_id: str | None = None, channel: str | None = None, status: str | None = None,
                 user_id: str | None = None, cursor: str | None = None) -> Response:
        filters = {"journey_id": journey_id or "", "step_id": step_id or "", "channel": channel or "",
                   "status": status or "", "user_id": user_id or ""}
        criteria: dict[str, Any] = {k: v or None for k, v in filters.items()}
        found = list_messages(db, workspace, cursor=cursor, **criteria)
        return page(request, "messages.html", workspace=workspace, filters=filters, messages=found["items"],
                    next_cursor=found["next_cursor"], journeys=store.list_journeys(db, workspace),
                    statuses=STATUSES, channels=CHANNELS)

    @get("/messages/{message_id:str}", sync_to_thread=True)
    def message(self, request: Request, db: Engine, workspace: WorkspaceRef, message_id: str) -> Response:
        """One message with its status timeline (its events) and the provider's answer."""
        return page(request, "message_detail.html", workspace=workspace, message=message_reads.get_message(db, workspace, message_id))

    # ---- templates ----------------------------------------------------------------------------

    @get("/templates", sync_to_thread=True)
    def list_templates(self, request: Request, db: Engine, workspace: WorkspaceRef) -> Response:
        return page(request, "templates.html", workspace=workspace, templates=template_store.list_templates(db, workspace))

    @get("/templates/{template_id:str}", sync_to_thread=True)
    def template(self, request: Request, db: Engine, workspace: WorkspaceRef, template_id: str,
                 user_id: str | None = None, locale: str | None = None) -> Response:
        """The template's parts, and rendered for the customer chosen (a preview: nothing is sent)."""
        found = template_store.get_template(db, workspace, template_id)
        rendered = error = None
        if user_id:
            try:
                rendered = preview_template(db, workspace, template_id, user_id, locale=locale)
            except (InvalidInput, TidingsError) as exc:
                error = str(exc)
        return page(request, "template.html", workspace=workspace, template=found, user_id=user_id or "", locale=locale or "",
                    rendered=rendered, error=error)

    @post("/templates/{template_id:str}/test-send")
    async def test_send(self, request: Request, db: Engine, workspace: WorkspaceRef, template_id: str,
                        data: Form) -> Response:
        """A test of the template to one address, sent as POST /v1/messages sends (recorded as a message)."""
        state = request.app.state
        found = await asyncio.to_thread(template_store.get_template, db, workspace, template_id)
        address = data.get("address", "").strip()
        answer = error = None
        if not address:
            error = "address: type the address to send the test to"
        else:
            send = transactional.MessageRequest(channel=found.channel, template_id=template_id,
                                                recipients=[transactional.Recipient(address=address)])
            try:
                [answer] = await transactional.send(db, state.plugins, workspace, [send], None, batch=False)
            except (InvalidInput, TidingsError) as exc:
                error = str(exc)
        result = answer.results[0] if answer else None
        return page(request, "template.html", status_code=400 if error else 200, workspace=workspace, template=found, user_id="",
                    locale="", rendered=None, test_address=address, test_error=error or (result and result.error),
                    test_result=result)


    # ---- settings -----------------------------------------------------------------------------

    @get("/settings", sync_to_thread=True)
    def settings(self, request: Request, db: Engine, workspace: WorkspaceRef) -> Response:
        return _settings_page(request, db, workspace)

    @post("/settings/keys", sync_to_thread=True)
    def create_key(self, request: Request, db: Engine, workspace: WorkspaceRef, data: Form) -> Response:
        """A new key of this workspace, shown on the page that answers this form and never again."""
        label = data.get("label", "").strip()
        if len(label) > 100:
            return _settings_page(request, db, workspace, status_code=400, key_error="label is at most 100 characters")
        _, key = workspaces.create_key(db, workspace.name, label=label)
        return _settings_page(request, db, workspace, new_key=key, new_label=label)

    @post("/settings/keys/{prefix:str}/revoke", sync_to_thread=True)
    def revoke_key(self, request: Request, db: Engine, workspace: WorkspaceRef, prefix: str) -> Response:
        workspaces.revoke_key(db, prefix, workspace_id=workspace.id)  # NotFound (another workspace's too): the 404 page
        return Redirect(f"{PREFIX}/settings")


def _settings_page(request: Request, db: Engine, workspace: WorkspaceRef, *, status_code: int = 200, **extra: Any) -> Response:
    """Channels (secrets redacted by the engine), event streams with their dead letters, the keys."""
    plugins = request.app.state.plugins
    found = streams.list_streams(db, plugins, workspace)
    dead = {s.id: streams.list_dead_letters(db, workspace, s.id, limit=20) for s in found if s.dead_letters}
    return page(request, "settings.html", status_code=status_code, workspace=workspace, channels=list_channels(db, plugins, workspace),
                streams=found, dead=dead, keys=workspaces.list_keys(db, workspace.name), **extra)


def _segment_yaml(seg: segments.SegmentOut) -> str:
    """The segment as the `kind: Segment` resource `tidings apply` reads, to keep it in git."""
    doc = {"apiVersion": "tidings/v1", "kind": "Segment", "id": seg.id, "name": seg.name, "rule": seg.rule}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def _rule(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the rule is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                           field="rule") from None


def _actions(status: str) -> list[str]:
    """The lifecycle buttons that make sense from this status."""
    return {"draft": ["activate"], "active": ["pause", "stop"], "paused": ["resume", "stop"],
            "stopped": ["activate"]}.get(status, ["activate"])

