"""JsonLogic rules of journeys (entry and exit filters, wait_for and goal filters, split `when`): one
evaluator and one shape of the `event` a rule sees, for the runtime's activities and the ingestion seam."""
from __future__ import annotations

from typing import Any

from tidings.engine.platform.jsonlogic import compiled


def holds(rule: Any, data: dict) -> bool:
    if rule is None:
        return True
    result = compiled(rule).evaluate(data)
    return bool(result) and result != []


def event_doc(name: str, attributes: dict, metrics: dict, ts: int) -> dict:
    """The `event` a rule sees: attributes at the top level and under `properties`/`attributes`."""
    return {**metrics, **attributes, "name": name, "timestamp": ts, "attributes": attributes,
            "properties": {**attributes, **metrics}, "metrics": metrics}
