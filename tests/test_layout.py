"""Imports go down the layers, never up (docs/architecture.md).

    platform < workspaces < customers < segments, channels < messaging < journeys < analytics < api, ops

A module imports only its own domain and the domains below it; plugins/ import only platform, channels and
the public contract (tidings.engine.channels, tidings.engine.hookspecs). Every import counts, including the ones inside
functions and under `if TYPE_CHECKING:` (hiding an import in a function hides a cycle, it does not remove
it). The imports are read with `ast`, nothing is imported.

KNOWN_VIOLATIONS lists today's upward imports, each with the follow-up that removes it. The list only
shrinks: the test fails on an upward import that is not listed, and on a listed one that is gone.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The folders install as tidings.engine, tidings.api, tidings.plugins: names are compared without the prefix.
NAMESPACE = "tidings."


def short(module: str) -> str:
    return module.removeprefix(NAMESPACE)


RANK = {"platform": 0, "workspaces": 1, "customers": 2, "segments": 3, "channels": 3, "messaging": 4,
        "journeys": 5, "analytics": 6, "api": 7, "ops": 7}
# The composition root: the CLI serves the API (`tidings serve`).
ALLOWED = {("ops", "api")}
# Modules outside a domain's package. tidings.engine.wiring registers the write listeners of segments, messaging and
# journeys on customers.on_write: it ranks with journeys, the highest domain it imports, so that everything
# that opens a database (the journey test harness, the API, ops) may call it and it may import nothing higher.
ALIASES = {"tidings.engine.hookspecs": "channels", "tidings.engine.wiring": "journeys"}
PLUGIN_MAY_IMPORT = {"platform", "channels"}

# (importer, imported): why it exists -> the follow-up (issue 15's item) that removes it.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found = {}
    for top in ("engine", "api", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts or "__pycache__" in path.parts:
                continue  # alembic's scripts import only the table modules, whichever layer
            found[module_name(path)] = path
    return found


def domain_of(module: str) -> str | None:
    module = short(module)
    aliases = {short(m): d for m, d in ALIASES.items()}
    if module in aliases:
        return aliases[module]
    parts = module.split(".")
    if parts[0] in ("api", "plugins"):
        return parts[0]
    if parts[0] == "engine" and len(parts) > 1 and parts[1] in RANK:
        return parts[1]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every first-party module `module` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(short(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = short(node.module or "")
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(package + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in modules else base)
    return {m for m in out if m.split(".")[0] in ("engine", "api", "plugins")}


def crosses(importer: str, imported: str) -> bool:
    a, b = domain_of(importer), domain_of(imported)
    if a is None or b is None or a == b:
        return False
    if a == "plugins":
        return b not in PLUGIN_MAY_IMPORT
    if b == "plugins":
        return True  # engine and api reach plugins through the plugin manager and the hooks only
    return (a, b) not in ALLOWED and RANK[b] >= RANK[a]


def violations() -> set[tuple[str, str]]:
    modules = source_modules()
    return {(name, imported) for name, path in modules.items()
            for imported in imports_of(name, path, modules) if crosses(name, imported)}


def known() -> set[tuple[str, str]]:
    return {(short(a), short(b)) for a, b in KNOWN_VIOLATIONS}


def test_every_engine_module_belongs_to_a_domain():
    homeless = sorted(name for name in source_modules() if name != "engine" and domain_of(name) is None)
    assert not homeless, f"place these modules in a domain (docs/architecture.md): {homeless}"


def test_imports_never_go_up_a_layer():
    found = violations()
    new = sorted(found - known())
    assert not new, "upward imports (move the code, or pass a function down):\n" + "\n".join(
        f'    ("{a}", "{b}"): "{domain_of(a)} -> {domain_of(b)}: <why; the follow-up that removes it>",'
        for a, b in new)


def test_known_violations_only_shrink():
    gone = sorted(known() - violations())
    assert not gone, f"fixed (well done): remove them from KNOWN_VIOLATIONS: {gone}"


def test_the_layer_check_catches_an_upward_import():
    assert crosses("tidings.engine.customers.users", "tidings.engine.segments.membership")
    assert crosses("tidings.engine.platform.db", "tidings.engine.customers.tables")
    assert crosses("tidings.engine.segments.evaluate", "tidings.engine.channels.contract")  # peers stay apart
    assert crosses("tidings.plugins.outbox", "tidings.engine.messaging.tables")
    assert crosses("tidings.api.app", "tidings.plugins.email_smtp")
    assert not crosses("tidings.engine.journeys.runtime.activities", "tidings.engine.messaging.dispatch")
    assert not crosses("tidings.plugins.webhook", "tidings.engine.hookspecs")
    assert not crosses("tidings.engine.ops.cli", "tidings.api.app")
