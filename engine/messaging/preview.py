"""A template rendered for one customer, as a send to them would render it (their profile, their first
endpoint of the template's channel, their locale unless another is asked for); nothing is sent."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from tidings.engine.customers.users import user_pk
from tidings.engine.messaging.dispatch import endpoint_target, load_customers
from tidings.engine.messaging.template_store import load_templates
from tidings.engine.messaging.templates import RenderedContent, TemplateRenderError, render
from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.workspaces.service import WorkspaceRef


def preview_template(db: Engine, workspace: WorkspaceRef, template_id: str, user_id: str, *, locale: str | None = None,
                     data: dict[str, Any] | None = None) -> RenderedContent:
    """NotFound for an unknown template or customer; InvalidInput (field `template`) when it does not render."""
    with reading(db) as conn:
        template = load_templates(conn, workspace.id, [template_id]).get(template_id)
        if template is None:
            raise NotFound(f"no template {template_id!r}", field="template_id")
        pk = user_pk(conn, workspace.id, user_id)
        user, eps = load_customers(conn, workspace.id, [pk], template.channel_type.value)[pk]
    endpoint = endpoint_target(eps[0]).context if eps else {"channel": template.channel_type.value}
    try:
        return render(template, {"user": user, "endpoint": endpoint, "data": data or {}}, locale or None)
    except TemplateRenderError as exc:
        raise InvalidInput(f"the template does not render for {user_id!r}: part {exc.part}: {exc.message}",
                           field="template") from None
