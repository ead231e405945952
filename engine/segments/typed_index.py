"""What a rule reads, and keeping the typed index (`customer_value`) for exactly the paths some segment
of the workspace reads.

Writes pay only for indexed paths: with no segment (or none reading the written fields) a write costs
one cached lookup. `indexed_path` records which paths are maintained; a path a segment starts reading is
registered in the transaction that saves the segment and backfilled by set-based SQL (segments/backfill.py:
inside that transaction for a small workspace, else in batches after it, behind a watermark), and a path
no segment reads any more is dropped.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any, Iterable

from sqlalchemy import Connection, and_, delete, select, text

from tidings.engine.platform.db import bulk_insert
from tidings.engine.customers.tables import users
from tidings.engine.segments.tables import customer_values, indexed_paths
from tidings.engine.segments import backfill

NOT_INDEXED = ("segments", "imported", "endpoints", "")


def rule_reads(logic: Any, facts: dict[str, dict[str, Any]]) -> tuple[frozenset[str], frozenset[str], bool]:
    """(user-level paths, endpoint-level paths, reads endpoints at all) of an expanded rule.
    Mirrors the SQL translation: user vars at the top level, endpoint vars inside some/all/none over
    `endpoints`; other iterations are left to Python, which reads the document, not the index."""
    user: set[str] = set()
    ep: set[str] = set()
    touches_endpoints = False

    def walk(n: Any, scope: str) -> None:
        nonlocal touches_endpoints
        if isinstance(n, list):
            for x in n:
                walk(x, scope)
            return
        if not isinstance(n, dict):
            return
        for op, args in n.items():
            if op == "var":
                path = args[0] if isinstance(args, list) and args else args
                if isinstance(path, str):
                    if scope == "user" and path == "endpoints":
                        touches_endpoints = True
                    elif scope == "user" and path not in NOT_INDEXED and not path.startswith("behaviour."):
                        user.add(path)
                    elif scope == "endpoint" and path:
                        ep.add(path)
                walk(args, scope)
            elif op in ("some", "all", "none") and isinstance(args, list) and len(args) == 2:
                walk(args[0], scope)
                src = args[0]
                over_eps = scope == "user" and isinstance(src, dict) and src.get("var") == "endpoints"
                walk(args[1], "endpoint" if over_eps else "item")
            else:
                walk(args, scope)

    walk(logic, "user")
    for f in facts.values():
        if f["type"] in ("date", "ago"):
            user.add(f["path"])
        if f["type"] in ("km", "since_active"):
            touches_endpoints = True
    return frozenset(user), frozenset(ep), touches_endpoints or bool(ep)


def maintained(conn: Connection, workspace_id: int) -> set[tuple[str, str]]:
    """(scope, path) pairs the index holds: scope 'u' (user level, ep = 0) or 'e' (endpoints)."""
    return {(s, p) for s, p in conn.execute(select(indexed_paths.c.scope, indexed_paths.c.path).where(
        indexed_paths.c.workspace_id == workspace_id))}


def state(conn: Connection, workspace_id: int) -> list[tuple[str, str, int | None, int | None]]:
    """(scope, path, slot, filled_to) of every path the index holds: what maintained, slots and filled
    read, in one query (full evaluation reads all three)."""
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(
        select(indexed_paths.c.scope, indexed_paths.c.path, indexed_paths.c.slot, indexed_paths.c.filled_to)
        .where(indexed_paths.c.workspace_id == workspace_id))]


def slots(conn: Connection, workspace_id: int, filled: bool = False) -> dict[str, int]:
    """User-level path -> its column slot in the wide table (writes keep every slot; `filled`: only the
    slots the backfill has filled for every customer, which full evaluation may read)."""
    q = select(indexed_paths.c.path, indexed_paths.c.slot).where(
        indexed_paths.c.workspace_id == workspace_id, indexed_paths.c.scope == "u", indexed_paths.c.slot.is_not(None))
    if filled:
        q = q.where(indexed_paths.c.filled_to.is_(None))
    return {p: s for p, s in conn.execute(q)}


def filled(conn: Connection, workspace_id: int) -> set[tuple[str, str]]:
    """(scope, path) pairs the index holds for every customer."""
    return {(s, p) for s, p in conn.execute(select(indexed_paths.c.scope, indexed_paths.c.path).where(
        indexed_paths.c.workspace_id == workspace_id, indexed_paths.c.filled_to.is_(None)))}


def wide_table(workspace_id: int) -> str:
    """The workspace's wide typed table: one row per customer (user_pk), and per user-level indexed path
    four columns k{slot} kind, n{slot} num, t{slot} txt, d{slot} ts: the same values as the path's
    `customer_value` row (list items stay there only). Full evaluation decides a rule with one WHERE over
    one row per customer. Columns are added when a path first needs a slot and reused after it is dropped."""
    return f"cv_wide_{int(workspace_id)}"


WIDE_COLS = ("k", "n", "t", "d")
# Kinds SQL cannot decide with one comparison (booleans, lists, odd numeric text, unknown): where a
# slot holds none, full evaluation drops their terms. A partial index per slot holds just those rows,
# so which of them a slot holds is an index lookup, kept exact by the database on every write.
RARE_KINDS = ("b", "l", "o", "x")
_RARE_IN = ", ".join(f"'{k}'" for k in RARE_KINDS)


def rare_index(conn: Connection, workspace_id: int, slot: int) -> None:
    table = wide_table(workspace_id)
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {table}_r{int(slot)} ON {table} (k{int(slot)}) "
                         f"WHERE k{int(slot)} IN ({_RARE_IN})")


def rare_kinds(conn: Connection, workspace_id: int, slot_list: Iterable[int]) -> dict[int, set[str]]:
    """Slot -> the rare kinds it holds now (through each slot's partial index)."""
    table = wide_table(workspace_id)
    # one index probe per slot and kind (the IN term is the index's own condition, so SQLite uses it)
    parts = [f"SELECT {int(s)}, '{k}' WHERE EXISTS (SELECT 1 FROM {table} WHERE k{int(s)} IN ({_RARE_IN}) "
             f"AND k{int(s)} = '{k}')" for s in sorted(set(slot_list)) for k in RARE_KINDS]
    out: dict[int, set[str]] = {s: set() for s in slot_list}
    if parts:
        for s, k in conn.exec_driver_sql(" UNION ALL ".join(parts)):
            out[s].add(k)
    return out


# Scan indexes: covering indexes over the wide table whose leading columns are a rule's seekable
# comparisons (`t1 = ?`, `t0 IN (...)`, `n4 > ?`) and which hold every column the rule reads, so full
# evaluation is an index-only range scan of the few rows the comparisons leave instead of a scan of every
# wide row. One serves every rule whose columns it holds and whose comparisons include its first column;
# the name lists the columns. Writes keep them current (each costs one index entry per written row).
SCAN_INDEX_LIMIT = 8  # per workspace: each one adds to every wide-row write


# PostgreSQL (the same idea, its limits): a B-tree holds at most 32 columns and refuses an entry over ~2,700
# bytes, so a scan index is built only when the rule's columns fit (attribute strings are at most 100
# characters, customers.limits); it ends with user_pk so the scan is index-only (after VACUUM has set the
# visibility map). Its name is a digest (identifiers are 63 bytes); the columns come from the catalog.
PG_INDEX_KEYS = 32
PG_ROW_BUDGET = 2_400
_PG_TEXT_BYTES = {"user_id": 1_020, "timezone": 256, "locale": 140}  # max_length x 4 (UTF-8)
_PG_ATTRIBUTE_BYTES = 100 * 4 + 4


def scan_index_name(workspace_id: int, columns: list[str], dialect: str = "sqlite") -> str:
    if dialect == "postgresql":
        return f"{wide_table(workspace_id)}_s_{hashlib.sha1('_'.join(columns).encode()).hexdigest()[:16]}"
    return f"{wide_table(workspace_id)}_s_{'_'.join(columns)}"


def scan_indexes(conn: Connection, workspace_id: int) -> dict[str, list[str]]:
    """The workspace's scan indexes: name -> columns in key order (PostgreSQL's trailing user_pk left out)."""
    table = wide_table(workspace_id)
    prefix = f"{table}_s_"
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT i.relname, array_agg(a.attname::text ORDER BY k.ord) FROM pg_index x "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid "
            "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE t.relname = %s AND t.relnamespace = current_schema()::regnamespace GROUP BY i.relname",
            (table,)).all()
        return {n: [c for c in cols if c != "user_pk"] for n, cols in rows if n.startswith(prefix)}
    names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                 (table,)).scalars()
    return {n: n[len(prefix):].split("_") for n in names if n.startswith(prefix)}


def serves(columns: list[str], needed: set[str], seekable: set[str]) -> bool:
    return bool(columns) and columns[0] in seekable and needed <= set(columns)


def _pg_entry_fits(columns: list[str], path_of_slot: dict[int, str]) -> bool:
    if len(columns) + 1 > PG_INDEX_KEYS:
        return False
    size = 0
    for c in columns:
        if c[0] == "t":
            path = path_of_slot.get(int(c[1:]), "")
            size += _PG_TEXT_BYTES.get(path, _PG_ATTRIBUTE_BYTES if path.startswith("attributes.")
                                       else 8 if path.startswith("metrics.") else 2_700)  # metrics: numbers
        else:
            size += 9
    return size <= PG_ROW_BUDGET


def ensure_scan_index(conn: Connection, workspace_id: int, needed: set[str], lead: list[str],
                      seekable: set[str], path_of_slot: dict[int, str] | None = None) -> str | None:
    """A scan index serving a rule that reads the wide columns `needed`, leading with `lead` (its seekable
    comparisons' columns, best first) if a new one is built; None at the limit, with nothing to seek, or
    (PostgreSQL) when its entries might not fit."""
    if not lead:
        return None
    have = scan_indexes(conn, workspace_id)
    for name, columns in have.items():
        if serves(columns, needed, seekable):
            return name
    if len(have) >= SCAN_INDEX_LIMIT:
        return None
    columns = lead + sorted(needed - set(lead), key=lambda c: (int(c[1:]), c[0]))
    table = wide_table(workspace_id)
    if conn.dialect.name == "postgresql":
        if not _pg_entry_fits(columns, path_of_slot or {}):
            return None
        # Two first evaluations of one rule at once would both pass IF NOT EXISTS, and the second's CREATE
        # INDEX then fails on the catalog's unique name when the first commits. They queue here instead;
        # the one that waited finds the index the other made (read committed: a new snapshot per statement).
        # (keyed by schema and table: advisory locks are per database, and every schema has a cv_wide_1)
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('tidings.scan_index:' || current_schema()), "
                          "hashtext(:table))"), {"table": table})
        for name, have_columns in scan_indexes(conn, workspace_id).items():
            if serves(have_columns, needed, seekable):
                return name
        for slot in sorted({int(c[1:]) for c in columns}):  # the rare rows' branch of the scan reads these
            rare_index(conn, workspace_id, slot)
        name = scan_index_name(workspace_id, columns, "postgresql")
        # text keys in the "C" collation, as the translation compares them (to_sql.Ctx.collate): an index
        # serves only comparisons of its own collation
        keys = ", ".join(f'{c} COLLATE "C"' if c[0] == "t" else c for c in columns)
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({keys}, user_pk)")
        return name
    name = scan_index_name(workspace_id, columns)
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})")
    return name


def drop_scan_indexes(conn: Connection, workspace_id: int, keep=lambda columns: False) -> None:
    for name, columns in scan_indexes(conn, workspace_id).items():
        if not keep(columns):
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def _wide_columns(conn: Connection, workspace_id: int) -> int:
    """How many slots the wide table has columns for (creating the table when missing)."""
    table = wide_table(workspace_id)
    conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table} (user_pk INTEGER PRIMARY KEY)")
    if conn.dialect.name == "postgresql":
        names = [r[0] for r in conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (table,))]
    else:
        names = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
    return sum(1 for n in names if n.startswith("k") and n[1:].isdigit())


def _sql_types(conn: Connection) -> dict[str, str]:
    real = "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "REAL"
    return {"k": "TEXT", "n": real, "t": "TEXT", "d": "BIGINT"}


def sync(conn: Connection, workspace_id: int, want: set[tuple[str, str]], drop_unwanted: bool = True) -> bool:
    """Make the index hold `want`: backfill new paths, drop paths nothing reads. True when it changed."""
    have = maintained(conn, workspace_id)
    new = want - have
    old = have - want if drop_unwanted else set()
    table = wide_table(workspace_id)
    taken = slots(conn, workspace_id)
    for scope, path in old:
        ep_cond = customer_values.c.ep == 0 if scope == "u" else customer_values.c.ep != 0
        conn.execute(delete(customer_values).where(and_(
            customer_values.c.workspace_id == workspace_id, customer_values.c.path == path, ep_cond)))
        conn.execute(delete(indexed_paths).where(
            indexed_paths.c.workspace_id == workspace_id, indexed_paths.c.scope == scope, indexed_paths.c.path == path))
        if scope == "u" and path in taken:
            s = taken.pop(path)
            # before clearing: no index to update, and none holds a reused slot
            drop_scan_indexes(conn, workspace_id, keep=lambda cols, s=s: not {f"{c}{s}" for c in WIDE_COLS} & set(cols))
            conn.exec_driver_sql(f"UPDATE {table} SET " + ", ".join(f"{c}{s} = NULL" for c in WIDE_COLS))
    if new:
        register(conn, workspace_id, new, taken)
        if conn.execute(select(users.c.id).where(users.c.workspace_id == workspace_id)
                        .offset(backfill.SYNC_FILL_ROWS).limit(1)).first() is None:
            backfill.fill_in(conn, workspace_id)  # a small workspace: filled here, current at once
    return bool(new or old)


def register(conn: Connection, workspace_id: int, new: set[tuple[str, str]], taken: dict[str, int]) -> None:
    """Start maintaining these paths: their indexed_path rows (filled_to 0: segments.backfill fills them) and
    the wide slots of the user-level ones. Writes index their own rows from here on."""
    backfill.exclusive(conn, workspace_id)
    table = wide_table(workspace_id)
    new_user = sorted(p for s, p in new if s == "u")
    assigned: dict[str, int] = {}
    if new_user:
        have_cols = _wide_columns(conn, workspace_id)
        free = (s for s in itertools.count() if s not in taken.values())
        assigned = {p: next(free) for p in new_user}
        types = _sql_types(conn)
        for s in range(have_cols, max(assigned.values()) + 1):
            for c in WIDE_COLS:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {c}{s} {types[c]}")
        if conn.dialect.name == "sqlite":  # (read only by SQLite's full evaluation)
            for s in assigned.values():
                rare_index(conn, workspace_id, s)
    bulk_insert(conn, indexed_paths, [{"workspace_id": workspace_id, "scope": s, "path": p,
                                       "slot": assigned.get(p) if s == "u" else None, "filled_to": 0}
                                      for s, p in sorted(new)])
