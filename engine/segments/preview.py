"""The size an unsaved rule would have, and a few of the customers it would hold: what the segment
builder shows as its rule is typed. The same validation and full evaluation a save runs, nothing kept
(paths the typed index does not hold are read from the customers' JSON, segments/backfill.py)."""
from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Engine, select

from tidings.engine.customers.tables import users
from tidings.engine.platform.clock import now_ms
from tidings.engine.segments.evaluate import compile_segment, full_members
from tidings.engine.segments.service import validate_rule
from tidings.engine.workspaces.service import WorkspaceRef

UNSAVED = "__unsaved__"  # not a valid segment id (ids start with a letter or digit): never a stored one's


class RulePreview(msgspec.Struct):
    size: int
    sample: list[str]


def preview_rule(db: Engine, workspace: WorkspaceRef, rule: Any, sample: int = 10) -> RulePreview:
    """InvalidInput (field `rule`) for a rule that could not be saved."""
    with db.begin() as conn:
        validate_rule(conn, workspace.id, UNSAVED, rule)
        # nothing registered for an unsaved rule: paths the index does not hold are read from the JSON
        members = full_members(conn, workspace.id, compile_segment(UNSAVED, "dynamic", rule), now_ms(), register=False)
        first = sorted(members)[:sample]
        names: dict[int, str] = dict(conn.execute(select(users.c.id, users.c.user_id).where(users.c.id.in_(first))).all()) if first else {}
    return RulePreview(size=len(members), sample=[names[pk] for pk in first if pk in names])
