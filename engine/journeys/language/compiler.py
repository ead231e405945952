"""Journey YAML -> JourneyIR. Reports every problem of a file at once as `path:line:column: message`."""
from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.graph import check_graph
from tidings.engine.journeys.language.issues import Issues, JourneyCompileError, Pos
from tidings.engine.journeys.language.resources import Resource, documents, read_resources
from tidings.engine.journeys.language.sections import parse_entry, parse_settings
from tidings.engine.journeys.language.steps import parse_steps
from tidings.engine.journeys.language.yaml_view import Catalog, Ctx, View
from tidings.engine.messaging.ledger import journey_event_names, journey_message_event_names

API_VERSION = "tidings/v1"
REQUIRED = ("apiVersion", "kind", "id", "entry", "steps")
OPTIONAL = ("name", "description", "settings", "start")


def compile_journey(text: str, *, path: str = "<string>", catalog: Catalog | None = None, version: int = 1) -> ir.JourneyIR:
    """Compile the one Journey document in `text` (other kinds in the same text are ignored)."""
    issues = Issues(path)
    docs = documents(text, path, issues)
    issues.raise_if_any()
    journeys = [d for d in docs if d.kind == "Journey"]
    if not journeys and len(docs) == 1 and not docs[0].kind:
        journeys = docs  # compile it anyway: "missing kind" is then reported with the rest
    if len(journeys) != 1:
        issues.add(None, f"expected exactly one `kind: Journey` document, found {len(journeys)}")
        issues.raise_if_any()
    journey = compile_resource(journeys[0], issues, catalog=catalog, version=version)
    issues.raise_if_any()
    assert journey is not None
    return journey


def compile_path(path: str | Path, catalog: Catalog | None = None) -> list[ir.JourneyIR]:
    """Compile every Journey in a file or folder of *.yaml/*.yml; other kinds are skipped
    (see load_resources). Raises one JourneyCompileError listing the problems of all files."""
    issues_by_file: dict[str, Issues] = {}
    out: list[ir.JourneyIR] = []
    first: dict[str, Resource] = {}
    for res in read_resources(path, issues_by_file):
        issues = issues_by_file[res.path]
        if res.kind != "Journey":
            if not res.kind:
                issues.add(Pos(res.line, 1), "document needs a string `kind` (Journey, Segment, Template, ...)")
            continue
        if res.id and res.id in first:
            issues.add(res.located.value_pos.get("id"), f"journey id `{res.id}` is already used in {first[res.id].path}:{first[res.id].line}")
        first.setdefault(res.id, res)
        journey = compile_resource(res, issues, catalog=catalog)
        if journey is not None:
            out.append(journey)
    errors = [e for issues in issues_by_file.values() for e in issues.items]
    if errors:
        raise JourneyCompileError(errors)
    return out


def compile_resource(res: Resource, issues: Issues, *, catalog: Catalog | None = None, version: int = 1) -> ir.JourneyIR | None:
    """Compile one loaded document into `issues`; None when it has problems."""
    before = len(issues.items)
    ctx = Ctx(issues, catalog)
    view = View.of(ctx, res.located, Pos(res.line, 1), "a journey document")
    if view is None:
        return None
    view.keys(required=REQUIRED, optional=OPTIONAL)
    if view.has("apiVersion") and view.raw("apiVersion") != API_VERSION:
        ctx.error(view.pos("apiVersion"), f"unsupported apiVersion `{view.raw('apiVersion')}`; use `{API_VERSION}`")
    if view.has("kind") and view.raw("kind") != "Journey":
        ctx.error(view.pos("kind"), f"`kind` must be `Journey`, got `{view.raw('kind')}`")
    journey_id = view.id("id")
    name = view.str("name", journey_id)
    description = view.str("description", "")
    # entry first: `correlate` in steps needs to know whether the journey starts from an event
    entry = parse_entry(ctx, view.raw("entry"), view.pos("entry")) if view.has("entry") else None
    settings = parse_settings(ctx, view.raw("settings"), view.pos("settings"), entry) if view.has("settings") else ir.Settings()
    steps = parse_steps(ctx, view.raw("steps"), view.pos("steps")) if view.has("steps") else None
    start = _start(view, steps)
    if steps is not None:
        check_graph(ctx, steps, start)
    if len(issues.items) > before or entry is None or steps is None or start is None or journey_id is None:
        return None
    nodes = dict(steps.nodes)
    if any(ir.END in n.successors() for n in nodes.values()):
        nodes[ir.END] = ir.ExitNode(id=ir.END, line=0)
    return resolve_names(ir.JourneyIR(
        id=journey_id, name=name or journey_id, description=description or "", version=version,
        source_hash=hashlib.sha256(res.text.encode()).hexdigest(), entry=entry, settings=settings, start=start,
        nodes=nodes))


def resolve_names(j: ir.JourneyIR) -> ir.JourneyIR:
    """Fill every `names` of the IR: the stored event names each `event` and `message_event` type matches.
    One vocabulary for entry, exit, wait_for, split and goal: `unsubscribed` is the customer's own
    `unsubscribed` event and every channel's `_*.unsubscribe` (a one-click unsubscribe records
    `_email.unsubscribe`), exactly as `message_event: {type: unsubscribed}` reads it."""
    def named(struct, name: str, resolve):
        return msgspec.structs.replace(struct, names=resolve(name))

    entry = named(j.entry, j.entry.event, journey_event_names) if isinstance(j.entry, ir.EventEntry) else j.entry
    s = j.settings
    settings = msgspec.structs.replace(
        s, exit=[named(c, c.event, journey_event_names) if isinstance(c, ir.EventExit) else c for c in s.exit],
        goal=named(s.goal, s.goal.event, journey_event_names) if s.goal is not None else None)
    nodes: dict[str, ir.Node] = {}
    for node_id, node in j.nodes.items():
        if isinstance(node, ir.WaitForNode):
            ref = node.message_event
            node = msgspec.structs.replace(
                node, names=journey_event_names(node.event) if node.event else [],
                message_event=named(ref, ref.type, journey_message_event_names) if ref is not None else None)
        elif isinstance(node, ir.SplitNode):
            node = msgspec.structs.replace(node, branches=[
                named(b, b.type, journey_message_event_names) if isinstance(b, ir.MessageEventBranch) else b
                for b in node.branches])
        nodes[node_id] = node
    return msgspec.structs.replace(j, entry=entry, settings=settings, nodes=nodes)


def _start(view: View, steps) -> str | None:
    """`start` if given and valid, else the first step."""
    if steps is None or not steps.order:
        return None
    if not view.has("start"):
        return steps.order[0]
    start = view.id("start")
    if start is not None and start not in steps.edges:
        view.ctx.error(view.pos("start"), f"`start` names unknown step `{start}`")
        return None
    return start
