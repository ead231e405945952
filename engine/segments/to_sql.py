"""JsonLogic -> SQL, for full evaluation in the database.

Every node becomes an integer SQL expression with four outcomes: 0 falsy, 1 truthy, 2 the rule raises
for this customer (a member never), 3 unsure. SQL answers exactly where JsonLogic's coercions are
known for the stored value's class (see segment_models: `customer_value.kind`), and says 3 otherwise;
rows that come out 3 are evaluated by datalogic in Python, so the result always equals the Python
evaluator's. Short-circuiting `and` / `or` / `some` keep their order, so errors behind a decided branch
are not raised, as in datalogic. The per-kind answers for finite cases (missing, booleans, a literal
against non-numeric text) come from asking datalogic itself ("probes"), not from a table of ours.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidings.engine.customers.history import SEGMENT_EVENTS
from tidings.engine.segments.rules import ENGINE

F, T, ERR, UNSURE = 0, 1, 2, 3
CMP = ("==", "!=", "<", "<=", ">", ">=", "===", "!==")
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!=", "===": "===", "!==": "!=="}
_SQLOP = {"==": "=", "===": "=", "!=": "<>", "!==": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
STRING_KINDS = ("s", "t", "z", "o")
KINDS = ("n", "b", "l", "s", "t", "z", "o", "x")
RARE_KINDS = ("b", "l", "o", "x")  # as tidings.engine.segments.typed_index.RARE_KINDS
SAMPLES: dict[str, list[Any]] = {
    "n": [0, 1, -1, 5, 5.5, -2.5, 1e10, 100],
    "s": ["5", "0", "-1.5", "10", "1e3", "007"],
    "t": ["a", "x y", "Z", "é", "%", "_", "abc", "-", "."],
    "z": [""],
    "o": [" 5", "0x5", "inf", "5.", ".5", "1,000", "+1"],
    "l": [[], ["a"], ["5"], ["a", "5"]],
}


def outcome(rule: Any, data: Any) -> int:
    try:
        result = ENGINE.eval(rule, data)
    except Exception:
        return ERR
    return T if _truthy(result) else F


_probed: dict[bytes, int] = {}


def probe_outcome(rule: Any, data: Any) -> int:
    """outcome() of the small rules the translation asks datalogic about, remembered: a rule's translation
    asks hundreds of them, the same ones at every full evaluation. (JSON keys keep 1, 1.0 and true apart.)"""
    key = msgspec.json.encode((rule, data))
    got = _probed.get(key)
    if got is None:
        if len(_probed) >= 50_000:
            _probed.clear()
        got = _probed[key] = outcome(rule, data)
    return got


def _truthy(v: Any) -> bool:
    if isinstance(v, (list, dict)):
        return len(v) > 0
    return bool(v)


@dataclass
class Ctx:
    dialect: str
    workspace_id: int
    now: int
    params: dict[str, Any] = field(default_factory=dict)
    counter: itertools.count = field(default_factory=itertools.count)
    wide: dict[str, int] | None = None  # user-level path -> slot, when the query runs over the wide table `w`
    rare: dict[int, set[str]] | None = None  # slot -> the rare kinds (paths.RARE_KINDS) it holds; None: any
    # `w` is the direct evaluation's derived table (segments.backfill.direct_source) rather than the wide table:
    # no `d` (dates) columns, list items from the value's JSON
    direct: bool = False
    ep_unfilled: frozenset[str] = frozenset()  # endpoint paths the index does not hold yet: unsure
    _seen: dict[Any, str] = field(default_factory=dict, repr=False)

    def p(self, value: Any) -> str:
        key = (type(value), value) if isinstance(value, (str, int, float, bool, type(None))) else None
        if key is not None and key in self._seen:  # one parameter per distinct literal
            return self._seen[key]
        name = f"p{next(self.counter)}"
        self.params[name] = value
        if key is not None:
            self._seen[key] = ":" + name
        return ":" + name

    def wide_kinds(self, slot: int) -> tuple[str, ...]:
        """The kinds a wide slot may hold: all but the rare kinds it is known not to hold."""
        if self.rare is None or slot not in self.rare:
            return KINDS
        return tuple(k for k in KINDS if k not in RARE_KINDS or k in self.rare[slot])

    def collate(self, col: str) -> str:
        return f'{col} COLLATE "C"' if self.dialect == "postgresql" else col

    def instr(self, hay: str, needle: str) -> str:
        return f"strpos({hay}, {needle}) > 0" if self.dialect == "postgresql" else f"instr({hay}, {needle}) > 0"


@dataclass
class Scope:
    user: str  # SQL for the customer's user pk
    ep: str  # SQL for the endpoint id (0 at user level)
    kind: str  # user | endpoint


def _case(cond: str) -> str:
    return f"(CASE WHEN {cond} THEN 1 ELSE 0 END)"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Leaf:
    """One comparison of a var against literals; `rule(x)` rebuilds it around a var named x for probes."""

    def __init__(self, form: str, op: str | None, lit: Any, var_first: bool):
        self.form, self.op, self.lit, self.var_first = form, op, lit, var_first

    def rule(self) -> Any:
        v = {"var": "x"}
        if self.form == "cmp":
            return {self.op: [v, self.lit] if self.var_first else [self.lit, v]}
        if self.form == "in_str":
            return {"in": [self.lit, v]}
        if self.form == "in_list":
            return {"in": [v, self.lit]}
        return {"!!": [v]}

    def probe(self, value: Any, missing: bool = False) -> int:
        return probe_outcome(self.rule(), {} if missing else {"x": value})

    def probe_all(self, values: list[Any]) -> int:
        got = {self.probe(v) for v in values}
        return got.pop() if len(got) == 1 else UNSURE

    def sql_op(self) -> str:
        return _SQLOP[self.op if self.var_first else _MIRROR[self.op]]


@dataclass
class Cols:
    """Where a value's columns are: a `customer_value` row `cv`, or a slot of the wide row `w`."""
    num: str = "cv.num"
    txt: str = "cv.txt"
    items: str = "ci.user_pk = cv.user_pk AND ci.ep = cv.ep AND ci.path = cv.path"  # its list items in `ci`
    item_exists: str | None = None  # or: an EXISTS over the list's JSON, with {lit} for the literal


CV = Cols()


def _cv_kind_sql(leaf: Leaf, kind: str, ctx: Ctx, c: Cols = CV) -> str:
    """The outcome for a stored value of this kind, as SQL over `cv` (or the columns `c`)."""
    if kind == "x":
        return str(UNSURE)
    if kind == "b":
        yes, no = leaf.probe(True), leaf.probe(False)
        return str(yes) if yes == no else f"(CASE WHEN {c.num} = 1 THEN {yes} ELSE {no} END)"
    by_form = _FORM_SQL.get(leaf.form)
    sql = by_form(leaf, kind, ctx, c) if by_form else None
    # otherwise every value of the kind answers alike: probe samples of it
    return sql if sql is not None else str(leaf.probe_all(SAMPLES[kind]))


def _truthy_sql(leaf: Leaf, kind: str, ctx: Ctx, c: Cols) -> str | None:
    if kind in ("s", "t", "o"):
        return str(T)
    if kind == "z":
        return str(F)
    return _case(f"{c.num} <> 0" if kind == "n" else f"{c.num} > 0")


_DECIMAL = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_NUMERIC_OPS = {"=": float.__eq__, "<>": float.__ne__, "<": float.__lt__, "<=": float.__le__, ">": float.__gt__,
                ">=": float.__ge__}


def _loose_number(leaf: Leaf) -> float | None:
    """The number a decimal string literal stands for in a loose comparison with a number (JsonLogic
    compares 10.0 == "10" as numbers), when the reference evaluation agrees around it; else None."""
    number = float(leaf.lit)
    compare = _NUMERIC_OPS[leaf.sql_op()]
    if all(leaf.probe(v) == int(compare(v, number)) for v in (number - 1, number, number + 1)):
        return number
    return None


def _cmp_sql(leaf: Leaf, kind: str, ctx: Ctx, c: Cols) -> str | None:
    lit = leaf.lit
    if kind == "n" and isinstance(lit, str) and leaf.op not in ("===", "!==") and _DECIMAL.fullmatch(lit):
        # A stored number against a decimal string: sampling numbers would miss the one it equals.
        number = _loose_number(leaf)
        return str(UNSURE) if number is None else _case(f"{c.num} {leaf.sql_op()} {ctx.p(number)}")
    if _is_number(lit) and leaf.op not in ("===", "!==") and kind in ("n", "s"):
        return _case(f"{c.num} {leaf.sql_op()} {ctx.p(float(lit))}")
    if _is_number(lit) and leaf.op in ("===", "!==") and kind == "n":
        return _case(f"{c.num} {leaf.sql_op()} {ctx.p(float(lit))}")
    if isinstance(lit, str) and kind in STRING_KINDS:
        return _case(f"{ctx.collate(c.txt)} {leaf.sql_op()} {ctx.p(lit)}")
    return None


def _in_str_sql(leaf: Leaf, kind: str, ctx: Ctx, c: Cols) -> str | None:
    lit = leaf.lit
    if not isinstance(lit, str):
        return None
    if kind in STRING_KINDS and lit:
        return _case(ctx.instr(c.txt, ctx.p(lit)))
    if kind == "l" and c.item_exists is not None:
        return _case(c.item_exists.format(lit=ctx.p(lit)))
    if kind == "l":
        return _case(f"EXISTS (SELECT 1 FROM customer_value ci WHERE {c.items} "
                     f"AND ci.kind = 'i' AND ci.txt = {ctx.p(lit)})")
    return None


def _in_list_sql(leaf: Leaf, kind: str, ctx: Ctx, c: Cols) -> str | None:
    strs = [x for x in leaf.lit if isinstance(x, str)]
    nums = [float(x) for x in leaf.lit if _is_number(x)]
    if kind in STRING_KINDS:
        return _case(f"{ctx.collate(c.txt)} IN ({', '.join(ctx.p(s) for s in strs)})") if strs else str(F)
    if kind == "n":
        return _case(f"{c.num} IN ({', '.join(ctx.p(n) for n in nums)})") if nums else str(F)
    return None


_FORM_SQL = {"truthy": _truthy_sql, "cmp": _cmp_sql, "in_str": _in_str_sql, "in_list": _in_list_sql}


def wide_cols(slot: int, path: str, ctx: Ctx) -> Cols:
    if ctx.direct:
        items = (f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(w.j{slot}) ci(v) WHERE ci.v = {{lit}})"
                 if ctx.dialect == "postgresql" else
                 f"EXISTS (SELECT 1 FROM json_each(w.j{slot}) ci WHERE ci.type = 'text' AND ci.value = {{lit}})")
        return Cols(num=f"w.n{slot}", txt=f"w.t{slot}", item_exists=items)
    return Cols(num=f"w.n{slot}", txt=f"w.t{slot}",
                items=f"ci.user_pk = w.user_pk AND ci.ep = 0 AND ci.path = {ctx.p(path)}")


def cv_leaf(leaf: Leaf, path: str, scope: Scope, ctx: Ctx) -> str:
    if scope.kind == "endpoint" and path in ctx.ep_unfilled:
        return str(UNSURE)  # the index is still being filled for it: Python reads the document
    missing = leaf.probe(None, missing=True)
    if scope.kind == "user" and ctx.wide is not None and path in ctx.wide:
        slot = ctx.wide[path]
        c = wide_cols(slot, path, ctx)
        by_kind = {k: _cv_kind_sql(leaf, k, ctx, c) for k in ctx.wide_kinds(slot)}
        whens = " ".join(f"WHEN '{k}' THEN {sql}" for k, sql in by_kind.items())
        kinds = f"(CASE w.k{slot} {whens} ELSE {missing} END)"  # no row value (NULL kind): missing
        strings = {by_kind.get(k) for k in STRING_KINDS}
        if ctx.direct and len(strings) == 1 and None not in strings:
            # Every string kind answers alike: a string (the direct table's t is set for strings only) needs no
            # kind, the long CASE classifying it (and a string it leaves to Python, '?', is one of them too).
            return f"(CASE WHEN {c.txt} IS NOT NULL THEN {strings.pop()} ELSE {kinds} END)"
        return kinds
    whens = " ".join(f"WHEN '{k}' THEN {_cv_kind_sql(leaf, k, ctx)}" for k in ("n", "b", "l", "s", "t", "z", "o", "x"))
    return (f"COALESCE((SELECT CASE cv.kind {whens} ELSE 3 END FROM customer_value cv "
            f"WHERE cv.user_pk = {scope.user} AND cv.path = {ctx.p(path)} AND cv.ep = {scope.ep} "
            f"AND cv.kind <> 'i'), {missing})")


def value_leaf(leaf: Leaf, value_sql: str, ctx: Ctx) -> str:
    """A leaf over a fact that is a number or null (counts, timestamps, ages)."""
    on_null = leaf.probe(None)
    if leaf.form == "truthy":
        return f"(CASE WHEN {value_sql} IS NULL THEN 0 WHEN {value_sql} = 0 THEN 0 ELSE 1 END)"
    if leaf.form == "cmp" and _is_number(leaf.lit):
        return f"(CASE WHEN {value_sql} IS NULL THEN {on_null} WHEN {value_sql} {leaf.sql_op()} {ctx.p(leaf.lit)} THEN 1 ELSE 0 END)"
    if leaf.form == "cmp" and leaf.lit is None and leaf.op in ("===", "!=="):
        yes, no = (1, 0) if leaf.op == "===" else (0, 1)
        return f"(CASE WHEN {value_sql} IS NULL THEN {yes} ELSE {no} END)"
    return str(UNSURE)


def _event_where(where: dict[str, list[str]], ctx: Ctx) -> str | None:
    parts = []
    for k, values in where.items():
        vals = ", ".join(ctx.p(v) for v in values)
        if ctx.dialect == "postgresql":
            key = ctx.p(k)
            parts.append(f"json_typeof(e.attributes -> {key}) = 'string' AND (e.attributes ->> {key}) IN ({vals})")
        else:
            if '"' in k or "\\" in k:
                return None
            jp = ctx.p(f'$."{k}"')
            parts.append(f"json_type(e.attributes, {jp}) = 'text' AND json_extract(e.attributes, {jp}) IN ({vals})")
    return " AND ".join(f"({p})" for p in parts)


def fact_sql(fact: dict[str, Any], scope: Scope, ctx: Ctx) -> str | None:
    kind, u = fact["type"], scope.user
    if fact.get("event") in SEGMENT_EVENTS:
        return None  # may be stored compactly (customers/history.py): unsure, Python expands them
    if kind == "count":
        cond = f"e.user_pk = {u} AND e.name = {ctx.p(fact['event'])}"
        if fact["within"] is not None:
            cond += f" AND e.ts >= {ctx.p(ctx.now - fact['within'])}"
        if fact["where"]:
            extra = _event_where(fact["where"], ctx)
            if extra is None:
                return None
            cond += " AND " + extra
        return f"(SELECT count(*) FROM event e WHERE {cond})"
    if kind in ("since_last", "last_ts"):
        last = f"(SELECT max(e.ts) FROM event e WHERE e.user_pk = {u} AND e.name = {ctx.p(fact['event'])})"
        return last if kind == "last_ts" else f"({ctx.p(ctx.now)} - {last})"
    if kind == "since_active":
        last = (f"(SELECT max(z.t) FROM (SELECT max(e.ts) AS t FROM event e WHERE e.user_pk = {u} UNION ALL "
                f"SELECT max(p.effective_date) AS t FROM endpoint p WHERE p.user_pk = {u}) z)")
        return f"({ctx.p(ctx.now)} - {last})"
    if kind in ("date", "ago") and ctx.direct:
        return None  # the direct evaluation leaves dates to Python (their parse is Python's)
    if kind in ("date", "ago") and ctx.wide is not None and fact["path"] in ctx.wide and scope.kind == "user":
        ts = f"w.d{ctx.wide[fact['path']]}"
        return ts if kind == "date" else f"({ctx.p(ctx.now)} - {ts})"
    if kind in ("date", "ago"):
        ts = (f"(SELECT cv.ts FROM customer_value cv WHERE cv.user_pk = {u} AND cv.path = {ctx.p(fact['path'])} "
              f"AND cv.ep = 0 AND cv.kind <> 'i')")
        return ts if kind == "date" else f"({ctx.p(ctx.now)} - {ts})"
    return None  # km: evaluated in Python


class Translator:
    def __init__(self, ctx: Ctx, facts: dict[str, dict[str, Any]]):
        self.ctx, self.facts = ctx, facts

    def node(self, n: Any, scope: Scope) -> str:
        if isinstance(n, bool) or n is None or isinstance(n, (int, float, str)):
            return str(outcome({"!!": [n]}, {}))
        if not isinstance(n, dict) or len(n) != 1:
            return str(UNSURE)
        (op, args), = n.items()
        if op == "var":
            return self.var_leaf(args, Leaf("truthy", None, None, True), scope)
        if op in ("and", "or") and isinstance(args, list) and args:
            return self.chain(op, [self.node(a, scope) for a in args])
        if op in ("!", "!!"):
            if isinstance(args, list):
                if len(args) != 1:
                    return str(UNSURE)
                args = args[0]
            inner = self.node(args, scope)
            return inner if op == "!!" else f"(CASE {inner} WHEN 0 THEN 1 WHEN 1 THEN 0 WHEN 2 THEN 2 ELSE 3 END)"
        if op in CMP and isinstance(args, list):
            return self.compare(op, args, scope)
        if op == "in" and isinstance(args, list) and len(args) == 2:
            a, b = args
            if _is_var(b) and isinstance(a, str):
                return self.var_leaf(b["var"], Leaf("in_str", None, a, True), scope)
            if _is_var(a) and isinstance(b, list) and all(not isinstance(x, (list, dict)) for x in b):
                return self.var_leaf(a["var"], Leaf("in_list", None, b, True), scope)
            return str(UNSURE)
        if op in ("some", "none", "all") and isinstance(args, list) and len(args) == 2:
            return self.iterate(op, args, scope)
        return str(UNSURE)

    def chain(self, op: str, parts: list[str]) -> str:
        """`and` / `or` of the parts in order: the first part that is not 1 (and) / 0 (or) decides. That is
        associative, so the parts are split in halves: the CASEs nest log2(n) deep, not n (SQLite's parser
        refuses a query nested about 30 CASEs deep: "parser stack overflow")."""
        if len(parts) == 1:
            return parts[0]
        half = len(parts) // 2
        first, rest = self.chain(op, parts[:half]), self.chain(op, parts[half:])
        if op == "and":
            return f"(CASE {first} WHEN 1 THEN {rest} WHEN 0 THEN 0 WHEN 2 THEN 2 ELSE 3 END)"
        return f"(CASE {first} WHEN 0 THEN {rest} WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE 3 END)"

    def compare(self, op: str, args: list[Any], scope: Scope) -> str:
        if len(args) == 3 and op in ("<", "<=") and _is_var(args[1]) and not _is_var(args[0]) and not _is_var(args[2]):
            left = self.compare(op, [args[0], args[1]], scope)
            right = self.compare(op, [args[1], args[2]], scope)
            return self.chain("and", [left, right])
        if len(args) != 2:
            return str(UNSURE)
        a, b = args
        if _is_var(a) and _literal(b):
            return self.var_leaf(a["var"], Leaf("cmp", op, b, True), scope)
        if _is_var(b) and _literal(a):
            return self.var_leaf(b["var"], Leaf("cmp", op, a, False), scope)
        if _literal(a) and _literal(b):
            return str(outcome({op: [a, b]}, {}))
        return str(UNSURE)

    def var_leaf(self, var: Any, leaf: Leaf, scope: Scope) -> str:
        if not isinstance(var, str):
            return str(UNSURE)
        if var.startswith("behaviour."):
            fact = self.facts.get(var.split(".", 1)[1])
            sql = fact_sql(fact, scope, self.ctx) if fact and scope.kind == "user" else None
            return str(UNSURE) if sql is None else value_leaf(leaf, sql, self.ctx)
        if var in ("segments", "imported"):
            if leaf.form != "in_str" or scope.kind != "user":
                return str(UNSURE)
            table = "segment_member" if var == "segments" else "static_member"
            return _case(f"EXISTS (SELECT 1 FROM {table} sm WHERE sm.workspace_id = {self.ctx.p(self.ctx.workspace_id)} "
                         f"AND sm.segment_id = {self.ctx.p(leaf.lit)} AND sm.user_pk = {scope.user})")
        if var == "endpoints" or var == "" or var.count(".") > 1:
            return str(UNSURE)
        return cv_leaf(leaf, var, scope, self.ctx)

    def iterate(self, op: str, args: list[Any], scope: Scope) -> str:
        source, inner = args
        if not (_is_var(source) and source["var"] == "endpoints" and scope.kind == "user"):
            return str(UNSURE)
        ep_scope = Scope(user="ep.user_pk", ep="ep.id", kind="endpoint")
        inner_sql = self.node(inner, ep_scope)
        per_ep = f"(SELECT ep.id AS eid, {inner_sql} AS o FROM endpoint ep WHERE ep.user_pk = {scope.user}) q"
        if op in ("some", "none"):
            found = f"COALESCE((SELECT q.o FROM {per_ep} WHERE q.o <> 0 ORDER BY q.eid LIMIT 1), 0)"
            return found if op == "some" else f"(CASE {found} WHEN 0 THEN 1 WHEN 1 THEN 0 WHEN 2 THEN 2 ELSE 3 END)"
        first_not_true = f"(SELECT q.o FROM {per_ep} WHERE q.o <> 1 ORDER BY q.eid LIMIT 1)"
        return (f"(CASE WHEN NOT EXISTS (SELECT 1 FROM endpoint ep0 WHERE ep0.user_pk = {scope.user}) THEN 0 "
                f"ELSE COALESCE({first_not_true}, 1) END)")


def _is_var(n: Any) -> bool:
    return isinstance(n, dict) and len(n) == 1 and "var" in n


def _literal(n: Any) -> bool:
    return n is None or isinstance(n, (bool, int, float, str))


def outcome_sql(logic: Any, facts: dict[str, dict[str, Any]], ctx: Ctx) -> str:
    """The outcome expression for a customer row aliased `u`."""
    return Translator(ctx, facts).node(logic, Scope(user="u.id", ep="0", kind="user"))


def _leaf_of(n: Any) -> tuple[str, Leaf] | None:
    """(path, leaf) when n is a comparison of a plain user-level attribute var against literals."""
    t = Translator.__new__(Translator)
    found: list[tuple[str, Leaf]] = []

    def grab(var: Any, leaf: Leaf, scope: Scope) -> str:
        found.append((var, leaf))
        return "0"

    t.var_leaf = grab  # type: ignore[method-assign]
    if not isinstance(n, dict) or len(n) != 1:
        return None
    (op, args), = n.items()
    if op in CMP and isinstance(args, list) and len(args) == 2:
        t.compare(op, args, Scope("u.id", "0", "user"))
    elif op == "in" and isinstance(args, list) and len(args) == 2:
        t.node(n, Scope("u.id", "0", "user"))
    if len(found) != 1:
        return None
    var, leaf = found[0]
    if not isinstance(var, str) or var.startswith("behaviour.") or var in ("segments", "imported", "endpoints", "") \
            or var.count(".") > 1:
        return None
    return var, leaf


def _kind_sets(path: str, leaf: Leaf, ctx: Ctx, workspace: str) -> tuple[list[str], list[str]] | None:
    """Index-driven selects of who may pass this leaf (outcome 1 or 3), and who may be unsure."""
    if leaf.probe(None, missing=True) in (T, UNSURE):
        return None
    passing, unsure = [], []
    base = f"SELECT cv.user_pk FROM customer_value cv WHERE cv.workspace_id = {workspace} AND cv.path = {ctx.p(path)} AND cv.ep = 0"
    for k in ("n", "b", "l", "s", "t", "z", "o", "x"):
        sql = _cv_kind_sql(leaf, k, ctx)
        if sql in ("0", "2"):
            continue
        head, tail = "(CASE WHEN ", " THEN 1 ELSE 0 END)"
        if sql.startswith(head) and sql.endswith(tail) and sql.count(" THEN ") == 1:  # a plain _case(cond)
            passing.append(f"{base} AND cv.kind = '{k}' AND {sql[len(head):-len(tail)]}")
            continue
        passing.append(f"{base} AND cv.kind = '{k}'")
        if sql == "3" or not sql.startswith("(CASE WHEN cv."):
            unsure.append(f"{base} AND cv.kind = '{k}'")
    return passing, unsure


# The kinds whose rows have a value in a wide slot's num / txt column (documents.classify): a comparison
# over one of these columns can only be true on rows of these kinds.
NUM_KINDS = ("n", "b", "s", "l")
TXT_KINDS = STRING_KINDS


def conjuncts(logic: Any) -> list[Any]:
    """The terms a customer must pass all of: a top-level `and`'s, or the rule itself."""
    if isinstance(logic, dict) and list(logic) == ["and"] and isinstance(logic["and"], list) and logic["and"]:
        return logic["and"]
    return [logic]


@dataclass
class Prefilter:
    """A native condition for one conjunct of a top-level `and`, true wherever that conjunct can be yes
    or unsure. `exact`: also, wherever it is true the conjunct is yes, so a row passing it needs no
    outcome expression for that conjunct (`conjunct` is its position in the `and`)."""
    cond: str
    exact: bool
    conjunct: int


def _reads(cond: str, col: str) -> bool:
    return re.search(rf"{re.escape(col)}(?![0-9])", cond) is not None


def wide_conjunct_filters(logic: Any, ctx: Ctx) -> list[Prefilter]:
    """For a top-level `and` over the wide table: per conjunct that is a plain attribute leaf, a native
    condition true for every row where the leaf can be 1 or 3 (a superset: it may let more through, the
    outcome expression still decides, unless the condition is exact). Most rows fail one of these cheap
    comparisons before any CASE."""
    if not ctx.wide:
        return []
    out = []
    head, tail = "(CASE WHEN ", " THEN 1 ELSE 0 END)"
    for i, conj in enumerate(conjuncts(logic)):
        got = _leaf_of(conj)
        if not got or got[0] not in ctx.wide:
            continue
        path, leaf = got
        slot = ctx.wide[path]
        c = wide_cols(slot, path, ctx)
        holds = ctx.wide_kinds(slot)
        by_kind = {k: _cv_kind_sql(leaf, k, ctx, c) for k in holds}
        conds: list[str] = []
        kinds: list[str] = []
        exact = True
        for k in holds:
            sql = by_kind[k]
            if sql in ("0", "2"):
                continue
            if sql.startswith(head) and sql.endswith(tail) and sql.count(" THEN ") == 1 and "EXISTS" not in sql:
                cond = sql[len(head):-len(tail)]  # true only where this kind's columns are set, or looser
                if cond not in conds:
                    conds.append(cond)
            else:
                kinds.append(k)
                exact = exact and sql == str(T)
        for cond in conds:
            # exact when every kind that sets a column the condition reads answers with this very
            # condition, or yes whatever the value
            readers: set[str] = set()
            if _reads(cond, c.num):
                readers.update(NUM_KINDS)
            if _reads(cond, c.txt):
                readers.update(TXT_KINDS)
            if not readers or _reads(cond, f"w.k{slot}") or _reads(cond, f"w.d{slot}"):
                exact = False
            exact = exact and all(by_kind[k] in (f"{head}{cond}{tail}", str(T)) for k in readers if k in by_kind)
        if kinds:
            conds.append(_kinds_in(ctx, slot, kinds, _strings_decided(by_kind, kinds, c, head, tail)))
        missing = leaf.probe(None, missing=True)
        if missing in (T, UNSURE):
            conds.append(f"w.e{slot} IS NULL" if ctx.direct else f"w.k{slot} IS NULL")
            exact = exact and missing == T
        if ctx.direct and ctx.dialect == "sqlite":
            conds = [_raw_equality(cond, slot, ctx) for cond in conds]
        out.append(Prefilter(" OR ".join(conds) if conds else "1 = 0", exact and bool(conds), i))
    return out


def _raw_equality(cond: str, slot: int, ctx: Ctx) -> str:
    """A direct evaluation's `t{slot} = 'lit'` (or IN) as the same test of the value json_extract gives, v{slot}:
    one JSON lookup instead of two (t is the value when its JSON type is a string). The same rows: only a
    string's value is SQL text, but for an array's or object's JSON text, which starts with [ or {."""
    m = re.fullmatch(rf"w\.t{slot} (=|IN) (\(?(:p[0-9]+(, )?)+\)?)", cond)
    if not m:
        return cond
    names = re.findall(r":(p[0-9]+)", m.group(2))
    if not all(isinstance(ctx.params.get(n), str) and ctx.params[n][:1] not in ("[", "{") for n in names):
        return cond
    return f"w.v{slot} {m.group(1)} {m.group(2)}"


def _strings_decided(by_kind: dict[str, str], kinds: list[str], c: Cols, head: str, tail: str) -> bool:
    """Whether a direct evaluation's prefilter lets through every string that can pass the leaf without
    knowing its kind: all four string kinds are let through (`kinds`), or all answer with the same SQL that
    is no (0, 2) or one condition over the value's text (in the prefilter already). Then a string whose
    kind SQL leaves to Python ('?', read as 'x': always one of the string kinds, documents.classify) needs
    no flag of its own."""
    strings = [by_kind.get(k) for k in STRING_KINDS]
    if None in strings:
        return False
    if all(k in kinds for k in STRING_KINDS):
        return True
    sql = strings[0]
    if any(other != sql for other in strings):
        return False
    if sql in ("0", "2"):
        return True
    simple = sql.startswith(head) and sql.endswith(tail) and sql.count(" THEN ") == 1 and "EXISTS" not in sql
    return simple and not _reads(sql, c.num) and _reads(sql, c.txt)


def _kinds_in(ctx: Ctx, slot: int, kinds: list[str], strings_decided: bool = False) -> str:
    """Rows whose value is of one of these kinds (a superset in a direct evaluation: its cheap flags
    x{slot} y{slot} and b{slot}, backfill._cheap_flags, stand in for the costly kind where they can, and the
    costly kind is only computed for the values that can have one of the kinds asked: a string kind only for
    strings (t{slot} set), 'l' only for arrays (j{slot} set); with `strings_decided` (_strings_decided), every
    string the leaf may pass is let through already, so only the values that are not strings need a flag)."""
    if not ctx.direct:
        return f"w.k{slot} IN ({', '.join(repr(k) for k in kinds)})"
    parts = [f"w.b{slot} = 1"] if "b" in kinds else []
    if "x" in kinds:
        parts.append(f"w.y{slot} = 1" if strings_decided else f"w.x{slot} = 1")
    strings = [k for k in kinds if k in STRING_KINDS]
    if len(strings) == len(STRING_KINDS):
        parts.append(f"w.t{slot} IS NOT NULL")
    elif strings:
        parts.append(f"(w.t{slot} IS NOT NULL AND w.k{slot} IN ({', '.join(repr(k) for k in strings)}))")
    if "l" in kinds:
        parts.append(f"(w.j{slot} IS NOT NULL AND w.k{slot} = 'l')")
    rest = [k for k in kinds if k not in ("x", "b", "l", *STRING_KINDS)]
    if rest:
        parts.append(f"w.k{slot} IN ({', '.join(repr(k) for k in rest)})")
    return " OR ".join(parts)


_SEEKABLE = re.compile(r"^w\.([nt][0-9]+)(?: COLLATE \"C\")? (=|IN|<|<=|>|>=) ")


def seek_columns(logic: Any, ctx: Ctx) -> dict[int, tuple[str, bool]]:
    """Conjunct position -> (wide column, equality?) for the conjuncts whose prefilter, when their slot holds
    no rare kind, is one comparison an index on that column can seek (`t1 = ?`, `t0 IN (...)`, `n4 > ?`)."""
    plain = Ctx(dialect=ctx.dialect, workspace_id=ctx.workspace_id, now=ctx.now, wide=ctx.wide,
                rare={s: set() for s in (ctx.wide or {}).values()})
    out = {}
    for p in wide_conjunct_filters(logic, plain):
        m = _SEEKABLE.match(p.cond)
        if m and " OR " not in p.cond and " AND " not in p.cond:
            out[p.conjunct] = (m.group(1), m.group(2) in ("=", "IN"))
    return out


def driving_sets(logic: Any, ctx: Ctx, workspace: str) -> list[str]:
    """For a top-level `and`, per conjunct that is a plain attribute leaf whose missing value cannot pass:
    an index range scan of the users for whom it can be true or unsure (disjoint kinds, so UNION ALL).
    Each is a superset of the members: a member makes every conjunct true."""
    if not (isinstance(logic, dict) and list(logic) == ["and"] and isinstance(logic["and"], list)):
        return []
    out = []
    for c in logic["and"]:
        got = _leaf_of(c)
        ks = _kind_sets(got[0], got[1], ctx, workspace) if got else None
        if ks is not None:
            out.append(" UNION ALL ".join(ks[0]) or "SELECT NULL AS user_pk WHERE 1 = 0")
    return out


def selectivity_sample(wide_table: str, prefilters: list[str], dialect: str, rows: int = 2000) -> str:
    """One row: per prefilter, how many of the first `rows` wide rows pass it (to test the most selective first)."""
    if not prefilters:
        return ""
    sums = ", ".join(f"sum(CASE WHEN {c} THEN 1 ELSE 0 END)" for c in prefilters)
    return f"SELECT {sums} FROM (SELECT * FROM {wide_table} x ORDER BY x.user_pk LIMIT {int(rows)}) w"


def full_query(logic: Any, facts: dict[str, dict[str, Any]], ctx: Ctx, driving: str | None = None,
               wide_table: str | None = None, prefilters: list[Prefilter] | None = None, table_hint: str = "") -> str:
    """user pks with outcome 1 (member) or 3 (ask Python). With `wide_table` (ctx.wide set), one scan of
    the workspace's wide rows decides each customer on its own row. With `driving` (one of driving_sets),
    only the users it yields are looked at, each through covering lookups of its values, instead of every user."""
    if wide_table:
        wide_table = f"{wide_table} w {table_hint}".rstrip()
        pre = wide_conjunct_filters(logic, ctx) if prefilters is None else prefilters
        where = " AND ".join(f"({p.cond})" for p in pre)
        where = f" WHERE {where}" if where else ""
        exact = {p.conjunct for p in pre if p.exact}
        scope = Scope(user="w.user_pk", ep="0", kind="user")
        if exact:  # on rows passing every prefilter, the exact conjuncts are yes: only the rest decide
            rest = [c for i, c in enumerate(conjuncts(logic)) if i not in exact]
            if not rest:
                return f"SELECT w.user_pk AS pk, 1 AS o FROM {wide_table}{where}"
            expr = Translator(ctx, facts).chain("and", [Translator(ctx, facts).node(c, scope) for c in rest])
        else:
            expr = Translator(ctx, facts).node(logic, scope)
        # The outcome is computed once per row that passes the prefilters: the LIMIT / OFFSET keeps the inner
        # select from being flattened into the outer one (which would compute it in the WHERE and again).
        fence = "OFFSET 0" if ctx.dialect == "postgresql" else "LIMIT -1"
        return (f"SELECT q.pk, q.o FROM (SELECT w.user_pk AS pk, {expr} AS o FROM {wide_table}"
                f"{where} {fence}) q WHERE q.o IN (1, 3)")
    expr = outcome_sql(logic, facts, ctx)
    workspace = ctx.p(ctx.workspace_id)
    if driving:  # its rows are the workspace's (customer_value.workspace_id), one per user
        source = f"(SELECT d.user_pk AS id FROM ({driving}) d) u"
    else:
        source = f"users u WHERE u.workspace_id = {workspace}"
    return f"SELECT q.pk, q.o FROM (SELECT u.id AS pk, {expr} AS o FROM {source}) q WHERE q.o IN (1, 3)"
