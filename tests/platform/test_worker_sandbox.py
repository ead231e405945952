"""What a scheduled workflow run costs the worker's sandbox. Every run imports its workflow's module in a
fresh sandbox, and with it every parent package that is not passed through: the clock-segment refresh
(every 5 minutes) re-imported tidings.engine.segments there, ~395 modules (SQLAlchemy, alembic, SQLModel,
pydantic...), part of which the host's registries then kept: the worker grew ~30 MB at each refresh
(tests/benchmarks/README.md, "Worker memory")."""
from __future__ import annotations

import importlib

import pytest
from temporalio.worker.workflow_sandbox import SandboxRestrictions
from temporalio.worker.workflow_sandbox._importer import Importer
from temporalio.worker.workflow_sandbox._restrictions import RestrictionContext

from tidings.engine.ops.worker import PASSTHROUGH, workflows


def modules_a_run_imports(module: str) -> list[str]:
    """The modules a new run of a workflow defined in `module` loads into its sandbox, as the worker's
    runner is configured (engine/ops/worker.py)."""
    workflows()  # the worker has imported them outside the sandbox
    importer = Importer(SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH), RestrictionContext())
    with importer.applied():
        importlib.import_module(module)
    return sorted(set(importer.new_modules) - {"sys", "builtins", "__main__"})


@pytest.mark.parametrize("module", ["tidings.engine.segments.refresh_workflow",
                                    "tidings.engine.ops.retention_workflow",
                                    "tidings.engine.journeys.runtime.workflows"])
def test_a_scheduled_run_loads_nothing_but_its_workflow_module(module):
    assert modules_a_run_imports(module) == [module]


async def test_the_worker_runs_a_clock_segment_refresh_passed_through(api, db, settings, temporal_env):
    """The refresh, run by the worker as `tidings worker` builds it, still does its work."""
    import uuid

    from sqlalchemy import text

    from tidings.engine.ops.worker import build_worker
    from tidings.engine.segments.refresh_workflow import RefreshClockSegments

    api.post("/v1/events", json={"events": [{"user_id": "ann", "name": "login"}, {"user_id": "bob", "name": "login"}]})
    assert api.post("/v1/segments", json={"id": "recent", "name": "recent", "rule": {
        "last_performed": {"event": "login", "within": "1d"}}}).json()["size"] == 2
    with db.begin() as conn:  # two days pass for ann
        conn.execute(text("UPDATE event SET ts = ts - 172800000 WHERE user_pk = "
                          "(SELECT id FROM users WHERE user_id = 'ann')"))
    queue = f"q-{uuid.uuid4().hex}"
    import dataclasses

    async with build_worker(temporal_env.client, db, dataclasses.replace(settings, task_queue=queue)):
        changed = await temporal_env.client.execute_workflow(RefreshClockSegments.run, id=f"wf-{uuid.uuid4().hex}",
                                                             task_queue=queue)
    assert changed == 1
    assert [m["user_id"] for m in api.get("/v1/segments/recent/members").json()["items"]] == ["bob"]
