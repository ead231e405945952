"""Stored templates: one shape for the API body and for `kind: Template` YAML documents.

    {"channel": "EMAIL", "subject": "...", "html": "...", "text": "...", "body": "...", "title": "...",
     "data": {"k": "..."}, "defaults": {"data.code": "X"}, "locales": {"fr": {"subject": "..."}}}

A template is validated before it is saved (tidings.engine.messaging.templates.template_errors): one that cannot render
is refused with the part and line. A default named without a dot that is not a top-level variable
(``cta_url``) means ``data.cta_url``, so YAML can write ``defaults: {cta_url: ...}``.
"""
from __future__ import annotations

from typing import Any, Literal

import msgspec
from sqlalchemy import Connection, Engine, delete, select, update

from tidings.engine.channels.contract import ChannelType
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import reading, rows_where_in, writing
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.messaging.tables import stored_templates
from tidings.engine.messaging.templates import Template, TemplateParts, template_errors
from tidings.engine.workspaces.service import WorkspaceRef

_TOP_LEVEL = {"user", "endpoint", "data", "customer", "User", "Attributes", "Metrics", "Demographic", "Location",
              "Address", "Id", "ChannelType"}


# The API body's parts are the template's own parts (unknown fields refused).
PartsBody = TemplateParts


class TemplateBody(TemplateParts, forbid_unknown_fields=True, omit_defaults=True):
    channel: Literal["EMAIL", "SMS", "VOICE", "PUSH", "WEBHOOK", "CUSTOM"] = "EMAIL"
    defaults: dict[str, Any] = {}
    locales: dict[str, PartsBody] = {}


class TemplateOut(TemplateBody, omit_defaults=False):
    id: str = ""
    version: int = 1
    created_at: str = ""
    updated_at: str = ""


def _parts(p: PartsBody) -> TemplateParts:
    return TemplateParts(subject=p.subject, html=p.html, text=p.text, body=p.body, title=p.title, data=dict(p.data))


def _default_path(path: str) -> str:
    return path if "." in path or path in _TOP_LEVEL else f"data.{path}"


def to_template(template_id: str, body: TemplateBody) -> Template:
    return Template(id=template_id, channel_type=ChannelType(body.channel), parts=_parts(body),
                    defaults={_default_path(k): v for k, v in body.defaults.items()},
                    locales={loc: _parts(p) for loc, p in body.locales.items()})


def check_template(template_id: str, body: TemplateBody, field_prefix: str = "") -> Template:
    """The Template, or InvalidInput naming the first bad part and line (all of them in details)."""
    if not template_id or len(template_id) > 255 or "/" in template_id:
        raise InvalidInput("template ids are 1-255 characters without '/'", field="id")
    t = to_template(template_id, body)
    errors = template_errors(t)
    if errors:
        first = errors[0]
        raise InvalidInput(str(first), field=field_prefix + first.part, details=[
            {"field": field_prefix + e.part, "line": e.line, "message": e.message} for e in errors])
    return t


def put_template(db: Engine, ws: WorkspaceRef | int, template_id: str, body: TemplateBody) -> tuple[TemplateOut, str]:
    """Save; returns the stored template and "created", "updated" or "unchanged"."""
    ws_id = ws if isinstance(ws, int) else ws.id
    check_template(template_id, body)
    doc = msgspec.to_builtins(body)
    now = now_ms()
    with writing(db) as conn:
        row = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == ws_id,
                                                          stored_templates.c.template_id == template_id)).first()
        if row is None:
            conn.execute(stored_templates.insert().values(workspace_id=ws_id, template_id=template_id,
                                                          channel_type=body.channel, doc=doc, version=1,
                                                          created_at=now, updated_at=now))
            outcome, version, created = "created", 1, now
        elif row.doc == doc:
            return _out(template_id, row.doc, row.version, row.created_at, row.updated_at), "unchanged"
        else:
            conn.execute(update(stored_templates).where(stored_templates.c.id == row.id).values(
                channel_type=body.channel, doc=doc, version=row.version + 1, updated_at=now))
            outcome, version, created = "updated", row.version + 1, row.created_at
    return _out(template_id, doc, version, created, now), outcome


def _out(template_id: str, doc: dict, version: int, created: int, updated: int) -> TemplateOut:
    return msgspec.convert({**doc, "id": template_id, "version": version, "created_at": ms_to_iso(created),
                            "updated_at": ms_to_iso(updated)}, TemplateOut)


def get_template(db: Engine, ws: WorkspaceRef, template_id: str) -> TemplateOut:
    with reading(db) as conn:
        row = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == ws.id,
                                                          stored_templates.c.template_id == template_id)).first()
    if row is None:
        raise NotFound(f"no template {template_id!r}", field="template_id")
    return _out(row.template_id, row.doc, row.version, row.created_at, row.updated_at)


def list_templates(db: Engine, ws: WorkspaceRef | int) -> list[TemplateOut]:
    ws_id = ws if isinstance(ws, int) else ws.id
    with reading(db) as conn:
        rows = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == ws_id)
                            .order_by(stored_templates.c.template_id)).all()
    return [_out(r.template_id, r.doc, r.version, r.created_at, r.updated_at) for r in rows]


def delete_template(db: Engine, ws: WorkspaceRef, template_id: str) -> None:
    with writing(db) as conn:
        n = conn.execute(delete(stored_templates).where(stored_templates.c.workspace_id == ws.id,
                                                        stored_templates.c.template_id == template_id)).rowcount
    if not n:
        raise NotFound(f"no template {template_id!r}", field="template_id")


def template_exists(conn: Connection, workspace_id: int, template_id: str) -> bool:
    return conn.execute(select(stored_templates.c.id).where(
        stored_templates.c.workspace_id == workspace_id, stored_templates.c.template_id == template_id)).first() is not None


def load_templates(conn: Connection, workspace_id: int, ids: list[str]) -> dict[str, Template]:
    rows = rows_where_in(conn, stored_templates, ["template_id", "doc"], "template_id", list(dict.fromkeys(ids)),
                         {"workspace_id": workspace_id})
    return {tid: to_template(tid, msgspec.convert(doc, TemplateBody)) for tid, doc in rows}


def template_resource(doc: dict[str, Any]) -> tuple[str, TemplateBody]:
    """A `kind: Template` YAML document (apiVersion, kind, id + the template body) checked as saving would
    check it, without the database: InvalidInput names the field."""
    if doc.get("kind") != "Template":
        raise InvalidInput(f"expected kind: Template, got {doc.get('kind')!r}", field="kind")
    template_id = doc.get("id")
    if not isinstance(template_id, str):
        raise InvalidInput("a Template document needs a string id", field="id")
    rest = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "id")}
    try:
        body = msgspec.convert(rest, TemplateBody)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        raise InvalidInput(f"template {template_id!r}: {message}", field=path.rstrip("`") or None) from None
    check_template(template_id, body)
    return template_id, body


def apply_template_resource(db: Engine, ws: WorkspaceRef | int, doc: dict[str, Any]) -> str:
    """Save a `kind: Template` YAML document. Idempotent: returns "created", "updated" or "unchanged"."""
    template_id, body = template_resource(doc)
    _, outcome = put_template(db, ws, template_id, body)
    return outcome


__all__ = ["template_resource", "TemplateBody", "TemplateOut", "PartsBody", "put_template", "get_template", "list_templates",
           "delete_template", "template_exists", "load_templates", "apply_template_resource", "check_template",
           "to_template"]
