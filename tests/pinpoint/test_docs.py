"""docs/pinpoint.md's table names each of the model's operations once, and says "supported" for exactly the
operations the server serves (a handler added or removed without the docs fails here)."""
from __future__ import annotations

import re
from pathlib import Path

import tidings.api.pinpoint  # noqa: F401  (registers the handlers)
from tidings.api.pinpoint.dispatch import HANDLERS
from tidings.api.pinpoint.protocol import service_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "pinpoint.md"
ROW = re.compile(r"^\| (?P<op>[A-Za-z]+) \| `(?P<method>[A-Z]+) (?P<uri>[^`]+)` \| (?P<status>.+) \|$")


def test_the_operations_table_matches_the_model_and_the_server():
    rows = [m.groupdict() for line in DOC.read_text().splitlines() if (m := ROW.match(line))]
    model = service_model()
    assert len(model.operation_names) == 122
    assert sorted(r["op"] for r in rows) == sorted(model.operation_names)
    for r in rows:
        http = model.operation_model(r["op"]).http
        assert (r["method"], r["uri"]) == (http["method"], http["requestUri"]), r["op"]
    assert {r["op"] for r in rows if r["status"].startswith("supported")} == set(HANDLERS)
