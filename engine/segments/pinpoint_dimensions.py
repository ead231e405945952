"""Pinpoint segment definitions (Dimensions, SegmentGroups) <-> native JsonLogic segment rules, both ways.

One canonical rule shape per definition, so a segment made through the Pinpoint API reads back through it and
through /v1/segments, and a native rule of the same shape (or of the simple shapes docs/segments.md lists)
reads back as Dimensions. Endpoint dimensions (Attributes, Metrics, Demographic, Location.Country) must hold
for the same endpoint, as in Pinpoint: they go into one `some` over `endpoints`.

    Dimensions      {"and": [user parts..., recency, within_km, {"some": [endpoints, {"and": [endpoint parts]}]}]}
                    (no dimension at all: `true`)
    SegmentGroups   {"and": [Dimensions rule, INCLUDE([{"and": [SOURCE(in_segment...), TYPE(Dimensions rules)]}])]}
    ALL / ANY / NONE   {"and": xs} / {"or": xs} / {"!": {"or": xs}}

A dimension the native rules cannot express raises InvalidInput naming its path (never dropped).
"""
from __future__ import annotations

from typing import Any

from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments import rules

RECENCY = {"HR_24": "24h", "DAY_7": "7d", "DAY_14": "14d", "DAY_30": "30d"}
METRIC_OPS = {"GREATER_THAN": ">", "LESS_THAN": "<", "GREATER_THAN_OR_EQUAL": ">=", "LESS_THAN_OR_EQUAL": "<=",
              "EQUAL": "=="}
DEMOGRAPHIC = {"AppVersion": "demographic.app_version", "Channel": "channel", "Make": "demographic.make",
               "Model": "demographic.model", "Platform": "demographic.platform"}
COUNTRY = "location.country"
PUSH_CHANNELS = {"GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "BAIDU", "PUSH"}
NATIVE_CHANNELS = {"EMAIL", "SMS", "VOICE", "CUSTOM"}
DATE_TYPES = {"BEFORE": 1, "AFTER": 1, "ON": 1, "BETWEEN": 2}
ENDPOINTS = {"var": "endpoints"}


def _refuse(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"{path}: {message}", field=path)


def _combine(kind: str, parts: list[Any]) -> Any:
    return {"and": parts} if kind == "ALL" else {"or": parts} if kind == "ANY" else {"!": {"or": parts}}


def _uncombine(node: Any) -> tuple[str, list[Any]] | None:
    if isinstance(node, dict) and len(node) == 1:
        (op, args), = node.items()
        if op in ("and", "or") and isinstance(args, list):
            return ("ALL" if op == "and" else "ANY"), args
        if op == "!" and isinstance(args, dict) and list(args) == ["or"] and isinstance(args["or"], list):
            return "NONE", args["or"]
    return None


# ---- Pinpoint -> rule ----------------------------------------------------------------------------------------

def _any(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else {"or": parts}


def _member(path: str, values: list[str], user_level: bool = True) -> Any:
    """The attribute is one of `values` / holds one of them. An endpoint's attributes are lists of strings; a
    user's is a string (one value) or a list."""
    held = {"some": [{"var": path}, {"in": [{"var": ""}, values]}]}
    return {"or": [{"in": [{"var": path}, values]}, held]} if user_level else held


def _contains(path: str, values: list[str], user_level: bool = True) -> Any:
    """The attribute (or one of its strings) contains one of `values` (case-sensitive substring)."""
    held = {"some": [{"var": path}, _any([{"in": [v, {"var": ""}]} for v in values])]}
    return {"or": [held, *({"in": [v, {"var": path}]} for v in values)]} if user_level else held


def _values(dim: dict[str, Any], path: str) -> list[str]:
    values = dim.get("Values") or []
    if not values:
        raise _refuse(f"{path}.Values", "at least one value")
    return list(values)


def _attribute(name: str, dim: dict[str, Any], path: str, user_level: bool) -> Any:
    kind = dim.get("AttributeType") or "INCLUSIVE"
    values = _values(dim, path)
    var = f"attributes.{name}"
    if kind == "INCLUSIVE":
        return _member(var, values, user_level)
    if kind == "EXCLUSIVE":
        return {"!": _member(var, values, user_level)}
    if kind == "CONTAINS":
        return _contains(var, values, user_level)
    if not user_level:
        raise _refuse(f"{path}.AttributeType", f"{kind} compares dates of user attributes only (UserAttributes); "
                      "Tidings' date operators do not apply to endpoint attributes")
    if len(values) != DATE_TYPES[kind]:
        raise _refuse(f"{path}.Values", f"{kind} takes {DATE_TYPES[kind]} date(s), got {len(values)}")
    return {kind.lower(): [var, *values]}


def _set(var: str, dim: dict[str, Any], path: str) -> Any:
    values = _values(dim, path)
    if var == "channel":
        mapped = []
        for v in values:
            if v not in PUSH_CHANNELS | NATIVE_CHANNELS:
                raise _refuse(f"{path}.Values", f"{v!r} is not a channel Tidings has (EMAIL, SMS, VOICE, CUSTOM "
                              "or a push type)")
            native = "PUSH" if v in PUSH_CHANNELS else v
            if native not in mapped:
                mapped.append(native)
        values = mapped
    rule = {"in": [{"var": var}, values]}
    return {"!": rule} if dim.get("DimensionType") == "EXCLUSIVE" else rule


def _metric(name: str, dim: dict[str, Any], path: str) -> Any:
    op = METRIC_OPS.get(dim["ComparisonOperator"])
    if op is None:
        raise _refuse(f"{path}.ComparisonOperator", f"one of {', '.join(METRIC_OPS)}")
    var = {"var": f"metrics.{name}"}
    return {"and": [{"!==": [var, None]}, {op: [var, dim["Value"]]}]}


def _checked(part: Any, path: str, endpoint: bool = False) -> Any:
    """The part as the native validator sees it; its faults named by the Pinpoint path."""
    try:
        rules.expand({"some": [ENDPOINTS, part]} if endpoint else part)
    except rules.RuleError as exc:
        raise _refuse(path, exc.details[0]["message"]) from None
    return part


def dimensions_rule(dims: dict[str, Any] | None, path: str = "Dimensions") -> Any:
    dims = dims or {}
    parts, endpoint = [], []
    for name, dim in sorted((dims.get("UserAttributes") or {}).items()):
        where = f"{path}.UserAttributes.{name}"
        parts.append(_checked(_attribute(name, dim, where, True), where))
    recency = (dims.get("Behavior") or {}).get("Recency")
    if recency is not None:
        parts.append({"active" if recency["RecencyType"] == "ACTIVE" else "inactive": RECENCY[recency["Duration"]]})
    location = dims.get("Location") or {}
    gps = location.get("GPSPoint")
    if gps is not None:
        where = f"{path}.Location.GPSPoint"
        if gps.get("RangeInKilometers") is None:
            raise _refuse(f"{where}.RangeInKilometers", "Tidings needs the range (km) around the point")
        point = gps["Coordinates"]
        parts.append(_checked({"within_km": {"lat": point["Latitude"], "lon": point["Longitude"],
                                             "km": gps["RangeInKilometers"]}}, where))
    for name, dim in sorted((dims.get("Attributes") or {}).items()):
        endpoint.append(_attribute(name, dim, f"{path}.Attributes.{name}", False))
    for name, dim in sorted((dims.get("Metrics") or {}).items()):
        endpoint.append(_checked(_metric(name, dim, f"{path}.Metrics.{name}"), f"{path}.Metrics.{name}", True))
    demographic = dims.get("Demographic") or {}
    if demographic.get("DeviceType") is not None:
        raise _refuse(f"{path}.Demographic.DeviceType", "Tidings keeps no device type on endpoints "
                      "(Demographic has AppVersion, Make, Model, Platform, ...)")
    for field, var in DEMOGRAPHIC.items():
        if demographic.get(field) is not None:
            endpoint.append(_set(var, demographic[field], f"{path}.Demographic.{field}"))
    if location.get("Country") is not None:
        endpoint.append(_set(COUNTRY, location["Country"], f"{path}.Location.Country"))
    if endpoint:  # (nesting kept shallow: the SQL translation nests as deep as the rule)
        parts.append({"some": [ENDPOINTS, endpoint[0] if len(endpoint) == 1 and "and" not in endpoint[0]
                               else {"and": endpoint}]})
    return (parts[0] if len(parts) == 1 else {"and": parts}) if parts else True


def segment_rule(dims: dict[str, Any] | None, groups: dict[str, Any] | None) -> Any:
    """The native rule of a WriteSegmentRequest's Dimensions and SegmentGroups."""
    base = dimensions_rule(dims)
    if not groups:
        return base
    built = []
    for i, group in enumerate(groups.get("Groups") or []):
        where = f"SegmentGroups.Groups[{i}]"
        sources = []
        for j, ref in enumerate(group.get("SourceSegments") or []):
            if ref.get("Version") is not None:
                raise _refuse(f"{where}.SourceSegments[{j}].Version", "Tidings segments refer to a segment's "
                              "current definition, not to one of its versions; leave Version out")
            sources.append({"in_segment": ref["Id"]})
        source = _combine(group.get("SourceType") or "ALL", sources) if sources else True
        typed = [dimensions_rule(d, f"{where}.Dimensions[{k}]") for k, d in enumerate(group.get("Dimensions") or [])]
        built.append({"and": [source, _combine(group.get("Type") or "ALL", typed) if typed else True]})
    if not built:
        raise InvalidInput("SegmentGroups.Groups: at least one group", field="SegmentGroups.Groups")
    return {"and": [base, _combine(groups.get("Include") or "ALL", built)]}


# ---- rule -> Pinpoint ----------------------------------------------------------------------------------------

def _var(node: Any) -> str | None:
    return node["var"] if isinstance(node, dict) and list(node) == ["var"] and isinstance(node["var"], str) else None


def _strings(node: Any) -> list[str] | None:
    return node if isinstance(node, list) and node and all(isinstance(v, str) for v in node) else None


def _read_attribute(node: Any, user_level: bool) -> tuple[str, dict[str, Any]] | None:
    """(name, AttributeDimension) of an attribute part, or None."""
    exclusive = isinstance(node, dict) and list(node) == ["!"]
    inner = node["!"] if exclusive else node
    for kind, build in (("INCLUSIVE", _member), ("CONTAINS", _contains)):
        try:
            held = inner["or"][1 if kind == "INCLUSIVE" else 0] if user_level else inner
            var = _var(held["some"][0])
            test = held["some"][1]
            values = test["in"][1] if kind == "INCLUSIVE" else [
                x["in"][0] for x in (test["or"] if list(test) == ["or"] else [test])]
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
        if var and var.startswith("attributes.") and _strings(values) and inner == build(var, values, user_level) \
                and not (exclusive and kind == "CONTAINS"):
            return var[len("attributes."):], {"AttributeType": "EXCLUSIVE" if exclusive else kind, "Values": values}
    # the simple native shape of docs/segments.md: {"in": [{"var": "attributes.plan"}, ["pro", "team"]]}
    simple = _read_set(inner)
    if simple and simple[0].startswith("attributes."):
        return simple[0][len("attributes."):], {"AttributeType": "EXCLUSIVE" if exclusive else "INCLUSIVE",
                                                 "Values": simple[1]}
    if user_level and isinstance(node, dict) and len(node) == 1:
        (op, args), = node.items()
        kind = op.upper()
        if kind in DATE_TYPES and isinstance(args, list) and len(args) == DATE_TYPES[kind] + 1 \
                and isinstance(args[0], str) and args[0].startswith("attributes.") and _strings(args[1:]):
            return args[0][len("attributes."):], {"AttributeType": kind, "Values": args[1:]}
    return None


def _read_set(node: Any) -> tuple[str, list[str]] | None:
    if not isinstance(node, dict) or len(node) != 1:
        return None
    (op, args), = node.items()
    if not isinstance(args, list) or len(args) != 2:
        return None
    var = _var(args[0])
    if op == "in" and var and _strings(args[1]):
        return var, args[1]
    if op == "==" and var and isinstance(args[1], str):
        return var, [args[1]]
    return None


def _read_endpoint_part(node: Any, dims: dict[str, Any]) -> bool:
    exclusive = isinstance(node, dict) and list(node) == ["!"]
    found = _read_set(node["!"] if exclusive else node)
    if found:
        var, values = found
        field = next((f for f, v in DEMOGRAPHIC.items() if v == var), None)
        dim = {"DimensionType": "EXCLUSIVE" if exclusive else "INCLUSIVE", "Values": values}
        if field is not None:
            return dims.setdefault("Demographic", {}).setdefault(field, dim) is dim
        if var == COUNTRY:
            return dims.setdefault("Location", {}).setdefault("Country", dim) is dim
    attribute = _read_attribute(node, False)
    if attribute:
        return dims.setdefault("Attributes", {}).setdefault(attribute[0], attribute[1]) is attribute[1]
    try:
        var, (op, args) = _var(node["and"][0]["!=="][0]), next(iter(node["and"][1].items()))
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration):
        return False
    names = {v: k for k, v in METRIC_OPS.items()}
    if var and var.startswith("metrics.") and op in names and node == _metric(var[8:], {
            "ComparisonOperator": names[op], "Value": args[1]}, "") and isinstance(args[1], (int, float)):
        metric: dict[str, Any] = {"ComparisonOperator": names[op], "Value": float(args[1])}
        return dims.setdefault("Metrics", {}).setdefault(var[8:], metric) is metric
    return False


def _read_part(node: Any, dims: dict[str, Any]) -> bool:
    """Adds one part of a Dimensions rule to `dims`; False when it is not one (or repeats a dimension)."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (op, args), = node.items()
    durations = {v: k for k, v in RECENCY.items()}
    if op in ("active", "inactive") and args in durations:
        recency = {"Duration": durations[args], "RecencyType": op.upper()}
        return dims.setdefault("Behavior", {}).setdefault("Recency", recency) is recency
    if op == "within_km" and isinstance(args, dict) and set(args) == {"lat", "lon", "km"}:
        gps = {"Coordinates": {"Latitude": float(args["lat"]), "Longitude": float(args["lon"])},
               "RangeInKilometers": float(args["km"])}
        return dims.setdefault("Location", {}).setdefault("GPSPoint", gps) is gps
    if op == "some" and isinstance(args, list) and len(args) == 2 and args[0] == ENDPOINTS:
        if "_endpoint" in dims:
            return False  # two endpoint conditions that different endpoints may meet: not one Pinpoint segment
        dims["_endpoint"] = True
        if isinstance(args[1], dict) and list(args[1]) == ["and"] and isinstance(args[1]["and"], list):
            trial: dict[str, Any] = {}
            if all(_read_endpoint_part(p, trial) for p in args[1]["and"]):
                for key, value in trial.items():
                    dims.setdefault(key, {}).update(value)
                return True
        return _read_endpoint_part(args[1], dims)
    attribute = _read_attribute(node, True)
    if attribute:
        return dims.setdefault("UserAttributes", {}).setdefault(attribute[0], attribute[1]) is attribute[1]
    return False


def rule_dimensions(rule: Any) -> dict[str, Any] | None:
    """The SegmentDimensions a rule stands for, or None when it is not a Dimensions rule."""
    if rule is True:
        return {}
    parts = rule["and"] if isinstance(rule, dict) and list(rule) == ["and"] else [rule]
    dims: dict[str, Any] = {}
    if not isinstance(parts, list) or not parts or not all(_read_part(p, dims) for p in parts):
        return None
    dims.pop("_endpoint", None)
    return dims


def _read_sources(node: Any) -> tuple[str, list[dict[str, str]]] | None:
    if isinstance(node, dict) and list(node) == ["in_segment"] and isinstance(node["in_segment"], str):
        return "ALL", [{"Id": node["in_segment"]}]
    combined = _uncombine(node)
    if combined and combined[1] and all(isinstance(x, dict) and list(x) == ["in_segment"]
                                        and isinstance(x["in_segment"], str) for x in combined[1]):
        return combined[0], [{"Id": x["in_segment"]} for x in combined[1]]
    return None


def _read_group(node: Any) -> dict[str, Any] | None:
    if not (isinstance(node, dict) and list(node) == ["and"] and isinstance(node["and"], list)
            and len(node["and"]) == 2):
        return None
    source_node, typed_node = node["and"]
    group: dict[str, Any] = {"SourceType": "ALL", "Type": "ALL"}
    if source_node is not True:
        sources = _read_sources(source_node)
        if sources is None:
            return None
        group["SourceType"], group["SourceSegments"] = sources
    if typed_node is not True:
        typed = _uncombine(typed_node)
        read = [rule_dimensions(d) for d in typed[1]] if typed else [None]
        if typed is None or any(d is None for d in read):
            return None
        group["Type"], group["Dimensions"] = typed[0], read
    return group


def rule_segment(rule: Any) -> dict[str, Any] | None:
    """{"Dimensions": ..., "SegmentGroups"?: ...} for a rule Pinpoint can express, else None."""
    dims = rule_dimensions(rule)
    if dims is not None:
        return {"Dimensions": dims}
    if isinstance(rule, dict) and list(rule) == ["and"] and isinstance(rule["and"], list) and len(rule["and"]) == 2:
        dims, include = rule_dimensions(rule["and"][0]), _uncombine(rule["and"][1])
        groups = [_read_group(g) for g in include[1]] if include else [None]
        if dims is not None and include and groups and all(g is not None for g in groups):
            return {"Dimensions": dims, "SegmentGroups": {"Include": include[0], "Groups": groups}}
    sources = _read_sources(rule)  # a native segment made only of other segments
    if sources is not None:
        return {"Dimensions": {}, "SegmentGroups": {"Include": "ALL", "Groups": [
            {"SourceType": sources[0], "SourceSegments": sources[1], "Type": "ALL"}]}}
    return None
