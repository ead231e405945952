#!/usr/bin/env bash
# Robustness check of relayout.py on a scratch clone: a module the map does not know (engine/foo.py, as another
# branch might add) imports moved modules in every style; a test imports it. Usage: relayout_selftest.sh REPO [PY]
set -euo pipefail
REPO=${1:?a Tidings checkout}; PY=${2:-$REPO/.venv/bin/python}; HERE=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d /tmp/relayout-selftest.XXXX)
git clone -q "$REPO" "$SCRATCH/repo" && cd "$SCRATCH/repo"
cat > engine/foo.py <<'EOF'
"""A module another branch adds: uses engine.messages and engine/channel_secrets.py in every style."""
from __future__ import annotations

import engine.serial
import engine.journeys.localtime as lt
from engine import customers, messages as msgs
from engine.channels import Channel, SendResult
from engine.clock import (
    now_ms,  # a comment inside the import
)
from engine.models import users, workspaces
from engine.journeys import compiler, store, compile_journey
from engine.segments import paths
from engine.segments.sql import RARE_KINDS
from . import channel_secrets
from .db import reading

PASSTHROUGH = ("engine.journeys.workflows", "engine.messages")


def names() -> dict:
    from engine import changes
    from engine.segment_models import segments as seg_table
    import engine.templates_store
    return {"write": engine.serial.write.__module__, "lt": lt.__name__, "customers": customers.__name__,
            "msgs": msgs.__name__, "users": users.name, "ws": workspaces.name,
            "compiler": compiler.__name__, "store": store.__name__, "compile": compile_journey.__name__,
            "paths": paths.__name__, "rare": RARE_KINDS, "secrets": channel_secrets.__name__,
            "reading": reading.__module__, "changes": changes.__name__, "seg": seg_table.name,
            "ts": engine.templates_store.__name__, "now": now_ms() > 0, "ch": Channel.__module__,
            "sr": SendResult.__name__, "passthrough": PASSTHROUGH}
EOF
cat > tests/test_foo.py <<'EOF'
import engine.foo
from engine import foo as foo_again
from engine.foo import names


def test_foo_names_resolve_to_the_new_modules():
    n = names()
    assert n["write"] == "engine.platform.write_queue" and n["lt"] == "engine.journeys.runtime.localtime"
    assert n["customers"] == "engine.customers.users" and n["msgs"] == "engine.messaging.dispatch"
    assert (n["users"], n["ws"], n["seg"]) == ("users", "workspace", "segment")
    assert n["compiler"] == "engine.journeys.language.compiler" and n["store"] == "engine.journeys.store"
    assert n["paths"] == "engine.segments.typed_index" and n["secrets"] == "engine.channels.secrets"
    assert n["reading"] == "engine.platform.db" and n["changes"] == "engine.customers.on_write"
    assert n["ts"] == "engine.messaging.template_store" and n["ch"] == "engine.channels.contract"
    assert n["passthrough"] == ("engine.journeys.runtime.workflows", "engine.messaging.dispatch")
    assert engine.foo.names is foo_again.names
EOF
git add -A
echo "== first run"; python3 "$HERE/relayout.py"
echo "== engine/foo.py after the run"; cat engine/foo.py
echo "== second run (must change nothing)"; T1=$(git add -A && git write-tree); python3 "$HERE/relayout.py" | head -1
T2=$(git add -A && git write-tree); [ "$T1" = "$T2" ] && echo "idempotent: yes" || { echo "idempotent: NO"; git diff --stat "$T1" "$T2"; exit 1; }
echo "== tests"; "$PY" -m pytest -q -p no:cacheprovider tests/test_foo.py tests/test_layout.py || true
echo "(test_layout is expected to fail here: engine/foo.py is unplaced and imports upward)"
