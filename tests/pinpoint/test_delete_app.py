"""DeleteApp: an admin key deletes a workspace with everything in it. Its journeys stop on Temporal (the
admission workflow and a cohort waiting mid-journey end), its keys (native and Pinpoint) stop working, no row
of it is left in any table, and another workspace is untouched. A workspace's key may not delete."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import MetaData, func, select
from temporalio.client import WorkflowExecutionStatus

from tidings.engine.journeys.runtime.contracts import admission_workflow_id
from tidings.engine.platform.db import reading
from tidings.engine.platform.installation import installation_id, scoped
from tidings.engine.workspaces.service import create_key, find_workspace
from tests.pinpoint.conftest import client_for, make_key, temporal_settings

WAITING = """\
apiVersion: tidings/v1
kind: Journey
id: pp-waiting
name: Waiting
entry:
  event: {name: signed_up}
steps:
  - id: later
    wait: 1d
  - id: hello
    send: {channel: EMAIL, template: hello-email}
"""


@pytest.fixture
def settings(tmp_path, database_url, temporal_env):
    return temporal_settings(tmp_path, database_url, temporal_env)



async def _status(temporal_env, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await temporal_env.client.get_workflow_handle(workflow_id).describe()).status


async def _until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.2)
    return value


def _rows_of(db, workspace_id: int) -> dict[str, int]:
    meta = MetaData()
    meta.reflect(bind=db)
    with reading(db) as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t).where(t.c.workspace_id == workspace_id))
                  .scalar_one() for t in meta.sorted_tables if "workspace_id" in t.c}
        counts["workspace"] = conn.execute(select(func.count()).select_from(meta.tables["workspace"]).where(
            meta.tables["workspace"].c.id == workspace_id)).scalar_one()
    return {name: n for name, n in counts.items() if n}


async def test_delete_app_stops_journeys_and_erases_the_workspace(running_api, worker, temporal_env, acme_key,
                                                                  pinpoint):
    db = worker
    admin = client_for(running_api, make_key(running_api.database_url, None))
    _, native_key = create_key(db, "acme")
    _, globex_native = create_key(db, "globex")
    globex = client_for(running_api, make_key(running_api.database_url, "globex"))
    acme_id = find_workspace(db, "acme").id
    async with httpx.AsyncClient(base_url=running_api.url, headers={"Authorization": f"Bearer {native_key}"},
                                 timeout=30) as native:
        r = await native.put("/v1/templates/hello-email", json={"channel": "EMAIL", "subject": "Hi", "text": "Hi"})
        assert r.status_code in (200, 201), r.text
        r = await native.put("/v1/journeys/pp-waiting", content=WAITING, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        r = await native.post("/v1/journeys/pp-waiting/activate")
        assert r.status_code == 200, r.text
        for who in ("acme", "globex"):
            client = pinpoint if who == "acme" else globex
            await asyncio.to_thread(client.update_endpoint, ApplicationId=who, EndpointId="e1", EndpointRequest={
                "ChannelType": "EMAIL", "Address": "ann@example.com", "User": {"UserId": "ann"}})
        r = await native.post("/v1/events", json={"events": [{"id": "s1", "user_id": "ann", "name": "signed_up"}]})
        assert r.status_code in (200, 202), r.text

        async def waiting_run():
            runs = (await native.get("/v1/journeys/pp-waiting/runs")).json()
            return runs if runs and runs[0]["status"] == "active" else None
        await _until(waiting_run, "ann waiting at the journey's first step")
        installation = installation_id(db)
        admission = admission_workflow_id(installation, acme_id, "pp-waiting")

        async def running_workflows():
            running = [wf.id async for wf in temporal_env.client.list_workflows(
                f"WorkflowId STARTS_WITH '{scoped(installation, f'journey/{acme_id}/')}' "
                "AND ExecutionStatus = 'Running'")]
            return running if admission in running and any("/cohort/" in w for w in running) else None
        running = await _until(running_workflows, "the admission and cohort workflows running")

        # a workspace's key may not delete, not even its own workspace
        with pytest.raises(pinpoint.exceptions.ForbiddenException):
            await asyncio.to_thread(pinpoint.delete_app, ApplicationId="acme")
        answer = await asyncio.to_thread(admin.delete_app, ApplicationId="acme")
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert answer["ApplicationResponse"]["Id"] == "acme" and answer["ApplicationResponse"]["Name"] == "acme"
        assert answer["ApplicationResponse"]["Arn"].endswith(":apps/acme")

        for workflow_id in running:
            async def ended(workflow_id=workflow_id):
                return await _status(temporal_env, workflow_id) != WorkflowExecutionStatus.RUNNING
            await _until(ended, f"{workflow_id} ending")
        assert await _status(temporal_env, admission) == WorkflowExecutionStatus.CANCELED
        assert _rows_of(db, acme_id) == {}
        # its keys stop working: the native key, and its Pinpoint key pair
        assert (await native.get("/v1/journeys")).status_code == 401
    with pytest.raises(pinpoint.exceptions.ClientError) as refused:
        await asyncio.to_thread(pinpoint.get_app, ApplicationId="acme")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert [a["Id"] for a in (await asyncio.to_thread(admin.get_apps))["ApplicationsResponse"]["Item"]] == ["globex"]
    with pytest.raises(admin.exceptions.NotFoundException):
        await asyncio.to_thread(admin.get_app, ApplicationId="acme")
    with pytest.raises(admin.exceptions.NotFoundException):
        await asyncio.to_thread(admin.delete_app, ApplicationId="acme")
    # globex is untouched
    endpoint = (await asyncio.to_thread(globex.get_endpoint, ApplicationId="globex", EndpointId="e1"))
    assert endpoint["EndpointResponse"]["User"]["UserId"] == "ann"
    async with httpx.AsyncClient(base_url=running_api.url, headers={"Authorization": f"Bearer {globex_native}"},
                                 timeout=30) as other:
        assert (await other.get("/v1/users/ann")).status_code == 200
    # the name is free again: a new application may take it, and starts empty
    created = await asyncio.to_thread(admin.create_app, CreateApplicationRequest={"Name": "acme"})
    assert created["ApplicationResponse"]["Id"] == "acme"
    fresh = client_for(running_api, make_key(running_api.database_url, "acme"))
    with pytest.raises(fresh.exceptions.NotFoundException):
        await asyncio.to_thread(fresh.get_endpoint, ApplicationId="acme", EndpointId="e1")


async def test_a_workspace_made_after_a_delete_gets_a_new_id_and_runs_the_same_journey(running_api, worker,
                                                                                      temporal_env):
    """The deleted workspace was the newest: its number is not given again (Temporal workflow ids carry it,
    and its finished workflows would refuse the new workspace's journey of the same id)."""
    db = worker
    admin = client_for(running_api, make_key(running_api.database_url, None))
    installation = installation_id(db)

    async def start_journey(name: str) -> tuple[int, str]:
        workspace_id = find_workspace(db, name).id
        _, key = create_key(db, name)
        async with httpx.AsyncClient(base_url=running_api.url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=30) as native:
            r = await native.put("/v1/templates/hello-email", json={"channel": "EMAIL", "subject": "Hi",
                                                                    "text": "Hi"})
            assert r.status_code in (200, 201), r.text
            r = await native.put("/v1/journeys/pp-waiting", content=WAITING,
                                 headers={"Content-Type": "application/yaml"})
            assert r.status_code == 200, r.text
            r = await native.post("/v1/journeys/pp-waiting/activate")
            assert r.status_code == 200, r.text
            r = await native.post("/v1/events", json={"events": [{"id": "s1", "user_id": "ann",
                                                                 "name": "signed_up"}]})
            assert r.status_code in (200, 202), r.text

            async def waiting_run():
                runs = (await native.get("/v1/journeys/pp-waiting/runs")).json()
                return runs if runs and runs[0]["status"] == "active" else None
            await _until(waiting_run, f"ann waiting in {name}'s journey")
        admission = admission_workflow_id(installation, workspace_id, "pp-waiting")
        assert await _status(temporal_env, admission) == WorkflowExecutionStatus.RUNNING
        return workspace_id, admission

    await asyncio.to_thread(admin.create_app, CreateApplicationRequest={"Name": "older"})
    await asyncio.to_thread(admin.create_app, CreateApplicationRequest={"Name": "newest"})
    deleted_id, deleted_admission = await start_journey("newest")
    await asyncio.to_thread(admin.delete_app, ApplicationId="newest")

    async def canceled():
        return await _status(temporal_env, deleted_admission) == WorkflowExecutionStatus.CANCELED
    await _until(canceled, "the deleted workspace's admission workflow canceled")

    # the same application made again, with the same journey
    created = await asyncio.to_thread(admin.create_app, CreateApplicationRequest={"Name": "newest"})
    assert created["ApplicationResponse"]["Id"] == "newest"
    successor_id, _ = await start_journey("newest")
    assert successor_id > deleted_id
    # the deleted workspace's workflows are as they were: nothing of the new one ran under its number
    assert await _status(temporal_env, deleted_admission) == WorkflowExecutionStatus.CANCELED
