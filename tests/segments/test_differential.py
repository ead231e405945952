"""SQL translation vs the Python evaluator (datalogic on the customer document), on edge-heavy data.

For every customer whose SQL outcome is decided (not 'unsure'), it must equal datalogic's outcome
(truthy / falsy / raises); and the final member set (SQL + Python for unsure rows) must equal the
pure-Python member set. Runs on SQLite and, when configured, PostgreSQL.
"""
from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import text

from tidings.engine.customers import users as customers, endpoints, events
from tidings.engine.platform.clock import now_ms
from tidings.engine.customers.schemas import Demographic, EndpointBatchItem, EventIn, UserBatchItem
from tidings.engine.segments.documents import documents
from tidings.engine.segments.evaluate import compile_segment, ensure_indexed, full_members, python_member
from tidings.engine.segments import typed_index as paths
from tidings.engine.segments.to_sql import (
    Ctx, Scope, Translator, conjuncts, outcome, outcome_sql, wide_conjunct_filters,
)
from tidings.engine.workspaces.service import create_key

EDGE_STR = ["", "0", "1", "5", "5.0", "-0", " 5", "007", "1e3", "abc", "ABC", "Abc", "a%b", "a_b", "%", "_",
            "é", "É", "日本", "10", "9", "true", "null", "x y", ".5", "inf"]
EDGE_VAL = st.one_of(st.sampled_from(EDGE_STR), st.text(alphabet="aA_%5é0 .", max_size=4),
                     st.integers(-10, 10), st.sampled_from([0, 1, 5, -2.5, 10.0, 0.1]), st.booleans(),
                     st.lists(st.sampled_from(["a", "b", "5", "", "%", "A"]), max_size=3))
LIT = st.one_of(st.sampled_from(EDGE_STR), st.sampled_from([0, 5, -1, 2.5, 10, 1, True, False, None]))
USER_VARS = ["attributes.a", "attributes.b", "metrics.m", "user_id", "locale", "attributes.missing"]
EP_VARS = ["channel", "address", "opt_out", "attributes.t", "metrics.n", "demographic.platform", "location.country"]
OPS = ["==", "!=", "<", "<=", ">", ">=", "===", "!=="]


def leaf(vars_):
    var = st.sampled_from(vars_).map(lambda v: {"var": v})
    return st.one_of(
        st.tuples(st.sampled_from(OPS), var, LIT, st.booleans()).map(lambda t: {t[0]: [t[1], t[2]] if t[3] else [t[2], t[1]]}),
        st.tuples(st.sampled_from(EDGE_STR), var).map(lambda t: {"in": [t[0], t[1]]}),
        st.tuples(var, st.lists(LIT, max_size=3)).map(lambda t: {"in": [t[0], t[1]]}),
        var, var.map(lambda v: {"!": v}), var.map(lambda v: {"!!": [v]}),
        st.tuples(st.sampled_from(["<", "<="]), LIT, var, LIT).map(lambda t: {t[0]: [t[1], t[2], t[3]]}),
    )


def combine(children):
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda xs: {"and": xs}),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: {"or": xs}),
        children.map(lambda x: {"!": x}),
    )


USER_RULE = st.recursive(leaf(USER_VARS), combine, max_leaves=6)
EP_RULE = st.recursive(leaf(EP_VARS), combine, max_leaves=3)
OUR_OPS = st.one_of(
    st.tuples(st.sampled_from(OPS[:6]), st.integers(0, 3), st.sampled_from([None, "1d"]), st.sampled_from([{}, {"sku": "a"}])).map(
        lambda t: {"performed": {"event": "buy", "count": [t[0], t[1]], **({"within": t[2]} if t[2] else {}), "where": t[3]}}),
    st.sampled_from([{"last_performed": {"event": "buy", "within": "1d"}},
                     {"last_performed": {"event": "buy", "not_within": "1h"}},
                     {"active": "7d"}, {"inactive": "1d"},
                     {"before": ["attributes.a", "2024-06-01"]}, {"after": ["attributes.a", "now-30d"]},
                     {"on": ["attributes.b", "2024-05-01"]},
                     {"between": ["attributes.a", "2020-01-01", "2030-01-01"]}]),
)
RULE = st.one_of(
    USER_RULE,
    st.tuples(st.sampled_from(["some", "none", "all"]), EP_RULE).map(lambda t: {t[0]: [{"var": "endpoints"}, t[1]]}),
    st.tuples(USER_RULE, OUR_OPS).map(lambda t: {"and": [t[1], t[0]]}),
    st.tuples(USER_RULE, OUR_OPS).map(lambda t: {"or": [t[0], t[1]]}),
)
USER = st.fixed_dictionaries({
    "a": EDGE_VAL, "b": st.one_of(EDGE_VAL, st.sampled_from(["2024-05-01", "2024-05-01T10:00:00Z", "2019-01-01"])),
    "m": st.one_of(st.none(), st.integers(-5, 5), st.sampled_from([0.5, 10.0, -0.0])),
    "locale": st.sampled_from([None, "en-US", "fr"]),
    "eps": st.lists(st.tuples(st.sampled_from(["EMAIL", "SMS", "PUSH"]), st.booleans(),
                              st.lists(st.sampled_from(["a", "%", "5", "B"]), max_size=2),
                              st.sampled_from([None, 0, 3.5]), st.sampled_from([None, "ios", "", "5"])), max_size=2),
    "buys": st.lists(st.sampled_from(["a", "b", None]), max_size=3),
})
_ws = itertools.count()


@hsettings(max_examples=int(os.environ.get("TIDINGS_DIFF_EXAMPLES", "150")), deadline=None, suppress_health_check=list(HealthCheck))
@given(people=st.lists(USER, min_size=1, max_size=6), rules=st.lists(RULE, min_size=1, max_size=4))
def test_sql_agrees_with_python(db, people, rules):
    agree(db, people, rules)


def person(a, b="x", m=None):
    return {"a": a, "b": b, "m": m, "locale": None, "eps": [], "buys": []}


def test_prefilters_on_values_of_several_kinds(db):
    """Numeric strings, booleans and lists share a slot's num / txt columns with numbers and text: a
    prefilter comparison may be true on them where the rule is not, so it is not exact there."""
    people = [person(a, b) for a, b in [(5, "5"), ("5", 5), (True, "1"), (1, True), (["a", "5"], ""), ("abc", "5.0"),
                                        (0, "0"), ("", None), (2.5, ["5"]), ("007", 7)]]
    rules = [{"===": [{"var": "attributes.a"}, 5]}, {"!==": [{"var": "attributes.a"}, 5]},
             {"and": [{">": [{"var": "attributes.a"}, 0]}, {"==": [{"var": "attributes.b"}, "5"]}]},
             {"and": [{"==": [{"var": "attributes.a"}, 1]}, {"in": [{"var": "attributes.b"}, [5, "1", True]]}]},
             {"and": [{"<": [{"var": "attributes.a"}, "b"]}, {">=": [{"var": "attributes.b"}, 5]}]},
             {"in": ["5", {"var": "attributes.a"}]}, {"===": [{"var": "attributes.b"}, 7]}]
    agree(db, people, rules)


def agree(db, people, rules):
    workspace, _ = create_key(db, f"diff{next(_ws)}")
    items, eps, evs = [], [], []
    for i, p in enumerate(people):
        uid = f"u{i}"
        attrs = {"a": p["a"], "b": p["b"]}
        items.append(UserBatchItem(user_id=uid, attributes={k: v for k, v in attrs.items()},
                                   metrics={} if p["m"] is None else {"m": p["m"]}, locale=p["locale"]))
        for j, (ch, opt, tags, n, plat) in enumerate(p["eps"]):
            addr = {"EMAIL": f"{uid}.{j}@example.com", "SMS": f"+1415555{i:02d}{j:02d}", "PUSH": f"tok-{uid}-{j}"}[ch]
            eps.append(EndpointBatchItem(endpoint_id=f"{uid}-{j}", user_id=uid, channel=ch, address=addr, opt_out=opt,
                                         attributes={"t": tags}, metrics={} if n is None else {"n": n},
                                         demographic=Demographic(platform=plat)))
        for sku in p["buys"]:
            evs.append(EventIn(name="buy", user_id=uid, attributes={} if sku is None else {"sku": sku}))
    customers.upsert_users(db, workspace, items)
    if eps:
        endpoints.upsert_endpoints(db, workspace, eps)
    if evs:
        events.ingest(db, workspace, evs)
    now = now_ms()
    with db.connect() as conn:
        pks = list(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": workspace.id}).scalars())
        for rule in rules:
            seg = compile_segment("diff", "dynamic", rule)
            ensure_indexed(conn, workspace.id, seg)  # the typed index holds only paths some rule reads
            docs = documents(conn, workspace.id, pks, seg.facts, now)
            ctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace.id, now=now)
            expr = outcome_sql(seg.logic, seg.facts, ctx)
            rows = dict(conn.execute(text(f"SELECT u.id, {expr} FROM users u WHERE u.workspace_id = :ws_"),
                                     {**ctx.params, "ws_": workspace.id}).all())
            for pk, doc in docs.items():
                if rows[pk] != 3:
                    assert rows[pk] == outcome(seg.logic, doc), (rule, doc)
            slots = paths.slots(conn, workspace.id)
            if seg.user_paths and seg.user_paths <= set(slots):  # the same rule over the wide table
                wctx = Ctx(dialect=conn.dialect.name, workspace_id=workspace.id, now=now, wide=slots)
                if conn.dialect.name == "sqlite":  # as full evaluation: branches of rare kinds no slot holds dropped
                    wctx.rare = paths.rare_kinds(conn, workspace.id, slots.values())
                wexpr = Translator(wctx, seg.facts).node(seg.logic, Scope(user="w.user_pk", ep="0", kind="user"))
                wrows = dict(conn.execute(text(f"SELECT w.user_pk, {wexpr} FROM {paths.wide_table(workspace.id)} w"),
                                          wctx.params).all())
                assert set(wrows) == set(docs)
                for pk, doc in docs.items():
                    if wrows[pk] != 3:
                        assert wrows[pk] == outcome(seg.logic, doc), (rule, doc)
                # each prefilter passes every customer its conjunct holds for; an exact one only those
                terms = conjuncts(seg.logic)
                for pre in wide_conjunct_filters(seg.logic, wctx):
                    passing = set(conn.execute(text(f"SELECT w.user_pk FROM {paths.wide_table(workspace.id)} w WHERE {pre.cond}"),
                                               wctx.params).scalars())
                    for pk, doc in docs.items():
                        holds = outcome(terms[pre.conjunct], doc) == 1
                        assert holds <= (pk in passing), (rule, pre, doc)
                        if pre.exact:
                            assert holds == (pk in passing), (rule, pre, doc)
            expected = {pk for pk, doc in docs.items() if python_member(seg, doc)}
            assert full_members(conn, workspace.id, seg, now) == expected, rule
            # the direct evaluation over the users' JSON (while the index fills) agrees too
            assert full_members(conn, workspace.id, seg, now, register=False, direct=True) == expected, rule
