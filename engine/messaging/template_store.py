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
from sqlalchemy import Connection, Engine, delete, func, select, update

from tidings.engine.channels.contract import ChannelType
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import reading, rows_where_in, writing
from tidings.engine.platform.errors import Conflict, InvalidInput, NotFound
from tidings.engine.messaging.tables import stored_templates, template_versions
from tidings.engine.messaging.templates import Template, TemplateParts, template_errors
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tags import add_tags, drop_tags

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


def put_template(db: Engine, workspace: WorkspaceRef | int, template_id: str, body: TemplateBody) -> tuple[TemplateOut, str]:
    """Save; returns the stored template and "created", "updated" or "unchanged". A changed template gets a
    new version (after the latest, which Pinpoint's API may have added) and that version becomes active."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.id
    check_template(template_id, body)
    doc = msgspec.to_builtins(body)
    now = now_ms()
    with writing(db) as conn:
        row = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == workspace_id,
                                                          stored_templates.c.template_id == template_id)).first()
        if row is None:
            conn.execute(stored_templates.insert().values(workspace_id=workspace_id, template_id=template_id,
                                                          channel_type=body.channel, doc=doc, version=1,
                                                          created_at=now, updated_at=now))
            _insert_version(conn, workspace_id, template_id, 1, doc, None, now)
            outcome, version, created = "created", 1, now
        elif row.doc == doc:
            return _out(template_id, row.doc, row.version, row.created_at, row.updated_at), "unchanged"
        else:
            version = _latest(conn, workspace_id, template_id) + 1
            _insert_version(conn, workspace_id, template_id, version, doc, None, now)
            conn.execute(update(stored_templates).where(stored_templates.c.id == row.id).values(
                channel_type=body.channel, doc=doc, version=version, updated_at=now))
            outcome, created = "updated", row.created_at
    return _out(template_id, doc, version, created, now), outcome


# ---- versions (Pinpoint's template API: api/pinpoint/templates.py) ------------------------------------------


class TemplateVersion(msgspec.Struct, kw_only=True):
    """One stored version of a template, with what the template's row says about all of them."""

    template_id: str
    version: int
    body: TemplateBody
    description: str | None
    created_at: int  # this version's
    updated_at: int
    active: int  # the template's active version
    latest: int
    template_created_at: int
    channel: str  # the template's (its active version's) channel


def _insert_version(conn: Connection, workspace_id: int, template_id: str, version: int, doc: dict, description: str | None,
                    now: int) -> None:
    conn.execute(template_versions.insert().values(workspace_id=workspace_id, template_id=template_id, version=version,
                                                   doc=doc, description=description, created_at=now, updated_at=now))


def _latest(conn: Connection, workspace_id: int, template_id: str) -> int:
    return conn.execute(select(func.max(template_versions.c.version)).where(
        template_versions.c.workspace_id == workspace_id, template_versions.c.template_id == template_id)).scalar() or 0


def _template_row(conn: Connection, workspace_id: int, template_id: str) -> Any:
    row = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == workspace_id,
                                                      stored_templates.c.template_id == template_id)).first()
    if row is None:
        raise NotFound(f"no template {template_id!r}", field="template_id")
    return row


def _version_rows(conn: Connection, workspace_id: int, template_id: str, version: int | None = None) -> list[Any]:
    q = select(template_versions).where(template_versions.c.workspace_id == workspace_id,
                                        template_versions.c.template_id == template_id)
    if version is not None:
        q = q.where(template_versions.c.version == version)
    return list(conn.execute(q.order_by(template_versions.c.version)).all())


def _version(row: Any, v: Any, latest: int) -> TemplateVersion:
    return TemplateVersion(template_id=row.template_id, version=v.version, body=msgspec.convert(v.doc, TemplateBody),
                           description=v.description, created_at=v.created_at, updated_at=v.updated_at,
                           active=row.version, latest=latest, template_created_at=row.created_at,
                           channel=row.channel_type)


def get_template_version(db: Engine, workspace: WorkspaceRef, template_id: str, version: int | None = None) -> TemplateVersion:
    """A version of a template (its active one when `version` is None); NotFound names what is missing."""
    with reading(db) as conn:
        row = _template_row(conn, workspace.id, template_id)
        found = _version_rows(conn, workspace.id, template_id, row.version if version is None else version)
        if not found:
            raise NotFound(f"template {template_id!r} has no version {version}", field="version")
        return _version(row, found[0], _latest(conn, workspace.id, template_id))


def list_template_versions(db: Engine, workspace: WorkspaceRef, template_id: str) -> list[TemplateVersion]:
    with reading(db) as conn:
        row = _template_row(conn, workspace.id, template_id)
        versions = _version_rows(conn, workspace.id, template_id)
        latest = versions[-1].version if versions else row.version
        return [_version(row, v, latest) for v in versions]


def list_active_versions(db: Engine, workspace: WorkspaceRef) -> list[TemplateVersion]:
    """Every template of the workspace at its active version, by template id."""
    with reading(db) as conn:
        rows = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == workspace.id)
                            .order_by(stored_templates.c.template_id)).all()
        active = {(v.template_id, v.version): v for v in conn.execute(
            select(template_versions).join(stored_templates, (stored_templates.c.workspace_id ==
                                                              template_versions.c.workspace_id)
                                           & (stored_templates.c.template_id == template_versions.c.template_id)
                                           & (stored_templates.c.version == template_versions.c.version))
            .where(template_versions.c.workspace_id == workspace.id))}
    return [_version(r, active[(r.template_id, r.version)], r.version) for r in rows
            if (r.template_id, r.version) in active]


def create_template(db: Engine, workspace: WorkspaceRef, template_id: str, body: TemplateBody, description: str | None,
                    tags: dict[str, str] | None = None, tag_resource: str | None = None) -> TemplateVersion:
    """A new template at version 1 (active); Conflict when the id is taken (whatever its channel). `tags` are
    stored on `tag_resource` (tidings.engine.workspaces.tags) in the same transaction."""
    check_template(template_id, body)
    doc = msgspec.to_builtins(body)
    now = now_ms()
    with writing(db) as conn:
        existing = conn.execute(select(stored_templates.c.channel_type).where(
            stored_templates.c.workspace_id == workspace.id, stored_templates.c.template_id == template_id)).first()
        if existing is not None:
            raise Conflict(f"a template named {template_id!r} already exists (a {existing.channel_type} template); "
                           "template names are unique across channels", field="template_id")
        conn.execute(stored_templates.insert().values(workspace_id=workspace.id, template_id=template_id,
                                                      channel_type=body.channel, doc=doc, version=1,
                                                      created_at=now, updated_at=now))
        _insert_version(conn, workspace.id, template_id, 1, doc, description, now)
        if tags and tag_resource:
            add_tags(conn, workspace.id, tag_resource, tags)
    return get_template_version(db, workspace, template_id)


def save_template_version(db: Engine, workspace: WorkspaceRef, template_id: str, body: TemplateBody, description: str | None,
                          *, new_version: bool = False, version: int | None = None) -> TemplateVersion:
    """Pinpoint's update: overwrite the latest version (`version`, when given, must be the latest), or add a
    new version after it (`new_version`), which does not become active. Overwriting the active version
    changes what sends render."""
    check_template(template_id, body)
    doc = msgspec.to_builtins(body)
    now = now_ms()
    with writing(db) as conn:
        row = _template_row(conn, workspace.id, template_id)
        latest = _latest(conn, workspace.id, template_id)
        if new_version:
            if version is not None:
                raise InvalidInput("give either a version or create-new-version, not both", field="version")
            target = latest + 1
            _insert_version(conn, workspace.id, template_id, target, doc, description, now)
        else:
            if version is not None and version != latest:
                raise InvalidInput(f"only the latest version ({latest}) can be overwritten; got version {version} "
                                   "(or create a new version)", field="version")
            target = latest
            conn.execute(update(template_versions).where(
                template_versions.c.workspace_id == workspace.id, template_versions.c.template_id == template_id,
                template_versions.c.version == target).values(doc=doc, description=description, updated_at=now))
        values: dict[str, Any] = {"updated_at": now}
        if target == row.version:
            values.update(doc=doc, channel_type=body.channel)
        conn.execute(update(stored_templates).where(stored_templates.c.id == row.id).values(**values))
    return get_template_version(db, workspace, template_id, target)


def set_active_version(db: Engine, workspace: WorkspaceRef, template_id: str, version: int | None) -> TemplateVersion:
    """Make `version` (the latest when None) the one sends render."""
    now = now_ms()
    with writing(db) as conn:
        row = _template_row(conn, workspace.id, template_id)
        target = _latest(conn, workspace.id, template_id) if version is None else version
        found = _version_rows(conn, workspace.id, template_id, target)
        if not found:
            raise NotFound(f"template {template_id!r} has no version {version}", field="version")
        conn.execute(update(stored_templates).where(stored_templates.c.id == row.id).values(
            doc=found[0].doc, version=target, channel_type=msgspec.convert(found[0].doc, TemplateBody).channel,
            updated_at=now))
    return get_template_version(db, workspace, template_id)


def delete_template_version(db: Engine, workspace: WorkspaceRef, template_id: str, version: int) -> None:
    """Delete one version; the active one cannot be (make another active, or delete the whole template)."""
    with writing(db) as conn:
        row = _template_row(conn, workspace.id, template_id)
        if not _version_rows(conn, workspace.id, template_id, version):
            raise NotFound(f"template {template_id!r} has no version {version}", field="version")
        if version == row.version:
            raise InvalidInput(f"version {version} is the active version of {template_id!r}: make another version "
                               "active first, or delete the template without a version", field="version")
        conn.execute(delete(template_versions).where(
            template_versions.c.workspace_id == workspace.id, template_versions.c.template_id == template_id,
            template_versions.c.version == version))


def _out(template_id: str, doc: dict, version: int, created: int, updated: int) -> TemplateOut:
    return msgspec.convert({**doc, "id": template_id, "version": version, "created_at": ms_to_iso(created),
                            "updated_at": ms_to_iso(updated)}, TemplateOut)


def get_template(db: Engine, workspace: WorkspaceRef, template_id: str) -> TemplateOut:
    with reading(db) as conn:
        row = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == workspace.id,
                                                          stored_templates.c.template_id == template_id)).first()
    if row is None:
        raise NotFound(f"no template {template_id!r}", field="template_id")
    return _out(row.template_id, row.doc, row.version, row.created_at, row.updated_at)


def list_templates(db: Engine, workspace: WorkspaceRef | int) -> list[TemplateOut]:
    workspace_id = workspace if isinstance(workspace, int) else workspace.id
    with reading(db) as conn:
        rows = conn.execute(select(stored_templates).where(stored_templates.c.workspace_id == workspace_id)
                            .order_by(stored_templates.c.template_id)).all()
    return [_out(r.template_id, r.doc, r.version, r.created_at, r.updated_at) for r in rows]


def delete_template(db: Engine, workspace: WorkspaceRef, template_id: str) -> None:
    """Delete a template with all its versions and tags."""
    with writing(db) as conn:
        n = conn.execute(delete(stored_templates).where(stored_templates.c.workspace_id == workspace.id,
                                                        stored_templates.c.template_id == template_id)).rowcount
        if not n:
            raise NotFound(f"no template {template_id!r}", field="template_id")
        conn.execute(delete(template_versions).where(template_versions.c.workspace_id == workspace.id,
                                                     template_versions.c.template_id == template_id))
        drop_tags(conn, workspace.id, f"templates/{template_id}/")


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


def apply_template_resource(db: Engine, workspace: WorkspaceRef | int, doc: dict[str, Any]) -> str:
    """Save a `kind: Template` YAML document. Idempotent: returns "created", "updated" or "unchanged"."""
    template_id, body = template_resource(doc)
    _, outcome = put_template(db, workspace, template_id, body)
    return outcome


__all__ = ["template_resource", "TemplateBody", "TemplateOut", "PartsBody", "put_template", "get_template", "list_templates",
           "delete_template", "template_exists", "load_templates", "apply_template_resource", "check_template",
           "to_template", "TemplateVersion", "get_template_version", "list_template_versions", "list_active_versions",
           "create_template", "save_template_version", "set_active_version", "delete_template_version"]
