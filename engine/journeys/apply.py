"""`tidings apply journeys/`: make a workspace match the resources in git, idempotently.

Journeys are compiled first against what the folder and the workspace hold together, so a broken journey
stops the run before anything is written. Then templates, segments (in dependency order: a rule may use
`in_segment` of a segment defined later in the folder) and journeys are applied, each reported as
created / updated / unchanged, with a diff of a journey's YAML when it gets a new version.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from tidings.engine.platform.errors import TidingsError
from tidings.engine.journeys import JourneyCompileError, compile_journey, load_resources
from tidings.engine.journeys.language.issues import CompileIssue
from tidings.engine.journeys.language.resources import Resource
from tidings.engine.journeys.store import DbCatalog, get_journey, put_journey
from tidings.engine.workspaces.service import WorkspaceRef

KINDS = ("Template", "Segment", "Journey")


@dataclass
class Change:
    kind: str
    id: str
    outcome: str  # created | updated | unchanged
    diff: list[str] = field(default_factory=list)


class FolderCatalog(DbCatalog):
    """What the workspace holds plus what the folder is about to add."""

    def __init__(self, db: Engine, workspace_id: int, resources: list[Resource]):
        super().__init__(db, workspace_id)
        self.segments = {r.id for r in resources if r.kind == "Segment"}
        self.templates = {r.id for r in resources if r.kind == "Template"}

    def has_segment(self, id: str) -> bool:
        return id in self.segments or super().has_segment(id)

    def has_template(self, id: str) -> bool:
        return id in self.templates or super().has_template(id)


def _source(res: Resource) -> str:
    return Path(res.path).read_text(encoding="utf-8") if res.kind == "Journey" else ""


def check(db: Engine, workspace: WorkspaceRef, resources: list[Resource]) -> None:
    """Compile every journey and check every template before anything is written; unknown kinds are refused.
    (Segment rules are checked as they are applied: they may refer to segments of the folder not yet stored.)"""
    from tidings.engine.messaging.template_store import template_resource

    catalog = FolderCatalog(db, workspace.id, resources)
    problems = []
    for res in resources:
        if res.kind not in KINDS:
            problems.append(CompileIssue(res.path, res.line, 1, f"unknown kind `{res.kind}`; use {', '.join(KINDS)}"))
        elif res.kind == "Template":
            try:
                template_resource(res.doc)
            except TidingsError as exc:
                where = f" ({exc.field})" if exc.field else ""
                problems.append(CompileIssue(res.path, res.line, 1, f"template `{res.id}`: {exc.message}{where}"))
        elif res.kind == "Journey":
            try:
                compile_journey(_journey_text(res), path=res.path, catalog=catalog)
            except JourneyCompileError as exc:
                problems.extend(exc.errors)
    if problems:
        raise JourneyCompileError(problems)


def _journey_text(res: Resource) -> str:
    """The journey's own document: files may hold several `---` documents."""
    text = _source(res)
    docs = text.split("\n---")
    if len(docs) == 1:
        return text
    # Keep line numbers right: blank out every other document instead of cutting them away.
    offset = 0
    for doc in docs:
        lines = doc.count("\n") + 1
        if offset < res.line <= offset + lines + 1:
            return "\n" * offset + doc.lstrip("-\n") if offset else doc
        offset += lines
    return text


def apply(db: Engine, workspace: WorkspaceRef, path: str | Path) -> list[Change]:
    from tidings.engine.segments.service import apply_segment_resource
    from tidings.engine.messaging.template_store import apply_template_resource

    resources = load_resources(path)
    check(db, workspace, resources)
    changes = [Change("Template", r.id, apply_template_resource(db, workspace, r.doc)) for r in resources
               if r.kind == "Template"]
    pending = [r for r in resources if r.kind == "Segment"]
    while pending:
        waiting, last_error = [], None
        for res in pending:
            try:
                changes.append(Change("Segment", res.id, apply_segment_resource(db, workspace, res.doc)))
            except TidingsError as exc:  # perhaps an in_segment of one not applied yet: try again after the rest
                waiting.append(res)
                last_error = exc
        if len(waiting) == len(pending):
            raise TidingsError(f"segment {waiting[0].id!r} ({waiting[0].path}:{waiting[0].line}): {last_error.message}",
                               field=last_error.field)
        pending = waiting
    for res in resources:
        if res.kind == "Journey":
            changes.append(_apply_journey(db, workspace, res))
    return changes


def _apply_journey(db: Engine, workspace: WorkspaceRef, res: Resource) -> Change:
    try:
        before = get_journey(db, workspace, res.id).yaml or ""
    except TidingsError:
        before = None
    text = _journey_text(res)
    info, created = put_journey(db, workspace, text, FolderCatalog(db, workspace.id, []), path=res.path)
    if not created:
        return Change("Journey", res.id, "unchanged")
    if before is None:
        return Change("Journey", res.id, "created")
    diff = list(difflib.unified_diff(before.splitlines(), text.splitlines(), f"{res.id} v{info.version - 1}",
                                     f"{res.id} v{info.version}", lineterm=""))
    return Change("Journey", res.id, f"updated (v{info.version})", diff)
