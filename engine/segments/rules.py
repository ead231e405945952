"""Segment rules: validation (with the JSON pointer of each fault) and expansion of Tidings' own
operators into plain JsonLogic over facts the engine maintains, so one evaluator (datalogic-py) and
one SQL translation serve every rule.

Our operators and what they become (F is `{"var": "behaviour.<key>"}`, a fact computed per customer
both by the Python document builder and by the SQL translation):
  performed       {"performed": {"event", "where"?, "count"?: [op, n], "within"?: "30d"}} -> {op: [F(count), n]}
  last_performed  {"last_performed": {"event", "within" | "not_within": dur | "before" | "after": date}}
  active/inactive {"active": "7d"}: any event or endpoint activity within the window (Pinpoint recency)
  in_segment      {"in_segment": "id"} -> {"in": ["id", {"var": "segments"}]}
  within_km       {"within_km": {"lat", "lon", "km"}}: some endpoint's location within km of the point
  before / after / on / between   {"before": ["attributes.signup", "2024-01-01"]}; dates may be
                  relative: "now", "now-30d", "now+1d" (the rule is then re-evaluated on the schedule)
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import datalogic_py

from tidings.engine.platform.clock import iso_to_ms
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.platform.jsonlogic import ENGINE
from tidings.engine.customers.limits import MAX_DEPTH, too_deep

CUSTOM = ("performed", "last_performed", "active", "inactive", "in_segment", "within_km",
          "before", "after", "on", "between")
COMPARE = ("==", "!=", "<", "<=", ">", ">=")
BUILTIN = {name for op in ENGINE.operators() for name in [op["name"], *op["aliases"]]}
REFUSED = {"now": "`now` is not allowed; use the date operators (before/after/on/between with \"now-30d\")",
           "throw": "`throw` is not allowed in segment rules"}

USER_FIELDS = {"user_id", "timezone", "locale"}
ENDPOINT_FIELDS = {"endpoint_id", "channel", "address", "opt_out", "effective_date"}
DEMOGRAPHIC = {"platform", "platform_version", "locale", "timezone", "app_version", "make", "model"}
LOCATION = {"country", "region", "city", "postal_code", "latitude", "longitude"}
_DURATION = re.compile(r"^(\d+)(m|h|d|w)$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RELATIVE = re.compile(r"^now(?:([+-])(\d+)(m|h|d|w))?$")


@dataclass
class Expanded:
    """A rule ready to evaluate: plain JsonLogic plus the facts it reads."""

    logic: Any
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)  # segments referenced with in_segment
    clock: bool = False  # depends on the time of evaluation
    events: set[str] = field(default_factory=set)  # event names whose arrival can change the result
    any_event: bool = False  # recency: any event counts


class RuleError(InvalidInput):
    def __init__(self, problems: list[dict[str, str]]):
        first = problems[0]
        super().__init__(f"invalid rule at {first['pointer'] or '/'}: {first['message']}",
                         field="rule" + first["pointer"], details=problems)


def _ptr(base: str, *parts: Any) -> str:
    for p in parts:
        base += "/" + str(p).replace("~", "~0").replace("/", "~1")
    return base


MAX_WINDOW_MS = 100 * 366 * 86_400_000  # a century: windows are compared with 64-bit millisecond columns


def duration_ms(value: Any) -> int | None:
    m = _DURATION.match(value) if isinstance(value, str) else None
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)] if m else None
    return ms if ms is not None and ms <= MAX_WINDOW_MS else None


def _fact_key(kind: str, spec: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}_{digest}"


class _Expander:
    def __init__(self, known_segments: set[str] | None):
        self.known = known_segments
        self.problems: list[dict[str, str]] = []
        self.out = Expanded(logic=None)

    def fail(self, pointer: str, message: str, code: str = "invalid") -> Any:
        self.problems.append({"pointer": pointer, "message": message, "code": code})
        return True

    # --- walking -----------------------------------------------------------------------------
    def walk(self, node: Any, ptr: str, scope: str) -> Any:
        if isinstance(node, list):
            return [self.walk(x, _ptr(ptr, i), scope) for i, x in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            return self.fail(ptr, f"an operation is an object with exactly one operator, got {len(node)} keys",
                             "wrong_arity")
        (op, args), = node.items()
        here = _ptr(ptr, op)
        if op in REFUSED:
            return self.fail(ptr, REFUSED[op], "unsupported_operator")
        if op in CUSTOM:
            if scope != "user":
                return self.fail(ptr, f"`{op}` is used at the top level of a rule, not inside some/all/none")
            return getattr(self, "op_" + op)(args, here)
        if op not in BUILTIN:
            return self.fail(ptr, f"unknown operator `{op}`", "unknown_operator")
        if op == "var":
            return {"var": self.check_var(args, here, scope)}
        if op in ("some", "all", "none") and isinstance(args, list) and len(args) == 2:
            inner = self.iteration_scope(args[0], _ptr(here, 0), scope)
            return {op: [self.walk(args[0], _ptr(here, 0), scope), self.walk(args[1], _ptr(here, 1), inner)]}
        return {op: self.walk(args, here, scope)}

    def iteration_scope(self, source: Any, ptr: str, scope: str) -> str:
        if isinstance(source, dict) and list(source) == ["var"]:
            path = source["var"]
            if scope == "user" and path == "endpoints":
                return "endpoint"
            if isinstance(path, str) and path.startswith("attributes."):
                return "item"
        return "item"

    def check_var(self, args: Any, ptr: str, scope: str) -> Any:
        path = args[0] if isinstance(args, list) and args else args
        where = _ptr(ptr, 0) if isinstance(args, list) else ptr
        if isinstance(args, list) and len(args) > 2:
            self.fail(ptr, "`var` takes a path and an optional default", "wrong_arity")
            return args
        if not isinstance(path, str):
            self.fail(where, "a var path is a string", "invalid_var")
            return args
        if not _path_ok(path, scope):
            allowed = {
                "user": "user_id, timezone, locale, attributes.NAME, metrics.NAME, endpoints",
                "endpoint": "endpoint_id, channel, address, opt_out, effective_date, attributes.NAME, "
                            "metrics.NAME, demographic.FIELD, location.FIELD",
                "item": "\"\" (the current item)",
            }[scope]
            self.fail(where, f"var path {path!r} is outside the customer document; here it can be: {allowed}",
                      "unknown_var")
        return args

    # --- our operators ---------------------------------------------------------------------------
    def fact(self, kind: str, spec: dict[str, Any]) -> dict[str, str]:
        key = _fact_key(kind, spec)
        self.out.facts[key] = {"type": kind, **spec}
        return {"var": f"behaviour.{key}"}

    def _obj(self, args: Any, ptr: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict | None:
        if not isinstance(args, dict):
            self.fail(ptr, f"takes an object with {', '.join(required + optional)}", "wrong_arity")
            return None
        for k in args:
            if k not in required + optional:
                self.fail(_ptr(ptr, k), f"unknown option {k!r}; expected one of {', '.join(required + optional)}")
        for k in required:
            if k not in args:
                self.fail(ptr, f"{k!r} is required")
        return args

    def _event(self, args: dict, ptr: str) -> str:
        name = args.get("event")
        if not isinstance(name, str) or not name:
            self.fail(_ptr(ptr, "event"), "event is a non-empty event name")
            return ""
        return name

    def op_performed(self, args: Any, ptr: str) -> Any:
        args = self._obj(args, ptr, ("event",), ("where", "count", "within"))
        if args is None:
            return True
        name = self._event(args, ptr)
        spec: dict[str, Any] = {"event": name, "where": {}, "within": None}
        where = args.get("where", {})
        if not isinstance(where, dict):
            self.fail(_ptr(ptr, "where"), "where is an object of event attribute name -> string or list of strings")
        else:
            for k, v in where.items():
                values = v if isinstance(v, list) else [v]
                if not values or not all(isinstance(x, str) for x in values):
                    self.fail(_ptr(ptr, "where", k), "an event attribute filter value is a string or a list of strings")
            spec["where"] = {k: sorted(v) if isinstance(v, list) else [v] for k, v in where.items()} if isinstance(where, dict) else {}
        if "within" in args:
            spec["within"] = self._duration(args["within"], _ptr(ptr, "within"))
            self.out.clock = True
        count = args.get("count", [">=", 1])
        if (not isinstance(count, list) or len(count) != 2 or count[0] not in COMPARE
                or isinstance(count[1], bool) or not isinstance(count[1], (int, float))):
            self.fail(_ptr(ptr, "count"), "count is [operator, number] with an operator of == != < <= > >=")
            return True
        self.out.events.add(name)
        return {count[0]: [self.fact("count", spec), count[1]]}

    def _duration(self, value: Any, ptr: str) -> int:
        ms = duration_ms(value)
        if ms is None:
            self.fail(ptr, f"a window is a duration such as 30m, 24h, 7d or 2w, got {value!r}")
            return 0
        return ms

    def op_last_performed(self, args: Any, ptr: str) -> Any:
        args = self._obj(args, ptr, ("event",), ("within", "not_within", "before", "after"))
        if args is None:
            return True
        name = self._event(args, ptr)
        self.out.events.add(name)
        conds = [k for k in ("within", "not_within", "before", "after") if k in args]
        if len(conds) != 1:
            return self.fail(ptr, "give exactly one of within, not_within, before, after")
        cond = conds[0]
        if cond in ("within", "not_within"):
            self.out.clock = True
            ms = self._duration(args[cond], _ptr(ptr, cond))
            since = self.fact("since_last", {"event": name})
            return _within(since, ms) if cond == "within" else _not_within(since, ms)
        at = self._date(args[cond], _ptr(ptr, cond), relative=False)
        last = self.fact("last_ts", {"event": name})
        return {"and": [{"!==": [last, None]}, {"<" if cond == "before" else ">": [last, at]}]}

    def op_active(self, args: Any, ptr: str, negate: bool = False) -> Any:
        ms = self._duration(args, ptr)
        self.out.clock = True
        self.out.any_event = True
        since = self.fact("since_active", {})
        return _not_within(since, ms) if negate else _within(since, ms)

    def op_inactive(self, args: Any, ptr: str) -> Any:
        return self.op_active(args, ptr, negate=True)

    def op_in_segment(self, args: Any, ptr: str) -> Any:
        sid = args[0] if isinstance(args, list) and len(args) == 1 else args
        if not isinstance(sid, str) or not sid:
            return self.fail(ptr, "in_segment takes a segment id", "wrong_arity")
        if self.known is not None and sid not in self.known:
            return self.fail(ptr, f"no segment {sid!r}", "unknown_segment")
        self.out.refs.add(sid)
        return {"in": [sid, {"var": "segments"}]}

    def op_within_km(self, args: Any, ptr: str) -> Any:
        args = self._obj(args, ptr, ("lat", "lon", "km"), ())
        if args is None:
            return True
        for k, lo, hi in (("lat", -90, 90), ("lon", -180, 180), ("km", 0, 20_100)):
            v = args.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                return self.fail(_ptr(ptr, k), f"{k} is a number between {lo} and {hi}")
        km = self.fact("km", {"lat": float(args["lat"]), "lon": float(args["lon"])})
        return {"and": [{"!==": [km, None]}, {"<=": [km, float(args["km"])]}]}

    def _date(self, value: Any, ptr: str, relative: bool = True) -> Any:
        """An absolute date -> epoch ms (int); a relative one -> ("rel", offset_ms)."""
        if isinstance(value, str):
            m = _RELATIVE.match(value)
            if m:
                if not relative:
                    self.fail(ptr, "a relative date is not allowed here; use within / not_within")
                    return 0
                offset = int(m.group(2)) * _UNIT_MS[m.group(3)] if m.group(1) else 0
                if offset > MAX_WINDOW_MS:
                    self.fail(ptr, f"a relative date is at most a century from now, got {value!r}")
                    return 0
                return ("rel", -offset if m.group(1) == "-" else offset)
            try:
                return iso_to_ms(value)
            except ValueError:
                pass
        self.fail(ptr, f"a date is ISO-8601 (2024-05-01 or 2024-05-01T12:00:00Z) or now / now-30d / now+1d, got {value!r}")
        return 0

    def _date_args(self, op: str, args: Any, ptr: str, n: int) -> tuple[str, list[Any]] | None:
        if not isinstance(args, list) or len(args) != n + 1:
            self.fail(ptr, f"`{op}` takes [attribute path{', date' * n}]", "wrong_arity")
            return None
        path = args[0]["var"] if isinstance(args[0], dict) and list(args[0]) == ["var"] else args[0]
        if not isinstance(path, str) or not _path_ok(path, "user") or path == "endpoints":
            self.fail(_ptr(ptr, 0), f"{path!r} is not an attribute path of the customer document", "unknown_var")
            return None
        return path, [self._date(a, _ptr(ptr, i + 1)) for i, a in enumerate(args[1:])]

    def _date_compare(self, op: str, path: str, bounds: list[tuple[str, Any]]) -> Any:
        """bounds: (comparison, date) pairs all of which must hold for the attribute's value."""
        rel = [isinstance(d, tuple) for _, d in bounds]
        if any(rel):
            if not all(rel):
                return self.fail("", f"`{op}` mixes relative and absolute dates")
            self.out.clock = True
            ago = self.fact("ago", {"path": path})  # now - value: value OP now+r  <=>  ago FLIPPED -r
            flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
            return {"and": [{"!==": [ago, None]}, *({flip[c]: [ago, -d[1]]} for c, d in bounds)]}
        date = self.fact("date", {"path": path})
        return {"and": [{"!==": [date, None]}, *({c: [date, d]} for c, d in bounds)]}

    def op_before(self, args: Any, ptr: str) -> Any:
        parsed = self._date_args("before", args, ptr, 1)
        return self._date_compare("before", parsed[0], [("<", parsed[1][0])]) if parsed else True

    def op_after(self, args: Any, ptr: str) -> Any:
        parsed = self._date_args("after", args, ptr, 1)
        return self._date_compare("after", parsed[0], [(">", parsed[1][0])]) if parsed else True

    def op_between(self, args: Any, ptr: str) -> Any:
        parsed = self._date_args("between", args, ptr, 2)
        return self._date_compare("between", parsed[0], [(">=", parsed[1][0]), ("<=", parsed[1][1])]) if parsed else True

    def op_on(self, args: Any, ptr: str) -> Any:
        parsed = self._date_args("on", args, ptr, 1)
        if not parsed:
            return True
        day = parsed[1][0]
        if isinstance(day, tuple):
            return self.fail(_ptr(ptr, 1), "`on` takes a calendar date such as 2024-05-01")
        start = day - day % 86_400_000
        return self._date_compare("on", parsed[0], [(">=", start), ("<", start + 86_400_000)])


def _within(since: Any, ms: int) -> Any:
    return {"and": [{"!==": [since, None]}, {"<=": [since, ms]}]}


def _not_within(since: Any, ms: int) -> Any:
    return {"or": [{"===": [since, None]}, {">": [since, ms]}]}


def _path_ok(path: str, scope: str) -> bool:
    parts = path.split(".")
    if scope == "item":
        return path == ""
    if scope == "user":
        if len(parts) == 1:
            return path in USER_FIELDS or path == "endpoints"
        return len(parts) == 2 and parts[0] in ("attributes", "metrics") and parts[1] != ""
    if len(parts) == 1:
        return path in ENDPOINT_FIELDS
    if len(parts) != 2 or not parts[1]:
        return False
    return (parts[0] in ("attributes", "metrics") or (parts[0] == "demographic" and parts[1] in DEMOGRAPHIC)
            or (parts[0] == "location" and parts[1] in LOCATION))


def _placeholders(node: Any) -> Any:
    """The rule with our operators replaced by `true`, for datalogic's own checks (same pointers)."""
    if isinstance(node, list):
        return [_placeholders(x) for x in node]
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in CUSTOM:
            return True
        return {k: _placeholders(v) for k, v in node.items()}
    return node


def expand(rule: Any, known_segments: set[str] | None = None) -> Expanded:
    """Validate and expand; raises RuleError naming each fault by JSON pointer into the rule."""
    deep = too_deep(rule, MAX_DEPTH)
    if deep is not None:  # the walk below and the evaluators recurse: refuse before any of them runs
        raise RuleError([{"pointer": _ptr("", *deep[:6]), "code": "too_deep",
                          "message": f"a rule nests at most {MAX_DEPTH} levels deep (JSON objects and arrays)"}])
    ex = _Expander(known_segments)
    logic = ex.walk(rule, "", "user")
    if not ex.problems:
        try:
            ENGINE.compile_checked(_placeholders(rule))
        except datalogic_py.CompileError as exc:
            ex.problems += [{"pointer": d["pointer"], "message": d["message"], "code": d["code"]}
                            for d in exc.diagnostics if d["severity"] == "error"]
        except datalogic_py.DataLogicError as exc:
            ex.problems.append({"pointer": "", "message": str(exc), "code": "invalid"})
    if ex.problems:
        raise RuleError(ex.problems)
    ex.out.logic = logic
    return ex.out


def static_logic(segment_id: str, filter_rule: Any | None) -> Any:
    """A static segment's effective rule: imported into it, and passing its filter if it has one."""
    base = {"in": [segment_id, {"var": "imported"}]}
    return base if filter_rule is None else {"and": [base, filter_rule]}
