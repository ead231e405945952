"""The segment builder's condition list: one condition (attribute, metric, endpoint, event performed
within, in another segment) written as JsonLogic and AND-ed onto the rule being edited. Only composes the
rule's text; validation and sizing stay the engine's (tidings.engine.segments.preview)."""
from __future__ import annotations

from typing import Any

from tidings.engine.platform.errors import InvalidInput

KINDS = {"attribute": "Attribute", "metric": "Metric", "endpoint": "Endpoint field",
         "performed": "Event performed", "in_segment": "In segment"}
OPERATORS = {"==": "is", "!=": "is not", "in": "is one of (comma-separated)", "contains": "contains",
             ">": ">", ">=": "≥", "<": "<", "<=": "≤"}


def condition(kind: str, name: str, op: str, value: str) -> Any:
    name, value = name.strip(), value.strip()
    if kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}", field="kind")
    if not name:
        raise InvalidInput("name the attribute, metric, field, event or segment", field="name")
    if kind == "in_segment":
        return {"in_segment": name}
    if kind == "performed":
        spec = {"event": name, **({"within": value} if value else {})}  # e.g. 30d; empty: ever
        return {"performed": spec}
    if op not in OPERATORS:
        raise InvalidInput(f"operator is one of {', '.join(OPERATORS)}", field="op")
    var = {"var": name if kind == "endpoint" else f"{kind}s.{name}"}
    if kind == "metric" or op in (">", ">=", "<", "<="):
        try:
            compared: Any = float(value)
        except ValueError:
            raise InvalidInput(f"{value!r} is not a number", field="value") from None
        compared = int(compared) if compared.is_integer() else compared
    else:
        compared = value
    if op == "in":
        test: Any = {"in": [var, [v.strip() for v in value.split(",") if v.strip()]]}
    elif op == "contains":
        test = {"in": [str(compared), var]}
    else:
        test = {op: [var, compared]}
    return {"some": [{"var": "endpoints"}, test]} if kind == "endpoint" else test


def and_onto(rule: Any, extra: Any) -> Any:
    """`rule AND extra`, flat when the rule is already a conjunction; extra alone for an empty rule."""
    if rule in (None, True, {}):
        return extra
    if isinstance(rule, dict) and list(rule) == ["and"] and isinstance(rule["and"], list):
        return {"and": [*rule["and"], extra]}
    return {"and": [rule, extra]}
