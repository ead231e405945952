"""One spelling for the workspace (docs/architecture.md, "Names"): `workspace` is a WorkspaceRef (or, where a
caller holds only that, its id), `workspace_id` an int, `workspace_name` a str. The old spellings (`ws`,
`ws_id`) are refused, read with `ast` as the layout test reads imports."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = {"ws": "workspace", "ws_id": "workspace_id"}


def old_spellings(root: Path = ROOT) -> list[str]:
    found = []
    for top in ("engine", "api", "plugins"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                name = node.arg if isinstance(node, ast.arg) else node.id if isinstance(node, ast.Name) else None
                if name in OLD:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name} -> {OLD[name]}")
    return found


def test_the_workspace_has_one_spelling():
    assert not old_spellings(), "\n".join(old_spellings())


def test_the_check_catches_the_old_spelling(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "m.py").write_text("def f(db, ws, ws_id: int):\n    return ws.id, ws_id\n")
    assert sorted(old_spellings(tmp_path)) == ["engine/m.py:1: ws -> workspace", "engine/m.py:1: ws_id -> workspace_id",
                                               "engine/m.py:2: ws -> workspace", "engine/m.py:2: ws_id -> workspace_id"]
