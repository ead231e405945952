"""JsonLogic rules of journeys (entry and exit filters, wait_for and goal filters, split `when`): one
evaluator and one shape of the `event` a rule sees, for the runtime's activities and the ingestion seam."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import datalogic_py
import msgspec

_engine = datalogic_py.Engine()


@lru_cache(maxsize=512)
def _rule(text: str):
    return _engine.compile(msgspec.json.decode(text))


def holds(rule: Any, data: dict) -> bool:
    if rule is None:
        return True
    result = _rule(msgspec.json.encode(rule).decode()).evaluate(data)
    return bool(result) and result != []


def event_doc(name: str, attributes: dict, metrics: dict, ts: int) -> dict:
    """The `event` a rule sees: attributes at the top level and under `properties`/`attributes`."""
    return {**metrics, **attributes, "name": name, "timestamp": ts, "attributes": attributes,
            "properties": {**attributes, **metrics}, "metrics": metrics}
