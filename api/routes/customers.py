"""Users and endpoints: thin handlers over tidings.engine.customers.users and tidings.engine.customers.endpoints."""
from __future__ import annotations

from litestar import Controller, delete, get, post, put
from sqlalchemy import Engine

from tidings.engine.customers import users as customers, endpoints
from tidings.engine.customers.schemas import (
    BatchResult, Deleted, EndpointFields, EndpointOut, EndpointsBatch, UserFields, UserOut, UsersBatch,
)
from tidings.engine.workspaces.service import WorkspaceRef


def _id(path_param: str) -> str:
    # Ids are arbitrary strings and may hold '/' (sent as %2F). The router decodes the path before it
    # matches, so the handlers take the rest of the path, which comes with its leading slash.
    return path_param.removeprefix("/")


class UserController(Controller):
    path = "/users"

    @put("/{user_id:path}", sync_to_thread=True)
    def put_user(self, db: Engine, workspace: WorkspaceRef, user_id: str, data: UserFields) -> UserOut:
        return customers.upsert_user(db, workspace, _id(user_id), data)

    @get("/{user_id:path}", sync_to_thread=True)
    def get_user(self, db: Engine, workspace: WorkspaceRef, user_id: str) -> UserOut:
        return customers.get_user(db, workspace, _id(user_id))

    @delete("/{user_id:path}", status_code=200, sync_to_thread=True)
    def delete_user(self, db: Engine, workspace: WorkspaceRef, user_id: str) -> Deleted:
        customers.delete_user(db, workspace, _id(user_id))
        return Deleted(deleted=_id(user_id))

    @post("/batch", status_code=200, sync_to_thread=True)
    def batch(self, db: Engine, workspace: WorkspaceRef, data: UsersBatch) -> BatchResult:
        return customers.upsert_users(db, workspace, data.items)


class EndpointController(Controller):
    path = "/endpoints"

    @put("/{endpoint_id:path}", sync_to_thread=True)
    def put_endpoint(self, db: Engine, workspace: WorkspaceRef, endpoint_id: str, data: EndpointFields) -> EndpointOut:
        return endpoints.upsert_endpoint(db, workspace, _id(endpoint_id), data)

    @get("/{endpoint_id:path}", sync_to_thread=True)
    def get_endpoint(self, db: Engine, workspace: WorkspaceRef, endpoint_id: str) -> EndpointOut:
        return endpoints.get_endpoint(db, workspace, _id(endpoint_id))

    @delete("/{endpoint_id:path}", status_code=200, sync_to_thread=True)
    def delete_endpoint(self, db: Engine, workspace: WorkspaceRef, endpoint_id: str) -> Deleted:
        endpoints.delete_endpoint(db, workspace, _id(endpoint_id))
        return Deleted(deleted=_id(endpoint_id))

    @post("/batch", status_code=200, sync_to_thread=True)
    def batch(self, db: Engine, workspace: WorkspaceRef, data: EndpointsBatch) -> BatchResult:
        return endpoints.upsert_endpoints(db, workspace, data.items)
