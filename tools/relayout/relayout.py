#!/usr/bin/env python3
"""Move Tidings' `engine/` into the domain layout (issue 15, ../shared/design/layout.md) and rewrite every reference.

Run from the root of a Tidings checkout (clean or not; it only uses `git mv`, `git rm`, `git add`):

    python3 tools/relayout/relayout.py            # apply
    python3 tools/relayout/relayout.py --dry-run  # print the plan, change nothing

Deterministic and idempotent: driven by MODULE_MAP / TABLE_SPLITS below; a second run changes nothing.
References are rewritten by parsing, never by a bare word match:
  * Python import statements (`import engine.x`, `from engine.x import y`, `from engine import x`, relative
    imports in engine/) are read with `ast` and regenerated on their exact source span;
  * everything else (strings such as the sandbox passthrough list, comments, docstrings, TOML, Markdown,
    YAML) by a token regex anchored on the full dotted path `engine.a.b` or file path `engine/a/b.py`;
    a name is rewritten only when its longest known prefix is an OLD module and no longer prefix is a NEW
    one, which is what makes a second run a no-op.
Modules it does not know (added at the engine root or under engine/journeys/ by other branches) stay where
they are and are listed at the end: add them to MODULE_MAP and re-run.
Temporal workflow and activity names are explicit strings (`@workflow.defn(name=...)`), so no history breaks.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------------------
# The map. Old dotted module -> new dotted module. Directories that are not packages (migrations) count too.
# ---------------------------------------------------------------------------------------------------------
MODULE_MAP: dict[str, str] = {
    # platform: knows no domain
    "engine.config": "engine.platform.config",
    "engine.clock": "engine.platform.clock",
    "engine.errors": "engine.platform.errors",
    "engine.db": "engine.platform.db",
    "engine.serial": "engine.platform.write_queue",
    "engine.egress": "engine.platform.egress",  # the destination guard: httpx/httpcore only, no domain
    "engine.retry": "engine.platform.retry",
    "engine.pagination": "engine.platform.pagination",
    "engine.batching": "engine.platform.batching",
    "engine.temporal": "engine.platform.temporal",
    "engine.migrations": "engine.platform.migrations",  # a directory (alembic script_location), moved whole
    # workspaces
    "engine.workspaces": "engine.workspaces.service",
    # customers
    "engine.customers": "engine.customers.users",
    "engine.endpoints": "engine.customers.endpoints",
    "engine.events": "engine.customers.events",
    "engine.attributes": "engine.customers.attributes",
    "engine.validation": "engine.customers.limits",
    "engine.changes": "engine.customers.on_write",
    "engine.schemas": "engine.customers.schemas",
    # segments
    "engine.segment_models": "engine.segments.tables",
    "engine.segments.sql": "engine.segments.to_sql",
    "engine.segments.paths": "engine.segments.typed_index",
    "engine.segments.clock": "engine.segments.refresh",
    "engine.segments.clock_workflow": "engine.segments.refresh_workflow",
    # channels (engine.channels and engine.hookspecs stay importable: PUBLIC_SHIMS)
    "engine.channels": "engine.channels.contract",
    "engine.hookspecs": "engine.channels.hookspecs",
    "engine.plugins": "engine.channels.plugin_manager",
    "engine.channel_config": "engine.channels.config",
    "engine.channel_secrets": "engine.channels.secrets",
    "engine.rate_limit": "engine.channels.rate_limit",
    # messaging
    "engine.templates": "engine.messaging.templates",
    "engine.templates_store": "engine.messaging.template_store",
    "engine.messages": "engine.messaging.dispatch",
    "engine.redelivery": "engine.messaging.redelivery",
    "engine.transactional": "engine.messaging.transactional",
    "engine.message_reads": "engine.messaging.reads",
    "engine.message_events": "engine.messaging.ledger",
    "engine.tracking": "engine.messaging.tracking",
    "engine.feedback": "engine.messaging.feedback",
    # journeys: language (YAML -> IR, no I/O), runtime (IR -> Temporal); ir, store, testing stay
    "engine.journeys.yaml_loader": "engine.journeys.language.yaml_loader",
    "engine.journeys.view": "engine.journeys.language.yaml_view",
    "engine.journeys.issues": "engine.journeys.language.issues",
    "engine.journeys.durations": "engine.journeys.language.durations",
    "engine.journeys.formats": "engine.journeys.language.formats",
    "engine.journeys.sections": "engine.journeys.language.sections",
    "engine.journeys.steps": "engine.journeys.language.steps",
    "engine.journeys.graph": "engine.journeys.language.graph",
    "engine.journeys.compiler": "engine.journeys.language.compiler",
    "engine.journeys.resources": "engine.journeys.language.resources",
    "engine.journeys.cohort": "engine.journeys.runtime.contracts",
    "engine.journeys.workflows": "engine.journeys.runtime.workflows",
    "engine.journeys.activities": "engine.journeys.runtime.activities",
    "engine.journeys.audience": "engine.journeys.runtime.audience",
    "engine.journeys.entries": "engine.journeys.runtime.entries",
    "engine.journeys.localtime": "engine.journeys.runtime.localtime",
    "engine.journeys.admission": "engine.journeys.runtime.admission",
    "engine.journeys.rules": "engine.journeys.runtime.rules",
    "engine.journeys.models": "engine.journeys.tables",
    # analytics
    "engine.metrics": "engine.analytics.metrics",
    "engine.funnel": "engine.analytics.funnel",
    "engine.streams": "engine.analytics.streams",
    "engine.records": "engine.analytics.stream_records",
    # ops
    "engine.cli": "engine.ops.cli",
    "engine.worker": "engine.ops.worker",
    "engine.devstack": "engine.ops.devstack",
    "engine.demo": "engine.ops.demo",
    "engine.smtp_sink": "engine.ops.smtp_sink",
    "engine.apply": "engine.ops.apply",
}

# Data files that move with their readers (paths relative to the repository root).
FILE_MAP: dict[str, str] = {
    "engine/journeys/schema.json": "engine/journeys/language/schema.json",
}

# Table modules that hold several domains' tables: each class goes to its domain's `tables` module.
# `value = Class.__table__` lines follow their class. `default` receives any statement not named here
# (and a mention of the whole old module in prose).
TABLE_SPLITS: dict[str, dict] = {
    "engine.models": {
        "default": "engine.customers.tables",
        "classes": {"Workspace": "engine.workspaces.tables", "ApiKey": "engine.workspaces.tables",
                    "User": "engine.customers.tables", "Endpoint": "engine.customers.tables",
                    "Event": "engine.customers.tables", "AttributeName": "engine.customers.tables"},
    },
    "engine.messaging_models": {
        "default": "engine.messaging.tables",
        "classes": {"ChannelConfig": "engine.channels.tables", "ChannelRoute": "engine.channels.tables",
                    "RateBucket": "engine.channels.tables", "StoredTemplate": "engine.messaging.tables",
                    "Message": "engine.messaging.tables", "OutboxMessage": "engine.messaging.tables",
                    "IdempotentRequest": "engine.messaging.tables"},
    },
    "engine.event_tables": {
        "default": "engine.messaging.tables",
        "classes": {"MessageRef": "engine.messaging.tables", "TrackingSecret": "engine.messaging.tables",
                    "EventStream": "engine.analytics.tables", "DeadLetter": "engine.analytics.tables"},
    },
}
TABLE_DOCS: dict[str, str] = {
    "engine.workspaces.tables": "Workspaces and their API keys.",
    "engine.customers.tables": "Customers: users, their endpoints, their events, and the attribute names seen.\n\n"
        "Customer documents keep their attributes and metrics as JSON on the row (what GET returns);\n"
        "the segment engine adds its own typed indexes for fast rule evaluation.",
    "engine.channels.tables": "Channels: stored channel configuration (secrets sealed by engine.channels.secrets), "
        "routes, rate buckets.",
    "engine.messaging.tables": "Messaging: templates, messages, the outbox, idempotent requests, the message index "
        "(send events by our id and the provider's), tracking secrets.",
    "engine.analytics.tables": "Analytics: event streams and their dead letters.",
}
TABLE_DOC_TAIL = ("Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.\n"
                  "Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and "
                  "PostgreSQL.")

# Packages the layout creates, with their docstring.
PACKAGES: dict[str, str] = {
    "engine.platform": "Platform: what every domain stands on (config, clock, errors, database, write queue, "
                       "pagination, Temporal). Knows no domain.",
    "engine.workspaces": "Workspaces and API keys: the tenant every other table hangs from.",
    "engine.customers": "Customers: users, endpoints, events, attributes, and the on-write listener list the "
                        "domains above register on.",
    "engine.messaging": "Messaging: templates, the one dispatch path, transactional sends, the message ledger, "
                        "tracking and provider feedback.",
    "engine.journeys.language": "Journey language: YAML -> IR (no I/O). The IR (engine.journeys.ir) is the "
                                "contract with the runtime.",
    "engine.journeys.runtime": "Journey runtime: IR -> Temporal (the cohort interpreter workflow, its "
                               "activities, audience, entries, local time).",
    "engine.analytics": "Analytics: metrics, funnels, event streams and their record formats.",
    "engine.ops": "Operations: the CLI, the worker, the dev stack, the demo, the SMTP sink, `tidings apply`.",
}

# Names third-party code imports: they stay importable as thin re-export modules, and the files written for
# third parties (the plugins we ship as examples of the public contract, the plugin guide) keep using them.
PUBLIC_SHIMS: dict[str, tuple[str, str]] = {
    "engine.channels": ("engine/channels/__init__.py",
                        '"""Channels. The plugin contract lives in engine.channels.contract; this package '
                        're-exports it,\nso third-party plugins keep writing `from engine.channels import Channel, '
                        'SendResult, ...`."""\nfrom engine.channels.contract import *  # noqa: F401,F403\n'
                        'from engine.channels.contract import __all__  # noqa: F401\n'),
    "engine.hookspecs": ("engine/hookspecs.py",
                         '"""Public alias of engine.channels.hookspecs (third-party plugins import `hookimpl` '
                         'from here)."""\nfrom engine.channels.hookspecs import *  # noqa: F401,F403\n'
                         'from engine.channels.hookspecs import hookimpl, hookspec  # noqa: F401\n'),
}
PUBLIC_FILES = ("plugins/", "tests/example_plugin/", "docs/writing-a-channel-plugin.md")

# Files the script itself provides (never rewritten: they are written for the new layout).
OWN_FILES = {"tests/test_layout.py": HERE / "test_layout.py", "docs/architecture.md": HERE / "architecture.md"}

TEXT_SUFFIXES = {".py", ".pyi", ".md", ".rst", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json",
                 ".mako", ".sh", ".html", ".j2", ".in", ""}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis",
             ".ruff_cache", ".mypy_cache", ".tidings", "node_modules"}

# Hand fixes that no general rule covers; each is (file after the move, old text, new text).
# Applied when `old` is present; reported when neither `old` nor `new` is found.
TEXT_FIXUPS: list[tuple[str, str, str]] = [
    # demo.py moves one level deeper: the example journeys are at the repository root.
    ("engine/ops/demo.py", 'Path(__file__).resolve().parent.parent / "journeys"',
     'Path(__file__).resolve().parents[2] / "journeys"'),
    ("tests/benchmarks/README.md", "`engine.journeys.{workflows,cohort,ir}`",
     "`engine.journeys.runtime.{workflows,contracts}` and `engine.journeys.ir`"),
]

# The docs step (skipped with --no-docs): docs/architecture.md is copied in (OWN_FILES) and the README points to it.
README_LAYOUT_OLD = """`engine/` domain (storage, customers, segments, journeys, workflows, activities, hookspecs), `api/` the
Litestar layer, `plugins/` built-in channels and sinks, `journeys/` example YAML resources, `docs/`,"""
README_LAYOUT_NEW = """`engine/` grouped by domain, lowest layer first: `platform/`, `workspaces/`, `customers/`, `segments/` and
`channels/`, `messaging/`, `journeys/` (`language/`: YAML -> IR; `runtime/`: IR on Temporal), `analytics/`, `ops/`
(CLI, worker, dev stack); [docs/architecture.md](docs/architecture.md) shows the layers, the write path and the
journey path. `api/` the Litestar layer, `plugins/` built-in channels and sinks, `journeys/` example YAML
resources, `docs/`,"""
README_DOCS_ROW_AFTER = "| --- | --- |\n"
README_DOCS_ROW = ("| [Architecture](docs/architecture.md) | the layers, the write path, the journey path "
                   "(YAML -> IR -> workflow -> activity -> plugin): where to start reading the code |\n")

WARNINGS: list[str] = []
VERBOSE = False


def warn(msg: str) -> None:
    WARNINGS.append(msg)


def log(msg: str) -> None:
    if VERBOSE:
        print(msg)


# ---------------------------------------------------------------------------------------------------------
# Name resolution
# ---------------------------------------------------------------------------------------------------------
class Resolver:
    def __init__(self, moves: dict[str, str], splits: dict[str, dict]):
        self.moves = {k: v for k, v in moves.items() if k != v}
        self.splits = splits
        self.targets = set(self.moves.values())
        for spec in splits.values():
            self.targets.add(spec["default"])
            self.targets.update(spec["classes"].values())
        self.split_symbols: dict[str, dict[str, str]] = {m: dict(s["classes"]) for m, s in splits.items()}
        overlap = self.targets & set(self.moves)
        assert not overlap, f"a target is also an old name (would chain on re-run): {overlap}"
        self.known_modules: set[str] = set()  # every module seen on disk before or after, plus both map sides

    def learn_symbols(self, module: str, symbol_targets: dict[str, str]) -> None:
        self.split_symbols.setdefault(module, {}).update(symbol_targets)

    def _longest(self, parts: list[str], names) -> int:
        for k in range(len(parts), 1, -1):
            if ".".join(parts[:k]) in names:
                return k
        return 0

    def resolve(self, dotted: str, public_ok: bool = False) -> str | None:
        """New spelling of `dotted` (a module, or a module followed by attributes), or None if unchanged."""
        parts = dotted.split(".")
        k_old = self._longest(parts, self.moves.keys() | self.splits.keys())
        if not k_old:
            return None
        if self._longest(parts, self.targets) >= k_old:
            return None
        old = ".".join(parts[:k_old])
        if public_ok and old in PUBLIC_SHIMS:
            return None
        rest = parts[k_old:]
        if old in self.splits:
            symbols = self.split_symbols.get(old, {})
            if rest and rest[0] in symbols:
                return ".".join([symbols[rest[0]], *rest])
            return ".".join([self.splits[old]["default"], *rest])
        return ".".join([self.moves[old], *rest])

    def is_module(self, dotted: str) -> bool:
        return dotted in self.known_modules or dotted in self.moves or dotted in self.targets \
            or dotted in self.splits


# ---------------------------------------------------------------------------------------------------------
# Import statements
# ---------------------------------------------------------------------------------------------------------
def _alias(name: str, asname: str | None) -> str:
    return f"{name} as {asname}" if asname and asname != name else name


def _format_from(module: str, names: list[tuple[str, str | None]], indent: str, width: int = 110) -> str:
    items = [_alias(n, a) for n, a in names]
    line = f"from {module} import {', '.join(items)}"
    if len(indent) + len(line) <= width:
        return line
    out, cur = [], indent + "    "
    for i, item in enumerate(items):
        piece = item + ","
        if len(cur) + len(piece) + 1 > width and cur.strip():
            out.append(cur.rstrip())
            cur = indent + "    "
        cur += piece + " "
    out.append(cur.rstrip())
    return f"from {module} import (\n" + "\n".join(out) + f"\n{indent})"


def _split_part_binding(target: str) -> str:
    return target.split(".")[-2] + "_tables"


def rewrite_import(node: ast.stmt, res: Resolver, current_module: str | None, old_module: str | None,
                   public_ok: bool, indent: str, used_names: set[str], where: str,
                   is_package: bool = False) -> list[str] | None:
    """The statements replacing `node`, or None when it stays as written."""
    if isinstance(node, ast.Import):
        changed, items = False, []
        for a in node.names:
            new = None
            if a.name.split(".")[0] == "engine":
                if a.name in res.splits:
                    warn(f"{where}: `import {a.name}` of a split table module: rewrite by hand")
                new = res.resolve(a.name, public_ok)
            if new and not a.asname:
                # `import engine.x` binds `engine`; attribute uses are rewritten by the text pass.
                pass
            changed |= bool(new)
            items.append(_alias(new or a.name, a.asname))
        return [f"import {', '.join(items)}"] if changed else None

    assert isinstance(node, ast.ImportFrom)
    module = node.module or ""
    if node.level:
        base = old_module or current_module
        if not base or not base.startswith("engine"):
            return None
        pkg = base.split(".")
        pkg = pkg[: len(pkg) - node.level + (1 if is_package else 0)]  # a package's __init__ is its own base
        module = ".".join(pkg + ([module] if module else []))
    if module.split(".")[0] != "engine":
        return None
    groups: "OrderedDict[str, list[tuple[str, str | None]]]" = OrderedDict()
    for a in node.names:
        full = f"{module}.{a.name}"
        if a.name != "*" and full in res.splits:
            binding = a.asname or a.name
            parts = sorted({s["default"] for s in [res.splits[full]]} | set(res.splits[full]["classes"].values()))
            for target in parts:
                parent, last = target.rsplit(".", 1)
                groups.setdefault(parent, []).append((last, _split_part_binding(target)))
            if binding in used_names:
                warn(f"{where}: `{binding}` (the old {full}) is used as a module here; its tables are now in "
                     f"{', '.join(parts)}: rewrite the uses by hand")
            continue
        if a.name != "*" and res.is_module(full):
            new = res.resolve(full, public_ok) or full
            parent, last = new.rsplit(".", 1)
            groups.setdefault(parent, []).append((last, a.asname or (a.name if last != a.name else None)))
            continue
        if module in res.splits:
            symbols = res.split_symbols.get(module, {})
            target = symbols.get(a.name)
            if target is None:
                target = res.splits[module]["default"]
                warn(f"{where}: `{a.name}` from split module {module} is not in its spec; sent to {target}")
            groups.setdefault(target, []).append((a.name, a.asname))
            continue
        new_module = res.resolve(module, public_ok) or module
        groups.setdefault(new_module, []).append((a.name, a.asname))
    original = [(a.name, a.asname) for a in node.names]
    if list(groups) == [node.module] and groups[node.module] == original and not node.level:
        return None
    return [_format_from(m, names, indent) for m, names in groups.items()]


# ---------------------------------------------------------------------------------------------------------
# Text rewriting
# ---------------------------------------------------------------------------------------------------------
DOTTED = re.compile(r"(?<![\w.])engine(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w.-])engine(?:/[A-Za-z_][\w.]*)+/?")
PATH_JOIN = re.compile(r"\"engine\"((?:\s*/\s*\"[\w.]+\")+)")
TEXT_IMPORT = re.compile(r"^([ \t]*)from (engine[\w.]*) import (\([^)]*\)|[^\n]*)", re.M)


def resolve_path(path: str, res: Resolver, public_ok: bool) -> str | None:
    trail = "/" if path.endswith("/") else ""
    p = path.rstrip("/")
    for old, new in FILE_MAP.items():
        if p == old:
            return new + trail
    suffix = ""
    for ext in (".py", ".json", ".mako", ".md"):
        if p.endswith(ext):
            p, suffix = p[: -len(ext)], ext
            break
    if "." in p:
        return None
    dotted = p.replace("/", ".")
    new = res.resolve(dotted, public_ok)
    if not new:
        return None
    return new.replace(".", "/") + suffix + trail


def rewrite_prose(text: str, res: Resolver, public_ok: bool) -> str:
    text = DOTTED.sub(lambda m: res.resolve(m.group(0), public_ok) or m.group(0), text)
    text = PATH.sub(lambda m: resolve_path(m.group(0), res, public_ok) or m.group(0), text)

    def join(m: re.Match) -> str:
        segs = ["engine"] + re.findall(r"\"([\w.]+)\"", m.group(1))
        new = resolve_path("/".join(segs), res, public_ok)
        if not new:
            return m.group(0)
        return " / ".join(f'"{s}"' for s in new.split("/"))

    return PATH_JOIN.sub(join, text)


def rewrite_nonpython(text: str, res: Resolver, public_ok: bool, where: str) -> str:
    pieces, last = [], 0
    for m in TEXT_IMPORT.finditer(text):
        stmt = m.group(0)[len(m.group(1)):]
        try:
            tree = ast.parse(stmt)
        except SyntaxError:
            continue
        if len(tree.body) != 1 or not isinstance(tree.body[0], ast.ImportFrom):
            continue
        new = rewrite_import(tree.body[0], res, None, None, public_ok, m.group(1), set(), where)
        pieces.append(rewrite_prose(text[last:m.start()], res, public_ok))
        pieces.append(m.group(1) + ("\n" + m.group(1)).join(new) if new else m.group(0))
        last = m.end()
    pieces.append(rewrite_prose(text[last:], res, public_ok))
    return "".join(pieces)


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _char_offset(text_lines_start: list[int], line_bytes: list[bytes], lineno: int, col: int) -> int:
    # ast columns are UTF-8 byte offsets
    return text_lines_start[lineno - 1] + len(line_bytes[lineno - 1][:col].decode("utf-8", "replace"))


def rewrite_python(text: str, res: Resolver, current_module: str | None, old_module: str | None,
                   public_ok: bool, where: str) -> str:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        warn(f"{where}: does not parse ({exc}); only its text was rewritten")
        return rewrite_prose(text, res, public_ok)
    used, imports = set(), []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            used.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            imports.append(n)
    lines = text.splitlines(keepends=True)
    line_bytes = [ln.encode("utf-8") for ln in lines] + [b""]
    starts = _offsets(text)
    nodes = sorted(imports, key=lambda n: (n.lineno, n.col_offset))
    pieces, last = [], 0
    for node in nodes:
        start = _char_offset(starts, line_bytes, node.lineno, node.col_offset)
        end = _char_offset(starts, line_bytes, node.end_lineno, node.end_col_offset)
        line_start = starts[node.lineno - 1]
        prefix = text[line_start:start]
        indent = prefix if not prefix.strip() else re.match(r"[ \t]*", prefix).group(0)
        new = rewrite_import(node, res, current_module, old_module, public_ok, indent, used,
                             f"{where}:{node.lineno}", is_package=where.endswith("__init__.py"))
        pieces.append(rewrite_prose(text[last:start], res, public_ok))
        span = text[start:end]
        if new is not None and len(new) == 1 and isinstance(node, ast.ImportFrom) and not node.level \
                and "#" in span:
            stmt = ast.parse(new[0]).body[0]
            if [(a.name, a.asname) for a in stmt.names] == [(a.name, a.asname) for a in node.names]:
                # only the module changed: keep the statement's own layout and comments
                new_span = re.sub(r"^from\s+" + re.escape(node.module), f"from {stmt.module}", span, count=1)
                if new_span != span:
                    pieces.append(new_span)
                    last = end
                    continue
        if new is None:
            pieces.append(span)
        else:
            if "#" in span:
                warn(f"{where}:{node.lineno}: a comment inside a rewritten import was dropped")
            sep = "\n" + indent if not prefix.strip() else "; "
            pieces.append(sep.join(new))
        last = end
    pieces.append(rewrite_prose(text[last:], res, public_ok))
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------------------
# Table splits
# ---------------------------------------------------------------------------------------------------------
def split_tables(root: Path, res: Resolver, dry: bool) -> dict[str, list[str]]:
    """Distribute the classes of TABLE_SPLITS' modules to their domains' `tables` modules."""
    parts: "OrderedDict[str, list[str]]" = OrderedDict()
    imports: dict[str, "OrderedDict[str, dict[str, str | None]]"] = {}
    plain_imports: dict[str, list[str]] = {}
    sources_done = []
    table_home: dict[str, str] = {}
    for old, spec in TABLE_SPLITS.items():
        src = root / (old.replace(".", "/") + ".py")
        if not src.exists():
            continue
        text = src.read_text()
        tree = ast.parse(text)
        lines = text.splitlines(keepends=True)
        class_target: dict[str, str] = {}
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]
        prev_end = tree.body[0].end_lineno if tree.body is not body else 0
        src_imports = []
        for stmt in body:
            first = stmt.lineno
            if getattr(stmt, "decorator_list", None):
                first = min(d.lineno for d in stmt.decorator_list)
            chunk = "".join(lines[prev_end:stmt.end_lineno])  # with the comments above it
            prev_end = stmt.end_lineno
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                src_imports.append(stmt)
                continue
            if isinstance(stmt, ast.ClassDef):
                target = spec["classes"].get(stmt.name)
                if target is None:
                    target = spec["default"]
                    warn(f"{src.relative_to(root)}: class {stmt.name} not in TABLE_SPLITS; sent to {target}")
                class_target[stmt.name] = target
                for sub in stmt.body:
                    if isinstance(sub, ast.Assign) and any(getattr(t, "id", "") == "__tablename__"
                                                           for t in sub.targets):
                        table_home[sub.value.value] = target
            else:
                named = [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id in class_target]
                target = class_target[named[0]] if named else spec["default"]
                if not named:
                    warn(f"{src.relative_to(root)}:{stmt.lineno}: statement sent to {target} (default)")
            parts.setdefault(target, []).append(chunk.strip("\n"))
            for t in getattr(stmt, "targets", []):
                if isinstance(t, ast.Name):
                    res.learn_symbols(old, {t.id: target})
            if isinstance(stmt, ast.ClassDef):
                res.learn_symbols(old, {stmt.name: target})
        for target in set(class_target.values()) | {spec["default"]}:
            plain_imports.setdefault(target, [])
            for imp in src_imports:
                if isinstance(imp, ast.ImportFrom):
                    d = imports.setdefault(target, OrderedDict()).setdefault(imp.module, {})
                    for a in imp.names:
                        d[a.name] = a.asname
                else:
                    plain_imports[target].append(ast.get_source_segment(text, imp))
        sources_done.append(src)
    if not parts:
        return {}
    written: dict[str, list[str]] = {}
    for target, chunks in parts.items():
        body_text = ""
        for i, chunk in enumerate(chunks):  # classes apart, the `x = X.__table__` lines together
            if i:
                body_text += "\n" if not chunk.startswith(("class ", "@", "#")) and \
                    not chunks[i - 1].startswith(("class ", "@")) else "\n\n\n"
            body_text += chunk
        body_text += "\n"
        body_tree = ast.parse(body_text)
        used = {n.id for n in ast.walk(body_tree) if isinstance(n, ast.Name)}
        doc = "\n".join(textwrap.fill(par, 110) for par in TABLE_DOCS.get(target, "Tables.").split("\n"))
        head = ['"""' + doc + "\n\n" + TABLE_DOC_TAIL + '\n"""']
        froms = imports.get(target, {})
        if "__future__" in froms:
            head.append("from __future__ import annotations")
        stdlib, third = [], []
        for mod, names in froms.items():
            if mod == "__future__":
                continue
            keep = [(n, a) for n, a in names.items() if (a or n) in used]
            if keep:
                group = stdlib if mod.split(".")[0] in sys.stdlib_module_names else third
                group.append(_format_from(mod, keep, ""))
        fks = sorted({table_home[t] for t in re.findall(r"(?:foreign_key=|ForeignKey\()\s*\"(\w+)\.", body_text)
                      if t in table_home and table_home[t] != target})
        first = [f"import {fk}  # noqa: F401  (its tables are named by the foreign keys below)" for fk in fks]
        head += ["\n".join(g) for g in (stdlib, third, first) if g]
        text = head[0] + "\n" + "\n\n".join(head[1:]) + "\n\n\n" + body_text
        path = root / (target.replace(".", "/") + ".py")
        written[target] = [str(path.relative_to(root))]
        log(f"split -> {path.relative_to(root)}")
        if not dry:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if not dry:
        for src in sources_done:
            git(root, "rm", "-q", "--cached", "--ignore-unmatch", str(src.relative_to(root)))
            src.unlink()
        git(root, "add", *[w for ws in written.values() for w in ws])
    return written


# ---------------------------------------------------------------------------------------------------------
# Moves
# ---------------------------------------------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def module_path(root: Path, dotted: str) -> Path | None:
    base = root / dotted.replace(".", "/")
    if (base.with_suffix(".py")).exists():
        return base.with_suffix(".py")
    if base.is_dir():
        return base
    return None


def scan_modules(root: Path) -> set[str]:
    mods = set()
    for p in (root / "engine").rglob("*.py"):
        if SKIP_DIRS & set(p.parts):
            continue
        rel = p.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.add(".".join(parts))
        for k in range(1, len(parts)):
            mods.add(".".join(parts[:k]))
    return mods


TRACKED: set[str] | None = None


def move(root: Path, src: Path, dst: Path, dry: bool) -> None:
    log(f"git mv {src.relative_to(root)} {dst.relative_to(root)}")
    if dry:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    global TRACKED
    if TRACKED is None:  # one `git ls-files` for the whole run
        TRACKED = set(git(root, "ls-files", "-z").split("\0"))
    rel = str(src.relative_to(root))
    if rel in TRACKED or any(t.startswith(rel + "/") for t in TRACKED):
        git(root, "mv", str(src.relative_to(root)), str(dst.relative_to(root)))
    else:
        shutil.move(str(src), str(dst))
        git(root, "add", str(dst.relative_to(root)))
    if src.is_dir() and src.exists():  # untracked leftovers (caches) of a moved directory
        shutil.rmtree(src, ignore_errors=True)


def ensure_package(root: Path, dotted: str, doc: str, dry: bool) -> None:
    init = root / dotted.replace(".", "/") / "__init__.py"
    if init.exists():
        return
    log(f"new package {init.relative_to(root)}")
    if not dry:
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(f'"""{doc}"""\n')
        git(root, "add", str(init.relative_to(root)))


def do_moves(root: Path, res: Resolver, dry: bool) -> dict[Path, str]:
    """Move every mapped module; returns new file -> its old dotted module name (for relative imports)."""
    moved: dict[Path, str] = {}
    for old, new in MODULE_MAP.items():
        if old == new:
            continue
        src, dst = module_path(root, old), module_path(root, new)
        if src is not None and src.suffix == "" and (src / "__init__.py").exists() and dst is not None:
            src = None  # the old module is now the package of its new home (engine.customers): done
        if src is not None and old in PUBLIC_SHIMS and src == root / PUBLIC_SHIMS[old][0] and dst is not None:
            src = None  # the public alias written by an earlier run
        if src is None:
            if dst is None:
                warn(f"{old} -> {new}: neither exists (gone from main?)")
            continue
        if dst is not None and not (src.is_dir() and dst == src):
            warn(f"{old} -> {new}: both exist; left {src.relative_to(root)} in place, merge by hand")
            continue
        target = root / new.replace(".", "/")
        target = target if src.is_dir() else target.with_suffix(".py")
        move(root, src, target, dry)
        if src.is_dir():
            for p in target.rglob("*.py"):
                moved[p] = old + "." + ".".join(p.relative_to(target).with_suffix("").parts)
        else:
            moved[target] = old
    for old, new in FILE_MAP.items():
        src, dst = root / old, root / new
        if src.exists() and not dst.exists():
            move(root, src, dst, dry)
    return moved


def check_collisions(root: Path) -> list[str]:
    """A module another branch added under a name the layout gives a package (engine/ops.py) would be
    shadowed by that package, silently."""
    packages = {".".join(t.split(".")[:k]) for t in MODULE_MAP.values() for k in range(2, len(t.split(".")))}
    found = []
    for pkg in sorted(packages):
        path = root / (pkg.replace(".", "/") + ".py")
        if path.exists() and pkg not in MODULE_MAP:
            found.append(f"{path.relative_to(root)} has the name of a package of the layout: map or rename it first")
    return found


def ensure_packages(root: Path, dry: bool) -> None:
    needed = set()
    for new in list(MODULE_MAP.values()) + [t for s in TABLE_SPLITS.values()
                                            for t in [s["default"], *s["classes"].values()]]:
        parts = new.split(".")
        for k in range(2, len(parts)):
            needed.add(".".join(parts[:k]))
    needed.discard("engine.platform.migrations")  # alembic's script directory, not a package
    for pkg in sorted(needed):
        if pkg in PUBLIC_SHIMS:
            continue
        if pkg == "engine.platform.migrations" or pkg.startswith("engine.platform.migrations."):
            continue
        ensure_package(root, pkg, PACKAGES.get(pkg, pkg.split(".")[-1].capitalize() + "."), dry)
    for name, (rel, text) in PUBLIC_SHIMS.items():
        path = root / rel
        if not path.exists():
            log(f"shim {rel}")
            if not dry:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                git(root, "add", rel)


# ---------------------------------------------------------------------------------------------------------
# Special cases
# ---------------------------------------------------------------------------------------------------------
def fix_lazy_exports(root: Path, dry: bool) -> None:
    """engine/journeys/__init__.py loads names on first use from `engine.journeys.<module>` (PEP 562)."""
    path = root / "engine/journeys/__init__.py"
    if not path.exists():
        return
    text = path.read_text()
    m = re.search(r"_EXPORTS = \{.*?\n\}", text, re.S)
    if not m:
        warn("engine/journeys/__init__.py: no _EXPORTS dict found; check its lazy names by hand")
        return

    def sub(v: re.Match) -> str:
        rel = v.group(2)
        new = MODULE_MAP.get(f"engine.journeys.{rel}")
        if new and new.startswith("engine.journeys."):
            rel = new[len("engine.journeys."):]
        return f"{v.group(1)}\"{rel}\""

    new_block = re.sub(r"(:\s*)\"([\w.]+)\"", sub, m.group(0))
    if new_block != m.group(0):  # one entry after the other, wrapped as the file is
        items = re.findall(r"\"\w+\": \"[\w.]+\"", new_block)
        lines, cur = [], "   "
        for item in items:
            if len(cur) + len(item) + 2 > 110:
                lines.append(cur)
                cur = "   "
            cur += f" {item},"
        new_block = "_EXPORTS = {\n" + "\n".join(lines + [cur]) + "\n}"
    if new_block != m.group(0) and not dry:
        path.write_text(text[: m.start()] + new_block + text[m.end():])


def fix_package_data(root: Path, dry: bool, res: Resolver) -> None:
    """pyproject's package-data names files relative to the `engine` package."""
    path = root / "pyproject.toml"
    text = path.read_text()
    m = re.search(r"^engine = \[(.*?)\]", text, re.M)
    if not m:
        warn("pyproject.toml: no `engine = [...]` package-data line; check package data by hand")
        return

    def sub(v: re.Match) -> str:
        rel = v.group(1)
        if "*" in rel:  # a glob: resolve its directory
            directory, glob = rel.rsplit("/", 1)
            new = resolve_path("engine/" + directory, res, False)
            new = f"{new}/{glob}" if new else None
        else:
            new = resolve_path("engine/" + rel, res, False)
        return f"\"{new[len('engine/'):]}\"" if new else v.group(0)

    new_line = re.sub(r"\"([^\"]+)\"", sub, m.group(0))
    if new_line != m.group(0) and not dry:
        path.write_text(text[: m.start()] + new_line + text[m.end():])


def fix_migrations_env(root: Path, dry: bool) -> None:
    """Alembic's env.py: every domain's `tables` module registers on SQLModel.metadata (autogenerate compares)."""
    path = root / "engine/platform/migrations/env.py"
    if not path.exists():
        warn("engine/platform/migrations/env.py not found")
        return
    text = path.read_text()
    pattern = re.compile(r"^(?:# Every domain's tables.*\n)?(?:from engine[\w.]* import tables as \w+.*\n)+", re.M)
    m = pattern.search(text)
    if not m:
        warn("engine/platform/migrations/env.py: no `from engine... import tables` lines; check its imports by hand")
        return
    modules = sorted(str(p.relative_to(root).with_suffix("")).replace("/", ".")
                     for p in (root / "engine").rglob("tables.py") if not SKIP_DIRS & set(p.parts))
    block = "# Every domain's tables register on SQLModel.metadata (autogenerate compares them with the migrations).\n"
    for mod in modules:
        parent, _, last = mod.rpartition(".")
        block += f"from {parent} import {last} as {parent.split('.')[-1]}_tables  # noqa: F401\n"
    if block != m.group(0) and not dry:
        path.write_text(text[: m.start()] + block + text[m.end():])


def fix_readme(root: Path) -> None:
    path = root / "README.md"
    text = path.read_text()
    new = text.replace(README_LAYOUT_OLD, README_LAYOUT_NEW)
    if "(docs/architecture.md) |" not in new and README_DOCS_ROW_AFTER in new:
        new = new.replace(README_DOCS_ROW_AFTER, README_DOCS_ROW_AFTER + README_DOCS_ROW, 1)
    if README_LAYOUT_NEW not in new:
        warn("README.md: its Layout paragraph is not the one expected; point it at docs/architecture.md by hand")
    if new != text:
        path.write_text(new)


def apply_text_fixups(root: Path, dry: bool) -> None:
    for rel, old, new in TEXT_FIXUPS:
        path = root / rel
        if not path.exists():
            warn(f"fixup for {rel}: file not found")
            continue
        text = path.read_text()
        if old in text:
            if not dry:
                path.write_text(text.replace(old, new))
        elif new not in text:
            warn(f"fixup for {rel}: neither the old nor the new text found; check `{old}` by hand")


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------
def text_files(root: Path) -> list[Path]:
    out = git(root, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    files = []
    for rel in out:
        if not rel:
            continue
        p = root / rel
        if not p.is_file() or SKIP_DIRS & set(Path(rel).parts):
            continue
        if p.resolve().parent == HERE:  # this tool's own map and files name the old modules on purpose
            continue
        if p.suffix not in TEXT_SUFFIXES and p.name not in ("run",):
            continue
        files.append(p)
    return sorted(set(files))


def module_of(root: Path, path: Path) -> str | None:
    rel = path.relative_to(root)
    if rel.parts[0] not in ("engine", "api", "plugins") or path.suffix != ".py":
        return None
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unknown_modules(root: Path, res: Resolver) -> list[str]:
    """Modules left where the layout has no place for them (engine root, engine/journeys root)."""
    placed = set(MODULE_MAP.values()) | res.targets | {"engine.journeys.ir", "engine.journeys.store",
                                                       "engine.journeys.testing", "engine.journeys.lifecycle",
                                                       "engine.wiring", "engine.platform.signing"}
    left = []
    for p in sorted((root / "engine").glob("*.py")) + sorted((root / "engine/journeys").glob("*.py")):
        name = module_of(root, p)
        if p.name == "__init__.py" or name in placed or name in PUBLIC_SHIMS:
            continue
        left.append(str(p.relative_to(root)))
    for d in sorted((root / "engine").iterdir()):
        if d.is_dir() and d.name not in SKIP_DIRS and f"engine.{d.name}" not in {
                ".".join(t.split(".")[:2]) for t in placed} and d.name != "journeys" and d.name != "segments":
            left.append(str(d.relative_to(root)) + "/")
    return left


def main() -> int:
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    ap.add_argument("--no-docs", action="store_true",
                    help="skip the docs step (docs/architecture.md, the README's pointer to it)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose or args.dry_run
    root = Path.cwd()
    if not (root / "engine").is_dir() or "name = \"tidings\"" not in (root / "pyproject.toml").read_text():
        print("run me from the root of a Tidings checkout", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res = Resolver(MODULE_MAP, TABLE_SPLITS)
    res.known_modules |= scan_modules(root)

    collisions = check_collisions(root)
    if collisions:
        print("\n".join(collisions), file=sys.stderr)
        if not args.dry_run:
            return 2
    written = split_tables(root, res, args.dry_run)
    moved = do_moves(root, res, args.dry_run)
    ensure_packages(root, args.dry_run)
    res.known_modules |= scan_modules(root)

    # The split modules' symbols, for runs after the split (the source is gone, the spec still names them).
    for old, spec in TABLE_SPLITS.items():
        for target in {spec["default"], *spec["classes"].values()}:
            path = root / (target.replace(".", "/") + ".py")
            if path.exists():
                try:
                    tree = ast.parse(path.read_text())
                except SyntaxError:
                    continue
                for stmt in tree.body:
                    if isinstance(stmt, ast.ClassDef) and spec["classes"].get(stmt.name) == target:
                        res.learn_symbols(old, {stmt.name: target})
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Attribute) and \
                            getattr(stmt.value.value, "id", "") in spec["classes"] and \
                            spec["classes"][stmt.value.value.id] == target:
                        for t in stmt.targets:
                            res.learn_symbols(old, {t.id: target})

    own = {root / rel for rel in OWN_FILES} | {root / rel for rel, _ in PUBLIC_SHIMS.values()}
    changed = 0
    for path in text_files(root) if not args.dry_run else []:
        if path in own or path.name == Path(__file__).name:
            continue
        rel = str(path.relative_to(root))
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if "engine" not in text:
            continue
        public_ok = rel.startswith(PUBLIC_FILES)
        if path.suffix in (".py", ".pyi"):
            new = rewrite_python(text, res, module_of(root, path), moved.get(path), public_ok, rel)
        else:
            new = rewrite_nonpython(text, res, public_ok, rel)
        if new != text:
            path.write_text(new)
            changed += 1
            log(f"rewrote {rel}")

    if not args.dry_run:
        fix_lazy_exports(root, args.dry_run)
        fix_package_data(root, args.dry_run, res)
        fix_migrations_env(root, args.dry_run)
        apply_text_fixups(root, args.dry_run)
        if not args.no_docs:
            fix_readme(root)
        for rel, src in OWN_FILES.items():
            if args.no_docs and rel.startswith("docs/"):
                continue
            dst = root / rel
            if not dst.exists():
                if src.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                    git(root, "add", rel)
                    print(f"wrote {rel} (from {src})")
                else:
                    warn(f"{rel} is absent and {src} (next to this script) too")
        git(root, "add", "-A", "engine", "api", "plugins", "tests", "docs", "README.md", "pyproject.toml")
        # Every Python file must still parse.
        for path in text_files(root):
            if path.suffix == ".py":
                try:
                    compile(path.read_text(), str(path), "exec")
                except SyntaxError as exc:
                    warn(f"{path.relative_to(root)} does not compile after the rewrite: {exc}")

    took = time.monotonic() - t0
    print(f"relayout: {len(moved)} modules moved, {len(written)} table modules written, "
          f"{changed} files rewritten in {took:.1f}s")
    left = unknown_modules(root, res)
    if left:
        print("\n" + "!" * 100)
        print("MODULES THE MAP DOES NOT KNOW (left in place; add them to MODULE_MAP and re-run):")
        for name in left:
            print(f"   {name}")
        print("!" * 100)
    if WARNINGS:
        print("\nwarnings (check by hand):")
        for w in WARNINGS:
            print(f"  - {w}")
    print("\nnext: .venv/bin/pip install -q -e '.[test]'  (the `tidings` console script points at engine.ops.cli)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
