"""Whole-graph checks, run once every step is parsed: dangling edges, unreachable steps,
loops that never wait, and message_event references to sends that have not happened yet."""
from __future__ import annotations

from collections import deque

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.steps import ParsedSteps
from tidings.engine.journeys.language.yaml_view import Ctx, did_you_mean


def reachable(edges: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def check_graph(ctx: Ctx, steps: ParsedSteps, start: str | None) -> None:
    _check_refs(ctx, steps)
    if start is not None and start in steps.edges:
        seen = reachable(steps.edges, start)
        for step_id in steps.order:
            if step_id not in seen and not step_id.startswith("<"):
                ctx.error(steps.pos[step_id], f"step `{step_id}` is unreachable: no path leads to it from the start step `{start}`")
    _check_loops(ctx, steps)
    _check_message_refs(ctx, steps)


def _check_refs(ctx: Ctx, steps: ParsedSteps) -> None:
    known = [s for s in steps.order if not s.startswith("<")]
    for ref in ctx.step_refs:
        if ref.target != ir.END and ref.target not in steps.edges:
            ctx.error(ref.pos, f"`{ref.key}` of step `{ref.source}` points to unknown step `{ref.target}`"
                      f"{did_you_mean(ref.target, known)} (use `end` to leave the journey)")


def _pauses(steps: ParsedSteps, step_id: str) -> bool:
    """Does a customer spend time at this step? A fixed `until` date does not pause once it has passed."""
    node = steps.nodes.get(step_id)
    if node is None:  # broken step: already reported; assume the best so we do not pile on
        return steps.actions.get(step_id) in ("wait", "wait_for")
    return isinstance(node, ir.WaitForNode) or (isinstance(node, ir.WaitNode) and node.until is None)


def _check_loops(ctx: Ctx, steps: ParsedSteps) -> None:
    # A cycle that survives after removing every pausing step would run without ever yielding.
    busy = {s: [t for t in steps.edges[s] if t in steps.edges and not _pauses(steps, t)]
            for s in steps.order if not _pauses(steps, s)}
    for component in strongly_connected(busy):
        first = min(component, key=steps.order.index)
        cycle = _cycle_through(busy, first, component)
        if cycle:
            ctx.error(steps.pos[first], f"steps {' -> '.join(f'`{s}`' for s in cycle)} form a loop with no `wait` or "
                      "`wait_for`; customers would spin through it forever")


def strongly_connected(edges: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative so a long journey cannot hit Python's recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                out.append(component)
    return out


def _cycle_through(edges: dict[str, list[str]], first: str, component: set[str]) -> list[str]:
    """Shortest cycle first -> ... -> first inside `component`, or [] if there is none (a lone node without self-edge)."""
    parent: dict[str, str] = {}
    todo = deque([first])
    while todo:
        node = todo.popleft()
        for nxt in edges[node]:
            if nxt == first:
                path = [node]
                while path[-1] != first:
                    path.append(parent[path[-1]])
                return [*reversed(path), first]
            if nxt in component and nxt not in parent:
                parent[nxt] = node
                todo.append(nxt)
    return []


def _check_message_refs(ctx: Ctx, steps: ParsedSteps) -> None:
    for ref in ctx.message_refs:
        action = steps.actions.get(ref.step)
        if ref.step not in steps.edges:
            ctx.error(ref.pos, f"message_event in step `{ref.source}` refers to unknown step `{ref.step}`"
                      f"{did_you_mean(ref.step, steps.order)}")
        elif action != "send":
            ctx.error(ref.pos, f"message_event in step `{ref.source}` refers to step `{ref.step}`, which is "
                      f"{'a ' + action + ' step' if action else 'not a valid step'}, not a `send` step")
        elif ref.source == ref.step or ref.source not in reachable(steps.edges, ref.step):
            ctx.error(ref.pos, f"message_event in step `{ref.source}` refers to send step `{ref.step}`, which does not "
                      f"come before it: no path leads from `{ref.step}` to `{ref.source}`")
