"""Channels, templates, messages and the outbox: thin handlers over the engine's messaging modules."""
from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post, put
from litestar.params import Parameter
from sqlalchemy import Engine

from tidings.api.params import CURSOR, LIMIT
from tidings.engine.channels import config as channel_config
from tidings.engine.messaging import reads as message_reads, template_store as templates_store, transactional
from tidings.engine.channels.config import ChannelOut, ChannelPut
from tidings.engine.customers.schemas import Deleted, Page
from tidings.engine.messaging.template_store import TemplateBody, TemplateOut
from tidings.engine.messaging.transactional import BatchAnswer, BatchRequest, MessageAnswer, MessageRequest
from tidings.engine.workspaces.service import WorkspaceRef


IdempotencyKey = Parameter(header="Idempotency-Key", required=False)


class ChannelController(Controller):
    path = "/channels"

    @get("/", sync_to_thread=True)
    def list_channels(self, db: Engine, plugins: Any, workspace: WorkspaceRef) -> dict[str, Any]:
        return channel_config.list_channels(db, plugins, workspace)

    @put("/{name:str}", sync_to_thread=True)
    def put_channel(self, db: Engine, plugins: Any, workspace: WorkspaceRef, name: str, data: ChannelPut) -> ChannelOut:
        return channel_config.put_channel(db, plugins, workspace, name, data)

    @delete("/{name:str}", status_code=200, sync_to_thread=True)
    def delete_channel(self, db: Engine, workspace: WorkspaceRef, name: str) -> Deleted:
        channel_config.delete_channel(db, workspace, name)
        return Deleted(deleted=name)


class TemplateController(Controller):
    path = "/templates"

    @get("/", sync_to_thread=True)
    def list_templates(self, db: Engine, workspace: WorkspaceRef) -> Page:
        return Page(items=templates_store.list_templates(db, workspace))

    @put("/{template_id:str}", sync_to_thread=True)
    def put_template(self, db: Engine, workspace: WorkspaceRef, template_id: str, data: TemplateBody) -> TemplateOut:
        return templates_store.put_template(db, workspace, template_id, data)[0]

    @get("/{template_id:str}", sync_to_thread=True)
    def get_template(self, db: Engine, workspace: WorkspaceRef, template_id: str) -> TemplateOut:
        return templates_store.get_template(db, workspace, template_id)

    @delete("/{template_id:str}", status_code=200, sync_to_thread=True)
    def delete_template(self, db: Engine, workspace: WorkspaceRef, template_id: str) -> Deleted:
        templates_store.delete_template(db, workspace, template_id)
        return Deleted(deleted=template_id)


class MessageController(Controller):
    path = "/messages"

    @post("/", status_code=200)
    async def send(self, request: Request, data: MessageRequest,
                   idempotency_key: str | None = IdempotencyKey) -> MessageAnswer:
        # The hot single-send path takes db, plugins and workspace from the state the app and the key guard
        # set, not as dependencies: Litestar resolves several dependencies in an anyio task group, a few
        # percent of this request's CPU.
        state = request.app.state
        [answer] = await transactional.send(state.db, state.plugins, request.state.workspace, [data],
                                            idempotency_key, batch=False)
        return answer

    @post("/batch", status_code=200)
    async def send_batch(self, db: Engine, plugins: Any, workspace: WorkspaceRef, data: BatchRequest,
                         idempotency_key: str | None = IdempotencyKey) -> BatchAnswer:
        return BatchAnswer(messages=await transactional.send(db, plugins, workspace, data.messages, idempotency_key,
                                                             batch=True))

    @get("/{message_id:str}", sync_to_thread=True)
    def get_message(self, db: Engine, workspace: WorkspaceRef, message_id: str) -> dict[str, Any]:
        return message_reads.get_message(db, workspace, message_id)


class OutboxController(Controller):
    path = "/outbox"

    @get("/", sync_to_thread=True)
    def list_outbox(self, db: Engine, workspace: WorkspaceRef, address: str | None = None, cursor: str | None = CURSOR,
                    limit: int = LIMIT) -> Page:
        return message_reads.list_outbox(db, workspace, address=address, cursor=cursor, limit=limit)


def plugin_manager(request: Request) -> Any:
    return request.app.state.plugins


CONTROLLERS = [ChannelController, TemplateController, MessageController, OutboxController]
