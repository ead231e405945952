"""Filling the typed index for a path a segment starts reading: set-based SQL, in batches, outside the
transaction that saves the segment, with a watermark (`indexed_path.filled_to`) so writes keep it exact.

A new path is *registered* in the saving transaction (its `indexed_path` row with `filled_to = 0`, its wide
slot): from then on every write indexes its own rows for it (customers.on_write -> segments.membership). The
backfill then fills the rows of every other customer in ascending user pk, one batch per short write
transaction: it deletes the batch's rows of the path and inserts them again from the users (or endpoint)
rows, classified in SQL (`classified`: JsonLogic's value classes of documents.classify, with json_type on
SQLite and jsonb_typeof on PostgreSQL), then moves `filled_to` past the batch; the last batch sets it NULL
(filled). Values SQL does not classify with certainty (strings that may be ISO dates, whose epoch ms Python
parses; numeric strings with an exponent or very long; a few Unicode corner cases) come out as kind '?' and
are classified by documents.value_rows for just those customers, in the same batch.

Ordering: on SQLite every write transaction holds the database's write lock, so a batch and a customer
write never interleave. On PostgreSQL writes to a workspace's customers take the workspace's advisory lock
shared (write_guard) before reading its segments, and registering paths or running a batch takes it
exclusively: a batch never sees half of a write, and a write that started before a path was registered
ends before the registration (and the direct evaluation that goes with it) reads anything.

Until its paths are filled a segment is `evaluating` (service.SegmentOut.state, with `progress`): its
members were given at save time by a direct evaluation of the users table (`direct_source`: the rule's
paths classified from the attributes JSON by the same expressions, in a derived table shaped like the wide
table, so to_sql's wide translation applies unchanged) and writes keep them current as for any segment.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Callable

from sqlalchemy import Connection, Engine, select, text, update

from tidings.engine.platform.db import bulk_insert, reading, without_jit, writing
from tidings.engine.segments.tables import indexed_paths

log = logging.getLogger("tidings.segments")

BATCH = 20_000  # customers per backfill transaction
# fill in a thread of the process that saved the segment (else only the worker's segment clock fills)
IN_PROCESS = os.environ.get("TIDINGS_BACKFILL_IN_PROCESS", "1") != "0"
SYNC_FILL_ROWS = 20_000  # a workspace with at most this many customers is filled inside the saving transaction
# First key of the PostgreSQL advisory lock (the workspace id is the second): advisory locks are per database,
# so the key names the schema too, else workspace 1 of every Tidings schema on one server would share a lock.
LOCK_CLASS = "hashtext('tidings.segments:' || current_schema())"

_SPACES = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())  # what str.strip() removes
_FOLDS = ("\u0130", "\u0131")  # characters re.IGNORECASE matches to 'i' (documents._NONNUM_WORDS)
MAX_EXACT = 9007199254740992
_NOT_ALL_STRINGS = 'strict $[*] ? (@.type() != "string")'  # an array item that is not a string
_NUMERIC_RE = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"  # documents._NUMERIC (a whole string)
JSON_GROUPS = {"u": ("attributes", "metrics"), "e": ("attributes", "metrics", "demographic", "location")}
TEXT_COLUMNS = {"u": ("user_id", "timezone", "locale"), "e": ("endpoint_id", "channel", "address")}


# ---- locking (PostgreSQL) -----------------------------------------------------------------------

def write_guard(conn: Connection, workspace_id: int) -> None:
    """Before a customer write reads the workspace's segments (PostgreSQL): waits for a registration or a
    backfill batch in progress; held to the end of the write's transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({LOCK_CLASS}, %s)", (int(workspace_id),))


def exclusive(conn: Connection, workspace_id: int) -> None:
    """Registering paths and backfill batches: no customer write of the workspace runs meanwhile."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, %s)", (int(workspace_id),))


# ---- classification in SQL ----------------------------------------------------------------------

Param = Callable[[Any], str]  # a value -> its bind parameter's name (to_sql.Ctx.p, or Params)


class Params:
    def __init__(self, prefix: str = "b") -> None:
        self.values: dict[str, Any] = {}
        self.prefix = prefix

    def __call__(self, value: Any) -> str:
        for k, v in self.values.items():
            if type(v) is type(value) and v == value:
                return ":" + k
        name = f"{self.prefix}{len(self.values)}"
        self.values[name] = value
        return ":" + name


def source_columns(dialect: str, scope: str, path: str, alias: str, p: Param) -> tuple[str, str, str] | None:
    """(ty, v, s) SQL over the users (scope 'u') or endpoint ('e') row `alias` for one path: the JSON type
    (SQLite's json_type names, PostgreSQL's json_typeof names), the value (SQLite: json_extract's; PostgreSQL:
    the json value) and its text; None for a path no customer has (documents._user_values yields no such path)."""
    group, _, key = path.partition(".")
    if not key and path in TEXT_COLUMNS[scope]:
        col = f"{alias}.{path}"
        if dialect == "postgresql":
            return f"(CASE WHEN {col} IS NOT NULL THEN 'string' END)", "NULL::jsonb", col
        return f"(CASE WHEN {col} IS NOT NULL THEN 'text' END)", col, col
    if scope == "e" and path == "opt_out":
        col = f"{alias}.opt_out"
        if dialect == "postgresql":
            return "'boolean'", "NULL::jsonb", f"(CASE WHEN {col} THEN 'true' ELSE 'false' END)"
        return f"(CASE WHEN {col} THEN 'true' ELSE 'false' END)", col, col
    if scope == "e" and path == "effective_date":  # an ISO string of the stored ms: Python writes it
        if dialect == "postgresql":
            return f"(CASE WHEN {alias}.effective_date IS NOT NULL THEN 'date' END)", "NULL::jsonb", "NULL"
        return f"(CASE WHEN {alias}.effective_date IS NOT NULL THEN 'date' END)", "NULL", "NULL"
    if group not in JSON_GROUPS[scope] or not key or "." in key:
        return None
    col = f"{alias}.{group}"
    if dialect == "postgresql":
        v = f"({col} -> {p(key)})"
        # the text straight from the document (->>), not from the value extracted first (v #>> '{}'): the
        # same text, without copying the value out; it is read several times per row by the kind's CASE
        return f"jsonb_typeof({v})", v, f"({col} ->> {p(key)})"
    if '"' in key or "\\" in key:
        return "'odd'", "NULL", "NULL"  # a key SQLite's JSON path cannot quote: Python classifies
    jp = p(f'$."{key}"')
    return f"json_type({col}, {jp})", f"json_extract({col}, {jp})", f"json_extract({col}, {jp})"


def _numeric_sqlite(t: str) -> str:
    """`t` (the string without a leading '-') matches documents._NUMERIC's [0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?"""
    pe = f"instr(lower({t}), 'e')"

    def mant(m: str) -> str:
        return (f"({m} GLOB '[0-9]*' AND {m} NOT GLOB '*[^0-9.]*' AND {m} NOT GLOB '*.*.*' "
                f"AND {m} NOT GLOB '*.')")

    x = f"substr({t}, {pe} + 1)"
    x2 = f"(CASE WHEN substr({x}, 1, 1) IN ('+', '-') THEN substr({x}, 2) ELSE {x} END)"
    return (f"(CASE WHEN {pe} = 0 THEN {mant(t)} ELSE {mant(f'substr({t}, 1, {pe} - 1)')} "
            f"AND {x2} <> '' AND {x2} NOT GLOB '*[^0-9]*' END)")


def string_kind(dialect: str, s: str, p: Param, dates: bool) -> str:
    """The kind of the string `s` as documents.classify gives it ('?': ask Python). `dates`: strings that may
    be ISO dates are '?' too (their `ts` is Python's parse); a direct evaluation does not read `ts`. The
    cheap tests come first: most strings have no digit, and of those with one few are all number characters."""
    if dialect == "postgresql":
        digit = f"{s} ~ {p('[0-9]')}"
        date_digits = f"length({s}) BETWEEN 8 AND 40 AND left({s}, 4) ~ {p('^[0-9]{4}$')}"
        date_other = f"length({s}) BETWEEN 8 AND 40 AND left({s}, 4) ~ {p('[^ -~]')}"
        numeric = (f"{s} ~ {p(_NUMERIC_RE)} THEN (CASE WHEN {s} ~ {p('[eE]')} OR length({s}) > 300 THEN '?' "
                   f"WHEN abs({s}::float8) < 1e300 AND ({s}::float8 = 0 OR abs({s}::float8) > 1e-300) THEN 's' "
                   f"ELSE 'o' END)")
        plain = (f"btrim({s}, {p(_SPACES)}) <> '' AND {s} !~ {p('[iI][nN][fF]')} AND {s} !~ {p('[nN][aA][nN]')}")
        folds = f"{s} ~ {p('[' + ''.join(_FOLDS) + ']')}"
    else:
        digit = f"{s} GLOB '*[0-9]*'"
        date_digits = f"length({s}) BETWEEN 8 AND 40 AND substr({s}, 1, 4) GLOB '[0-9][0-9][0-9][0-9]'"
        date_other = f"length({s}) BETWEEN 8 AND 40 AND substr({s}, 1, 4) GLOB {p('*[^ -~]*')}"
        t = f"(CASE WHEN substr({s}, 1, 1) = '-' THEN substr({s}, 2) ELSE {s} END)"
        real = f"CAST({s} AS REAL)"
        numeric = (f"{s} NOT GLOB {p('*[^0-9.eE+-]*')} AND {_numeric_sqlite(t)} THEN (CASE WHEN length({s}) > 16 "
                   f"THEN '?' WHEN abs({real}) < 1e300 AND ({real} = 0 OR abs({real}) > 1e-300) THEN 's' ELSE 'o' END)")
        plain = (f"trim({s}, {p(_SPACES)}) <> '' AND {s} NOT LIKE {p('%inf%')} AND {s} NOT LIKE {p('%nan%')}")
        folds = " OR ".join(f"instr({s}, {p(c)}) > 0" for c in _FOLDS)
    with_digit = (f"(CASE {f'WHEN {date_digits} OR {date_other} THEN {chr(39)}?{chr(39)} ' if dates else ''}"
                  f"WHEN {numeric} ELSE 'o' END)")  # a digit: a number, or other ('t' has none)
    return (f"(CASE WHEN {s} = '' THEN 'z' WHEN {digit} THEN {with_digit} "
            f"{f'WHEN {date_other} THEN {chr(39)}?{chr(39)} ' if dates else ''}"
            f"WHEN {folds} THEN '?' WHEN {plain} THEN 't' ELSE 'o' END)")


def value_kind(dialect: str, ty: str, v: str, s: str, p: Param, dates: bool = True) -> str:
    """The kind (documents.classify) of a value given its JSON type, value and text; NULL when absent."""
    if dialect == "postgresql":
        num = f"{s}::numeric"
        return (f"(CASE {ty} WHEN 'boolean' THEN 'b' "
                f"WHEN 'number' THEN (CASE WHEN length({s}) > 30 THEN '?' WHEN abs({num}) > {MAX_EXACT} THEN 'x' "
                f"WHEN {num} <> 0 AND abs({num}) < 1e-300 THEN '?' ELSE 'n' END) "
                f"WHEN 'string' THEN {string_kind(dialect, s, p, dates)} "
                # a jsonpath, not EXISTS over jsonb_array_elements: a correlated subquery keeps the whole scan
                # out of a parallel plan (strict: lax mode would unwrap a nested array into its strings)
                f"WHEN 'array' THEN (CASE WHEN jsonb_path_exists({v}, CAST({p(_NOT_ALL_STRINGS)} AS jsonpath)) THEN 'x' "
                f"ELSE 'l' END) "
                f"WHEN 'object' THEN 'x' WHEN 'date' THEN '?' WHEN 'odd' THEN '?' END)")
    return (f"(CASE {ty} WHEN 'true' THEN 'b' WHEN 'false' THEN 'b' "
            f"WHEN 'integer' THEN (CASE WHEN {v} > {MAX_EXACT} OR {v} < -{MAX_EXACT} THEN 'x' ELSE 'n' END) "
            f"WHEN 'real' THEN (CASE WHEN {v} > {MAX_EXACT} OR {v} < -{MAX_EXACT} THEN 'x' ELSE 'n' END) "
            f"WHEN 'text' THEN {string_kind(dialect, s, p, dates)} "
            f"WHEN 'array' THEN (CASE WHEN EXISTS (SELECT 1 FROM json_each({v}) ae WHERE ae.type <> 'text') "
            f"THEN 'x' ELSE 'l' END) "
            f"WHEN 'object' THEN 'x' WHEN 'date' THEN '?' WHEN 'odd' THEN '?' END)")


def value_columns(dialect: str, k: str, ty: str, v: str, s: str) -> tuple[str, str, str]:
    """(txt, num, list) SQL for a value of kind `k` (documents.classify's columns; `list` is the array,
    for its items, when k is 'l')."""
    txt = f"(CASE WHEN {k} IN ('s', 't', 'z', 'o') THEN {s} END)"
    if dialect == "postgresql":
        num = (f"(CASE {k} WHEN 'b' THEN (CASE WHEN {s} = 'true' THEN 1.0 ELSE 0.0 END) "
               f"WHEN 'n' THEN {s}::float8 WHEN 's' THEN {s}::float8 WHEN 'l' THEN jsonb_array_length({v}) END)")
    else:
        num = (f"(CASE {k} WHEN 'b' THEN (CASE WHEN {ty} = 'true' THEN 1.0 ELSE 0.0 END) "
               f"WHEN 'n' THEN CAST({v} AS REAL) WHEN 's' THEN CAST({s} AS REAL) WHEN 'l' THEN json_array_length({v}) END)")
    return txt, num, f"(CASE WHEN {k} = 'l' THEN {v} END)"


def _fence(dialect: str) -> str:
    return "OFFSET 0" if dialect == "postgresql" else "LIMIT -1"


def classified(dialect: str, scope: str, path: str, where: str, p: Param) -> str | None:
    """SELECT user_pk, ep, kind, txt, num, arr: one row per customer (scope 'u') or endpoint ('e') passing
    `where` that has a value at `path`; None when no customer can have one."""
    alias, table = ("u", "users") if scope == "u" else ("e", "endpoint")
    cols = source_columns(dialect, scope, path, alias, p)
    if cols is None:
        return None
    ty, v, s = cols
    pk, ep = ("u.id", "0") if scope == "u" else ("e.user_pk", "e.id")
    fence = _fence(dialect)
    a = f"SELECT {pk} AS user_pk, {ep} AS ep, {ty} AS ty, {v} AS v, {s} AS s FROM {table} {alias} WHERE {where} {fence}"
    b = f"SELECT a.*, {value_kind(dialect, 'a.ty', 'a.v', 'a.s', p)} AS k FROM ({a}) a {fence}"
    txt, num, arr = value_columns(dialect, "b.k", "b.ty", "b.v", "b.s")
    return f"SELECT b.user_pk, b.ep, b.k AS kind, {txt} AS txt, {num} AS num, {arr} AS arr FROM ({b}) b WHERE b.k IS NOT NULL"


def _cheap_flags(dialect: str, ty: str, v: str, s: str, p: Param) -> tuple[str, str, str, str]:
    """(x, y, b, e) for a direct evaluation's prefilters, cheap to compute for every row: x is 1 at least where
    the kind is 'x' or '?' (a superset: it only lets rows through to the outcome expression, which reads the
    kind itself), y the same but for the values that are not strings (a string whose kind SQL leaves to
    Python is still a string kind: to_sql uses y where every string kind answers alike), b is 1 where the
    kind is 'b', e is 1 where the value is present."""
    if dialect == "postgresql":
        text_x = (f"strpos({s}, {p(_FOLDS[0])}) > 0 OR strpos({s}, {p(_FOLDS[1])}) > 0 OR length({s}) > 16 "
                  f"OR (left({s}, 1) ~ {p('[-0-9]')} AND {s} ~ {p('[eE]')})")
        other = "WHEN 'array' THEN 1 WHEN 'object' THEN 1"
        number = f"WHEN 'number' THEN (CASE WHEN length({s}) > 15 THEN 1 END)"
        x = f"(CASE {ty} {number} WHEN 'string' THEN (CASE WHEN {text_x} THEN 1 END) {other} END)"
        y = f"(CASE {ty} {number} {other} END)"
        b = f"(CASE WHEN {ty} = 'boolean' THEN 1 END)"
    else:
        text_x = f"instr({s}, {p(_FOLDS[0])}) > 0 OR instr({s}, {p(_FOLDS[1])}) > 0 OR length({s}) > 16"
        rng = f"(CASE WHEN {v} > {MAX_EXACT} OR {v} < -{MAX_EXACT} THEN 1 END)"
        number = f"WHEN 'integer' THEN {rng} WHEN 'real' THEN {rng}"
        other = "WHEN 'array' THEN 1 WHEN 'object' THEN 1 WHEN 'odd' THEN 1"
        x = f"(CASE {ty} {number} WHEN 'text' THEN (CASE WHEN {text_x} THEN 1 END) {other} END)"
        y = f"(CASE {ty} {number} {other} END)"
        b = f"(CASE WHEN {ty} IN ('true', 'false') THEN 1 END)"
    e = f"(CASE WHEN {ty} IS NOT NULL AND {ty} <> 'null' THEN 1 END)"
    return x, y, b, e


def direct_source(dialect: str, workspace_id_param: str, user_paths: list[str], p: Param,
                  pk_range: tuple[str, str] | None = None, sample: str | None = None) -> str:
    """A derived table shaped like the workspace's wide table (user_pk, and per path i of `user_paths` the
    columns k{i} n{i} t{i}, plus j{i} the list of a 'l' value, the cheap flags x{i} y{i} b{i} e{i} of
    _cheap_flags, and on SQLite v{i} the value as json_extract gives it) computed from the users rows' JSON: the direct evaluation reads it where the typed index is
    not filled. Kinds SQL leaves unsure read as 'x' (the translation asks Python for those customers).
    No fence: the database folds it into the query, so the costly kind is computed only for the rows the
    prefilters (which read t, n and the flags) let through. `pk_range`: the names of two parameters
    bounding the user pks scanned, (after, upto]; `sample`: SQL over u.id keeping the customers sampled."""
    cols = []
    for i, path in enumerate(user_paths):
        src = source_columns(dialect, "u", path, "u", p)
        if src is None:
            cols.append(f"NULL AS k{i}, NULL AS n{i}, NULL AS t{i}, NULL AS j{i}, NULL AS x{i}, NULL AS y{i}, "
                        f"NULL AS b{i}, NULL AS e{i}, NULL AS v{i}")
            continue
        ty, v, s = src
        k = value_kind(dialect, ty, v, s, p, dates=False)
        if dialect == "postgresql":
            num_s = (f"(CASE WHEN {s} ~ {p(_NUMERIC_RE)} AND {s} !~ {p('[eE]')} AND length({s}) <= 300 "
                     f"AND abs({s}::float8) < 1e300 AND ({s}::float8 = 0 OR abs({s}::float8) > 1e-300) THEN {s}::float8 END)")
            n = (f"(CASE {ty} WHEN 'number' THEN (CASE WHEN length({s}) <= 15 OR {k} = 'n' THEN {s}::float8 END) "
                 f"WHEN 'boolean' THEN (CASE WHEN {s} = 'true' THEN 1.0 ELSE 0.0 END) WHEN 'string' THEN {num_s} "
                 f"WHEN 'array' THEN (CASE WHEN {k} = 'l' THEN jsonb_array_length({v}) END) END)")
            j = f"(CASE WHEN {ty} = 'array' THEN {v} END)"
            t = f"(CASE WHEN {ty} = 'string' THEN {s} END)"
        else:
            tt = f"(CASE WHEN substr({s}, 1, 1) = '-' THEN substr({s}, 2) ELSE {s} END)"
            real = f"CAST({s} AS REAL)"
            num_s = (f"(CASE WHEN {s} GLOB '*[0-9]*' AND {s} NOT GLOB {p('*[^0-9.eE+-]*')} AND length({s}) <= 16 "
                     f"AND {_numeric_sqlite(tt)} AND abs({real}) < 1e300 AND ({real} = 0 OR abs({real}) > 1e-300) "
                     f"THEN {real} END)")
            rng = f"(CASE WHEN {v} BETWEEN -{MAX_EXACT} AND {MAX_EXACT} THEN CAST({v} AS REAL) END)"
            n = (f"(CASE {ty} WHEN 'integer' THEN {rng} WHEN 'real' THEN {rng} WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 "
                 f"WHEN 'text' THEN {num_s} WHEN 'array' THEN (CASE WHEN {k} = 'l' THEN json_array_length({v}) END) END)")
            j = f"(CASE WHEN {ty} = 'array' THEN {v} END)"
            t = f"(CASE WHEN {ty} = 'text' THEN {s} END)"
        x, y, b, e = _cheap_flags(dialect, ty, v, s, p)
        # replace(): the long CASE once per row (a CASE testing it for '?' first computed it twice)
        raw = v if dialect == "sqlite" else "NULL"
        cols.append(f"replace({k}, '?', 'x') AS k{i}, {n} AS n{i}, {t} AS t{i}, {j} AS j{i}, "
                    f"{x} AS x{i}, {y} AS y{i}, {b} AS b{i}, {e} AS e{i}, {raw} AS v{i}")
    where = f"u.workspace_id = {workspace_id_param}"
    if sample is not None:  # a condition on u.id alone (estimate.py's sample: pks to look up)
        if dialect == "sqlite":  # not the workspace index (without statistics SQLite walked it all)
            where = f"+{where}"
        where += f" AND {sample}"
    if pk_range is not None:  # (after, upto] parameters: a part of the scan (evaluate._fetch_in_parts)
        where += f" AND u.id > {pk_range[0]} AND u.id <= {pk_range[1]}"
    return f"(SELECT u.id AS user_pk, {', '.join(cols)} FROM users u WHERE {where})"


# ---- the backfill ---------------------------------------------------------------------------------

def pending(conn: Connection, workspace_id: int) -> list[tuple[str, str, int, int | None]]:
    """(scope, path, filled_to, slot) of the workspace's paths still being filled."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        select(indexed_paths.c.scope, indexed_paths.c.path, indexed_paths.c.filled_to, indexed_paths.c.slot)
        .where(indexed_paths.c.workspace_id == workspace_id, indexed_paths.c.filled_to.is_not(None))
        .order_by(indexed_paths.c.scope, indexed_paths.c.path))]


def _batch_end(conn: Connection, workspace_id: int, after: int, batch: int) -> int | None:
    """The user pk ending the batch after `after` (None: the batch reaches the last customer)."""
    return conn.execute(text("SELECT id FROM users WHERE workspace_id = :ws AND id > :after ORDER BY id "
                             "LIMIT 1 OFFSET :off"), {"ws": workspace_id, "after": after, "off": batch - 1}).scalar()


def fill_batch(conn: Connection, workspace_id: int, scope: str, path: str, after: int, slot: int | None,
               batch: int | None = None) -> int | None:
    """Fill the rows of customers with pk in (after, end] for one path, in the caller's (exclusive) write
    transaction; returns the new watermark, None once the path is filled for every customer."""
    from tidings.engine.segments import typed_index
    from tidings.engine.segments.documents import UserRow, load_customers, value_rows
    from tidings.engine.segments.tables import customer_values

    dialect = conn.dialect.name
    without_jit(conn)
    end = _batch_end(conn, workspace_id, after, batch or BATCH)
    p = Params()
    workspace, lo, path_p = p(workspace_id), p(after), p(path)
    hi = p(end) if end is not None else None
    upto = f" AND cv.user_pk <= {hi}" if hi else ""
    ep_cond = "cv.ep = 0" if scope == "u" else "cv.ep <> 0"
    conn.execute(text(f"DELETE FROM customer_value WHERE id IN (SELECT cv.id FROM customer_value cv WHERE "
                      f"cv.user_pk > {lo}{upto} AND cv.path = {path_p} AND {ep_cond} AND cv.workspace_id = {workspace})"),
                 p.values)
    alias = "u" if scope == "u" else "e"
    pk = "u.id" if scope == "u" else "e.user_pk"
    where = f"{alias}.workspace_id = {workspace} AND {pk} > {lo}" + (f" AND {pk} <= {hi}" if hi else "")
    sel = classified(dialect, scope, path, where, p)
    if sel is not None:
        cols = "workspace_id, user_pk, ep, path, kind, txt, num"
        conn.execute(text(f"INSERT INTO customer_value ({cols}) SELECT {workspace}, c.user_pk, c.ep, {path_p}, c.kind, c.txt, "
                          f"c.num FROM ({sel}) c"), p.values)
        items = ("jsonb_array_elements_text(c.arr) it(value)" if dialect == "postgresql" else "json_each(c.arr) it")
        lists = conn.execute(text(f"SELECT 1 FROM customer_value cv WHERE cv.user_pk > {lo}{upto} AND cv.path = {path_p} "
                                  f"AND {ep_cond} AND cv.kind = 'l' AND cv.workspace_id = {workspace} LIMIT 1"), p.values).first()
        if lists:  # their items: the classification again, kept to the list rows
            conn.execute(text(f"INSERT INTO customer_value ({cols}) SELECT {workspace}, c.user_pk, c.ep, {path_p}, 'i', "
                              f"it.value, NULL FROM ({sel}) c, {items} WHERE c.kind = 'l'"), p.values)
        # what SQL left to Python: those customers' rows of this path, from documents.value_rows
        odd = sorted(set(conn.execute(text(
            f"SELECT cv.user_pk FROM customer_value cv WHERE cv.user_pk > {lo}{upto} AND cv.path = {path_p} "
            f"AND {ep_cond} AND cv.kind = '?' AND cv.workspace_id = {workspace}"), p.values).scalars()))
        if odd:
            conn.execute(text(f"DELETE FROM customer_value WHERE id IN (SELECT cv.id FROM customer_value cv "
                              f"WHERE cv.user_pk IN :odd AND cv.path = {path_p} AND {ep_cond})")
                         .bindparams(_expanding("odd")), {**p.values, "odd": odd})
            found, eps = load_customers(conn, odd)
            rows = []
            for upk in odd:
                if scope == "u" and upk in found:
                    rows += value_rows(workspace_id, found[upk], (), {path}, ())
                elif scope == "e":
                    owner = UserRow(upk, None, {}, {}, None, None)
                    rows += value_rows(workspace_id, owner, eps.get(upk, []), (), {path})
            bulk_insert(conn, customer_values, rows)
    if scope == "u" and slot is not None:
        table = typed_index.wide_table(workspace_id)
        s = int(slot)
        conn.execute(text(
            f"INSERT INTO {table} (user_pk, k{s}, n{s}, t{s}, d{s}) SELECT u.id, cv.kind, cv.num, cv.txt, cv.ts "
            f"FROM users u LEFT JOIN customer_value cv ON cv.user_pk = u.id AND cv.path = {path_p} AND cv.ep = 0 "
            f"AND cv.kind <> 'i' WHERE {where} ON CONFLICT (user_pk) DO UPDATE SET k{s} = excluded.k{s}, "
            f"n{s} = excluded.n{s}, t{s} = excluded.t{s}, d{s} = excluded.d{s}"), p.values)
    conn.execute(update(indexed_paths).where(
        indexed_paths.c.workspace_id == workspace_id, indexed_paths.c.scope == scope, indexed_paths.c.path == path)
        .values(filled_to=end))
    return end


def _expanding(name: str):
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


def fill_in(conn: Connection, workspace_id: int, batch: int | None = None) -> None:
    """Fill every pending path of the workspace in the caller's transaction (small workspaces, tests)."""
    exclusive(conn, workspace_id)
    for scope, path, after, slot in pending(conn, workspace_id):
        mark: int | None = after
        while mark is not None:
            mark = fill_batch(conn, workspace_id, scope, path, mark, slot, batch)


def fill_step(db: Engine, workspace_id: int, batch: int | None = None) -> bool:
    """One batch of the workspace's first pending path in its own write transaction; False when none is left."""
    with writing(db) as conn:
        exclusive(conn, workspace_id)
        todo = pending(conn, workspace_id)
        if not todo:
            return False
        scope, path, after, slot = todo[0]
        fill_batch(conn, workspace_id, scope, path, after, slot, batch)
        return True


def fill(db: Engine, workspace_id: int, batch: int | None = None) -> int:
    """Every pending path of the workspace, batch by batch; returns the batches run."""
    n = 0
    while fill_step(db, workspace_id, batch):
        n += 1
    return n


_running: dict[tuple[int, int], threading.Thread] = {}
_running_lock = threading.Lock()


def kick(db: Engine, workspace_id: int) -> threading.Thread | None:
    """Fill the workspace's pending paths in a background thread of this process (one per workspace); the
    worker's segment clock resumes what a stopped process left (resume_all)."""
    if not IN_PROCESS:
        return None
    with reading(db) as conn:
        if not pending(conn, workspace_id):
            return None
    key = (id(db), workspace_id)
    with _running_lock:
        t = _running.get(key)
        if t is not None and t.is_alive():
            return t

        def run() -> None:
            try:
                fill(db, workspace_id)
            except Exception:  # the clock's resume_all retries
                log.exception("typed index backfill of workspace %s failed", workspace_id)
            finally:
                with _running_lock:
                    _running.pop(key, None)

        t = threading.Thread(target=run, name=f"tidings-backfill-{workspace_id}", daemon=True)
        _running[key] = t
        t.start()
        return t


def resume_all(db: Engine) -> int:
    """Fill what any workspace has pending (the worker's segment clock); returns the batches run."""
    with reading(db) as conn:
        ws_ids = list(conn.execute(select(indexed_paths.c.workspace_id).where(
            indexed_paths.c.filled_to.is_not(None)).distinct()).scalars())
    return sum(fill(db, workspace) for workspace in ws_ids)


def progress(conn: Connection, workspace_id: int, index_paths: set[tuple[str, str]]) -> float | None:
    """How far the backfill of these (scope, path) pairs is (0..1), None when all are filled."""
    if not index_paths:
        return None
    marks = [(s, p, f) for s, p, f, _ in pending(conn, workspace_id) if (s, p) in index_paths]
    if not marks:
        return None
    lo, hi = conn.execute(text("SELECT min(id), max(id) FROM users WHERE workspace_id = :ws"),
                          {"ws": workspace_id}).one()
    if lo is None or hi <= lo:
        return 0.0
    done = [min(1.0, max(0.0, (f - lo + 1) / (hi - lo + 1))) for _, _, f in marks]
    done += [1.0] * (len(index_paths) - len(marks))
    return min(0.99, round(sum(done) / len(done), 3))
