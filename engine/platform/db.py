"""Database engine creation and migrations (Alembic, applied at start-up); the one way to read
(`reading`) and the one way to write (`writing`)."""
from __future__ import annotations

import logging
import select
import threading
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Iterator

import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, Connection, Engine, Float, Table, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InvalidatePoolError

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # 8 MB of page cache (default 2 MB): a batch write touches thousands of membership and index pages
    # (1,250 customers x ~50 segments), which then stay in memory until commit (+3% batched writes).
    cur.execute("PRAGMA cache_size=-8000")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Writers take the write lock at BEGIN, so read-merge-write upserts cannot lose a concurrent
    # update; readers (see `reading`) begin deferred and never wait for a writer under WAL.
    if conn.get_execution_options().get("readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _json_dumps(value) -> str:
    return msgspec.json.encode(value).decode()


# JSON columns go through msgspec: several times faster than the stdlib on the batch paths.
JSON_CODEC = {"json_serializer": _json_dumps, "json_deserializer": msgspec.json.decode}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **JSON_CODEC)
        # pysqlite's own transaction handling is turned off so BEGIN IMMEDIATE is ours to emit.
        event.listen(engine, "connect", lambda c, r: setattr(c, "isolation_level", None))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_size=10, max_overflow=20, **JSON_CODEC)
    event.listen(engine, "checkout", _drop_if_closed_by_server)
    return engine


def _drop_if_closed_by_server(dbapi_conn, _record, _proxy) -> None:
    """PostgreSQL, at every pool checkout: a connection the server has closed (a restart, a terminated backend)
    is replaced, and so is every connection of the pool older than it, as `pool_pre_ping` would. Without the
    ping's round trip: an idle pooled connection has nothing to read, so a readable socket means the server
    sent its FATAL notice and closed it (or, rarely, sent something else: the connection is replaced all the
    same, which costs a connect). A transactional send checks out four connections; the pings were four of
    its ~19 round trips."""
    pgconn = getattr(dbapi_conn, "pgconn", None)
    if pgconn is None:  # not psycopg: no socket to look at, so ping as pool_pre_ping does
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        except Exception as exc:
            raise InvalidatePoolError(str(exc)) from exc
        finally:
            cursor.close()
        return
    if dbapi_conn.closed or pgconn.status != 0:  # CONNECTION_OK
        raise InvalidatePoolError("the connection is closed")
    poll = select.poll()
    poll.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poll.poll(0):
        raise InvalidatePoolError("the server closed the connection (or sent something while it was idle)")


def reading(db: Engine):
    """A connection for reads only (no write lock on SQLite)."""
    readonly = db.__dict__.get("_tidings_readonly")
    if readonly is None:  # made once per engine: building it costs more than a small read
        readonly = db.__dict__["_tidings_readonly"] = db.execution_options(readonly=True)
    return readonly.connect()


def reading_statements(db: Engine):
    """A connection for reads each of which stands alone: on PostgreSQL in autocommit, which saves the BEGIN
    and the ROLLBACK (two round trips of a request's ~15). Under READ COMMITTED, PostgreSQL's default and
    ours, the statements of a transaction see no common snapshot anyway; so not for SET LOCAL (without_jit),
    locks, or reads that must agree with each other. On SQLite the same as `reading`."""
    if db.dialect.name == "sqlite":
        return reading(db)
    alone = db.__dict__.get("_tidings_autocommit_reads")
    if alone is None:
        alone = db.__dict__["_tidings_autocommit_reads"] = db.execution_options(readonly=True,
                                                                               isolation_level="AUTOCOMMIT")
    return alone.connect()


_write_locks: dict[str, threading.RLock] = {}
_write_locks_made = threading.Lock()


def _write_lock(db: Engine) -> threading.RLock:
    key = str(db.url)  # per database, shared by the engines of one process that open the same file
    lock = _write_locks.get(key)
    if lock is None:
        with _write_locks_made:
            lock = _write_locks.setdefault(key, threading.RLock())
    return lock


@contextmanager
def writing(db: Engine) -> Iterator[Connection]:
    """A write transaction, committed on leaving the block (rolled back on an exception): every write goes
    through here (tidings.engine.platform.write_queue.write groups concurrent ones into one transaction).

    SQLite admits one writer; a second one waits in SQLite's busy handler, which sleeps in steps of up to
    100 ms. Writers of one process therefore queue on a lock (woken the moment it is free) and only writers
    of *other* processes meet the busy handler. The lock is re-entrant, so a write opened inside another on
    the same thread fails as before (SQLite's busy timeout) rather than hanging. PostgreSQL needs no lock."""
    if db.dialect.name != "sqlite":
        with db.begin() as conn:
            yield conn
        return
    with _write_lock(db), db.begin() as conn:
        yield conn


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema up to date (or to `revision`); safe to call at every start-up."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = None
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return
    # SQLite's way of changing a table (batch mode) builds a copy, drops the original and renames the copy;
    # dropping a table other tables refer to (workspace) deletes its rows first, which enforced foreign keys
    # refuse even when deferred. So, as SQLite documents (https://sqlite.org/lang_altertable.html), keys are
    # not enforced during the migrations, and every key is checked before they commit. The pragma only takes
    # effect outside a transaction, hence on the driver's connection before SQLAlchemy begins one.
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migrations left rows whose foreign keys point nowhere: {broken[:10]}")
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def insert_ignoring_conflicts(engine_or_conn, table, index_elements: list[str]):
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    name = engine_or_conn.dialect.name
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return insert(table)


# PostgreSQL: from this many rows COPY (or unnest) beats a VALUES list; below it a VALUES list is one round
# trip where COPY takes two (the COPY statement, then the data), which single writes would feel.
COPY_FROM_ROWS = 50

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _driver_rows(table: Table, columns: list[str], rows: list[dict]) -> list:
    pick = itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))
    json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    if not json_at:
        return [pick(r) for r in rows]
    encode = msgspec.json.encode
    out = []
    for r in rows:
        values = list(pick(r))
        for i in json_at:
            values[i] = encode(values[i]).decode()
        out.append(tuple(values))
    return out


def bulk_insert(conn: Connection, table: Table, rows: list[dict], *, ignore_conflicts_on: list[str] | None = None,
                returning: list[str] | None = None) -> list[tuple]:
    """Insert many rows straight through the driver: the batch paths write 10,000 rows at a time, and
    SQLAlchemy's per-row parameter processing would cost more than the database's own work.

    Rows go as multi-row VALUES statements (one round trip per few thousand rows, within SQLite's
    32,766-parameter limit), which also lets RETURNING hand back generated ids; on PostgreSQL, rows that
    need neither RETURNING nor ON CONFLICT go through COPY, the others as one array per column. JSON columns
    are encoded here.
    """
    if not rows:
        return []
    columns = list(rows[0])
    return insert_tuples(conn, table, columns, _driver_rows(table, columns, rows),
                         ignore_conflicts_on=ignore_conflicts_on, returning=returning)


def insert_tuples(conn: Connection, table: Table, columns: list[str], values: list[tuple], *,
                  ignore_conflicts_on: list[str] | None = None, returning: list[str] | None = None) -> list[tuple]:
    """bulk_insert for rows already in driver form (tuples in `columns` order, JSON columns encoded)."""
    if not values:
        return []
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql" and len(values) >= COPY_FROM_ROWS:
        if not ignore_conflicts_on and not returning:
            copy_tuples(conn, table.name, columns, values)
            return []
        return _insert_unnest(conn, table, columns, values, ignore_conflicts_on, returning)
    mark = _PLACEHOLDER[conn.dialect.paramstyle]
    head = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) VALUES "
    tail = ""
    if ignore_conflicts_on:
        tail += f" ON CONFLICT ({', '.join(map(quote, ignore_conflicts_on))}) DO NOTHING"
    if returning:
        tail += f" RETURNING {', '.join(map(quote, returning))}"
    one = f"({', '.join([mark] * len(columns))})"
    per_statement = max(1, 32_000 // len(columns))
    out: list[tuple] = []
    for start in range(0, len(values), per_statement):
        part = values[start : start + per_statement]
        params = [v for row in part for v in row]
        result = conn.exec_driver_sql(head + ", ".join([one] * len(part)) + tail, tuple(params))
        if returning:
            out.extend(tuple(r) for r in result)
    return out


def copy_tuples(conn: Connection, table_name: str, columns: list[str], values: list[tuple]) -> None:
    """PostgreSQL: the rows through COPY, in the connection's transaction. A multi-row VALUES statement of
    32,000 parameters is parsed and planned for each chunk: 14,000 rows/s for segment memberships on the
    shared box, against 60,000-90,000 rows/s through COPY (which needs no casts: the server reads each value
    as its column's type, JSON text included)."""
    quote = conn.dialect.identifier_preparer.quote
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(
            f"COPY {quote(table_name)} ({', '.join(map(quote, columns))}) FROM STDIN") as copy:
        for row in values:
            copy.write_row(row)


def _array_element_type(conn: Connection, column_type) -> str:
    """The type to cast a column's array to, without a string column's length: an explicit cast to
    `varchar(n)` cuts longer values silently, where the INSERT's own assignment to the column refuses them,
    as the VALUES and COPY paths do."""
    compiled = conn.dialect.type_compiler_instance.process(column_type)
    return "VARCHAR" if compiled.startswith("VARCHAR(") else compiled


def _column_arrays(table: Table, columns: list[str], values: list[tuple]) -> list[list]:
    """PostgreSQL: rows in driver form as one list per column, for `unnest`. psycopg refuses a list that
    mixes int and float (or bool and int): such columns go as one Python type."""
    arrays = [list(column) for column in zip(*values)]
    for i, c in enumerate(columns):
        if isinstance(table.c[c].type, (Float, Boolean)):
            to = float if isinstance(table.c[c].type, Float) else bool
            arrays[i] = [None if v is None else to(v) for v in arrays[i]]
    return arrays


def _insert_unnest(conn: Connection, table: Table, columns: list[str], values: list[tuple],
                   ignore_conflicts_on: list[str] | None, returning: list[str] | None) -> list[tuple]:
    """PostgreSQL, for inserts that need ON CONFLICT or RETURNING (COPY has neither): one array per column,
    unnested in the rows' order (WITH ORDINALITY), so RETURNING answers in the order of `values` as a VALUES
    list would, without parsing and planning thousands of VALUES rows per statement."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(map(quote, columns))
    types = [_array_element_type(conn, table.c[c].type) for c in columns]
    sql = (f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM unnest("
           + ", ".join(f"%s::{t}[]" for t in types) + f") WITH ORDINALITY AS r({names}, row_order) ORDER BY row_order")
    if ignore_conflicts_on:
        sql += f" ON CONFLICT ({', '.join(map(quote, ignore_conflicts_on))}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(map(quote, returning))}"
    out: list[tuple] = []
    for start in range(0, len(values), 50_000):
        arrays = _column_arrays(table, columns, values[start : start + 50_000])
        result = conn.exec_driver_sql(sql, tuple(arrays))
        if returning:
            out.extend(tuple(r) for r in result)
    return out


def bulk_update(conn: Connection, table: Table, rows: list[dict], key: str = "id") -> None:
    """UPDATE table SET ... WHERE key = ? for each row (all rows carry the same columns)."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != key]
    quote = conn.dialect.identifier_preparer.quote
    mark = _PLACEHOLDER[conn.dialect.paramstyle]
    sql = (f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(c)} = {mark}' for c in columns)} "
           f"WHERE {quote(key)} = {mark}")
    conn.exec_driver_sql(sql, _driver_rows(table, columns + [key], rows))


def bulk_update_where_in(conn: Connection, table: Table, rows: list[dict], key: str, column: str,
                         allowed: tuple) -> set:
    """bulk_update of the rows whose stored `column` is one of `allowed` (the others keep what they hold);
    returns the keys of the rows updated. The keys must be distinct.

    PostgreSQL: one statement over one array per column, the condition in its WHERE clause and the keys
    from RETURNING, where bulk_update's executemany is a statement per row and the condition a SELECT of its
    own (a transactional batch records 100 messages at a time). SQLite: the SELECT, then one executemany."""
    if not rows:
        return set()
    if conn.dialect.name != "postgresql":
        keep = {k for k, v in rows_where_in(conn, table, [key, column], key, [r[key] for r in rows]) if v in allowed}
        rows = [r for r in rows if r[key] in keep]
        bulk_update(conn, table, rows, key)
        return {r[key] for r in rows}
    columns = [c for c in rows[0] if c != key]
    names = [*columns, key]
    quote = conn.dialect.identifier_preparer.quote
    types = [_array_element_type(conn, table.c[c].type) for c in names]  # varchar(n) would cut, not refuse
    t = quote(table.name)
    sql = (f"UPDATE {t} SET {', '.join(f'{quote(c)} = v.{quote(c)}' for c in columns)} FROM unnest("
           + ", ".join(f"%s::{ty}[]" for ty in types) + f") AS v({', '.join(map(quote, names))}) "
           f"WHERE {t}.{quote(key)} = v.{quote(key)} AND {t}.{quote(column)} = ANY(%s) RETURNING {t}.{quote(key)}")
    arrays = _column_arrays(table, names, _driver_rows(table, names, rows))
    return {r[0] for r in conn.exec_driver_sql(sql, (*arrays, list(allowed)))}


def bulk_delete(conn: Connection, table: Table, keys: list[str], rows: list[tuple]) -> None:
    """DELETE FROM table WHERE k1 = ? AND k2 = ? ... for each row of key values, one executemany."""
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    mark = _PLACEHOLDER[conn.dialect.paramstyle]
    sql = f"DELETE FROM {quote(table.name)} WHERE " + " AND ".join(f"{quote(k)} = {mark}" for k in keys)
    conn.exec_driver_sql(sql, rows)


def reserve_ids(conn: Connection, table: Table, n: int) -> list[int]:
    """PostgreSQL: n fresh values of `table`'s id sequence, ascending, for rows then written through COPY
    (which cannot hand generated ids back). The sequence's name is looked up once, in a sub-select."""
    return sorted(conn.exec_driver_sql(
        "SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id'))) FROM generate_series(1, %s)",
        (table.name, n)).scalars())


def without_jit(conn: Connection) -> None:
    """On PostgreSQL, no JIT compilation for the rest of the caller's transaction. The segment engine's
    queries are long CASE expressions over a whole workspace: their estimated cost passes `jit_above_cost`,
    and compiling their ~160 expression functions took 0.3-0.4 s of a 1.1 s direct evaluation at 100,000
    customers (EXPLAIN ANALYZE) for nothing won back. A no-op on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


def refresh_statistics(conn: Connection, *tables: Table, columns: dict[str, list[str]] | None = None) -> None:
    """On PostgreSQL, ANALYZE `tables` inside the caller's transaction. A long transaction that fills a table
    (an import) is invisible to autovacuum until it commits, so the planner keeps the statistics of the
    table as it was, often empty, and after a few executions a prepared IN-list read of the rows just
    written flips to a generic plan that scans them (seconds per chunk at 50,000 rows). ANALYZE samples the
    transaction's own rows too. A no-op on SQLite, whose planner needs no statistics for these reads.

    `columns` (table name -> columns) limits the statistics to those columns (the table's size is counted
    all the same): what keyed reads need, without sampling JSON documents (analyzing the endpoints' four
    jsonb columns was 0.4 s per ANALYZE at 50,000 rows)."""
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        for table in tables:
            only = (columns or {}).get(table.name)
            listed = f" ({', '.join(map(quote, only))})" if only else ""
            conn.exec_driver_sql(f"ANALYZE {quote(table.name)}{listed}")


def driver_rows(conn: Connection, sql: str, params: tuple) -> list[tuple]:
    """The rows of one plain SQL read, on the driver's cursor of the connection's transaction: SQLAlchemy's
    result layer (cursor description, row metadata) cost more than these small indexed reads, of which a
    single write makes several. Driver errors come back as SQLAlchemy's (sqlalchemy.exc.DataError ...), as
    from exec_driver_sql. Outside a transaction (a reading connection before its first statement) through
    SQLAlchemy, which begins it."""
    if not conn.in_transaction():
        return [tuple(r) for r in conn.exec_driver_sql(sql, params)]
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def read_together(conn: Connection, reads: list[tuple[str, tuple]]) -> list[list[tuple]]:
    """The rows of several independent plain reads (driver_rows each, in order). On PostgreSQL inside a
    transaction they go as one pipeline: every statement is sent before the first answer is awaited, so
    the reads cost one round trip (and a transaction's implicit BEGIN rides along). JSON columns come back
    as the driver gives them (decoded by psycopg; text on SQLite)."""
    if conn.dialect.name != "postgresql" or len(reads) < 2 or not conn.in_transaction():
        return [driver_rows(conn, sql, params) for sql, params in reads]
    dbapi = conn.dialect.loaded_dbapi
    driver = conn.connection.dbapi_connection
    cursors = []
    try:
        with driver.pipeline():  # type: ignore[union-attr]
            for sql, params in reads:
                cursor = driver.cursor()  # type: ignore[union-attr]
                cursor.execute(sql, params)
                cursors.append(cursor)
        return [list(cursor.fetchall()) for cursor in cursors]
    except dbapi.Error as exc:
        raise DBAPIError.instance(reads[0][0], reads[0][1], exc, dbapi.Error) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def rows_where_in(conn: Connection, table: Table, columns: list[str], key: str, values: list,
                  equals: dict | None = None, chunk: int = 5000) -> list[tuple]:
    """SELECT columns FROM table WHERE <equals> AND key IN (values), in chunks, straight to the driver.
    The batch paths look up 10,000 ids at once; compiling an expanding IN through SQLAlchemy costs more
    than the query. JSON columns come back decoded.

    On PostgreSQL the values go as one array (`key = ANY(%s)`): an IN list of thousands of placeholders was
    split by psycopg and parsed and planned by the server at every call (0.95 s of a 20,000-row import's
    5.7 s went to psycopg splitting such queries alone); the array form is one statement text, planned once."""
    quote = conn.dialect.identifier_preparer.quote
    mark = _PLACEHOLDER[conn.dialect.paramstyle]
    equals = equals or {}
    head = (f"SELECT {', '.join(map(quote, columns))} FROM {quote(table.name)} WHERE "
            + "".join(f"{quote(c)} = {mark} AND " for c in equals) + f"{quote(key)}")
    json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    decode = msgspec.json.decode
    as_array = conn.dialect.name == "postgresql"
    out: list[tuple] = []
    for start in range(0, len(values), chunk if not as_array else 50_000):
        part = values[start : start + (chunk if not as_array else 50_000)]
        if as_array:
            rows = driver_rows(conn, head + f" = ANY({mark})", (*equals.values(), list(part)))
        else:
            rows = driver_rows(conn, head + f" IN ({', '.join([mark] * len(part))})", (*equals.values(), *part))
        for row in rows:
            cells = list(row)
            if json_at:
                for i in json_at:
                    if isinstance(cells[i], (str, bytes)):  # SQLite hands JSON back as text; psycopg decodes it
                        cells[i] = decode(cells[i])
            out.append(tuple(cells))
    return out
