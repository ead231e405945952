"""The customer document rules read, and the typed `customer_value` rows the SQL side reads.

Both are built from the same stored rows by the functions here, so the two evaluators see the same
values: `document()` for datalogic, `value_rows()` for SQL.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Collection, Iterable

from sqlalchemy import Connection, bindparam, delete, func, select

from tidings.engine.platform.batching import chunks
from tidings.engine.platform.clock import iso_to_ms, ms_to_iso
from tidings.engine.platform.db import COPY_FROM_ROWS, bulk_insert, copy_tuples, driver_rows, rows_where_in
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.segments.tables import customer_values, segment_members, static_members
from tidings.engine.customers import history
from tidings.engine.customers.on_write import EndpointRow, HeldEndpoints, HeldUsers, UserRow

_NUMERIC = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
_DIGIT = re.compile(r"[0-9]")
_NONNUM_WORDS = re.compile(r"inf|nan", re.IGNORECASE)
MAX_EXACT = 2 ** 53


def parse_date(value: Any) -> int | None:
    """Epoch ms of a string that is an ISO-8601 date or date-time; None otherwise."""
    if not isinstance(value, str) or not (8 <= len(value) <= 40) or not value[:4].isdigit():
        return None
    try:
        return iso_to_ms(value)
    except (ValueError, OverflowError):
        return None


def classify(value: Any) -> list[tuple[str, str | None, float | None, int | None]]:
    """(kind, txt, num, ts) rows for one value; a list gives a marker row plus one row per item."""
    if isinstance(value, bool):
        return [("b", None, 1.0 if value else 0.0, None)]
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value) or abs(value) > MAX_EXACT:
            return [("x", None, None, None)]
        return [("n", None, float(value), None)]
    if isinstance(value, str):
        ts = parse_date(value)
        if value == "":
            return [("z", value, None, None)]
        if _NUMERIC.fullmatch(value):  # not .match: its $ would let "5\n" through as a number
            num = float(value)
            if math.isfinite(num) and abs(num) < 1e300 and (num == 0 or abs(num) > 1e-300):
                return [("s", value, num, ts)]
            return [("o", value, None, ts)]
        if not _DIGIT.search(value) and value.strip() and not _NONNUM_WORDS.search(value):
            return [("t", value, None, ts)]
        return [("o", value, None, ts)]
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return [("l", None, float(len(value)), None), *(("i", v, None, None) for v in value)]
        return [("x", None, None, None)]
    return [("x", None, None, None)]


def _user_values(u) -> Iterable[tuple[str, Any]]:
    yield "user_id", u.user_id
    if u.timezone is not None:
        yield "timezone", u.timezone
    if u.locale is not None:
        yield "locale", u.locale
    for group in ("attributes", "metrics"):
        for k, v in (getattr(u, group) or {}).items():
            if "." not in k and v is not None:
                yield f"{group}.{k}", v


def _endpoint_values(e) -> Iterable[tuple[str, Any]]:
    yield "endpoint_id", e.endpoint_id
    yield "channel", e.channel
    yield "address", e.address
    yield "opt_out", bool(e.opt_out)
    if e.effective_date is not None:
        yield "effective_date", ms_to_iso(e.effective_date)
    for group in ("attributes", "metrics", "demographic", "location"):
        for k, v in (getattr(e, group) or {}).items():
            if "." not in k and v is not None:
                yield f"{group}.{k}", v


def value_rows(workspace_id: int, user_row, endpoint_rows, user_paths: Collection[str] | None = None,
               ep_paths: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Typed rows of one customer, for the given paths only (None: every path)."""
    rows = []
    sources = [(_user_values(user_row), 0, user_paths)]
    if ep_paths is None or ep_paths:
        sources += [(_endpoint_values(e), e.id, ep_paths) for e in endpoint_rows]
    for source, ep, wanted in sources:
        for path, value in source:
            if wanted is not None and path not in wanted:
                continue
            for kind, txt, num, ts in classify(value):
                rows.append({"workspace_id": workspace_id, "user_pk": user_row.id, "ep": ep, "path": path,
                             "kind": kind, "txt": txt, "num": num, "ts": ts})
    return rows


def load_customers(conn: Connection, user_pks: list[int], held_users: HeldUsers | None = None,
                   held_endpoints: HeldEndpoints | None = None) -> tuple[dict[int, Any], dict[int, list[Any]]]:
    """Users and their endpoints (in id order), straight through the driver: the write path loads
    thousands at a time and SQLAlchemy's per-row processing would dominate. What the write holds
    (`held_users`: all of these users; `held_endpoints`: the endpoints of the users it covers) is not read
    again: on PostgreSQL each read is a round trip."""
    if held_users is not None:
        found: dict[int, Any] = {pk: held_users[pk] for pk in user_pks if pk in held_users}
    else:
        found = {r[0]: UserRow(*r) for r in rows_where_in(conn, users, list(UserRow._fields), "id", user_pks)}
    eps: dict[int, list[Any]] = defaultdict(list)
    unread = user_pks
    if held_endpoints is not None:
        unread = [pk for pk in user_pks if pk not in held_endpoints]
        for pk in user_pks:
            if held_endpoints.get(pk):
                eps[pk] = list(held_endpoints[pk])
    if unread:
        for r in sorted(rows_where_in(conn, endpoints, list(EndpointRow._fields), "user_pk", unread)):
            e = EndpointRow(*r)
            eps[e.user_pk].append(e._replace(opt_out=bool(e.opt_out)))
    return found, eps


# Built once (every write that touches an indexed path runs it): its compiled form is cached.
_VALUES_OF = delete(customer_values).where(customer_values.c.user_pk.in_(bindparam("pks", expanding=True)))


def refresh_values(conn: Connection, workspace_id: int, user_pks: list[int],
                   loaded: tuple[dict[int, Any], dict[int, list[Any]]] | None,
                   user_paths: Collection[str], ep_paths: Collection[str], slots: dict[str, int] | None = None) -> None:
    """Rewrite the typed values of these users for the indexed paths (inside the write's transaction):
    their `customer_value` rows and, when user-level paths have slots, their wide-table rows."""
    found, eps = loaded or load_customers(conn, user_pks)
    for part in chunks(user_pks, 5000):
        conn.execute(_VALUES_OF, {"pks": list(part)})
    rows = [r for pk in user_pks if pk in found
            for r in value_rows(workspace_id, found[pk], eps.get(pk, []), user_paths, ep_paths)]
    bulk_insert(conn, customer_values, rows)
    if slots:
        write_wide(conn, workspace_id, [pk for pk in user_pks if pk in found], rows, slots)


def write_wide(conn: Connection, workspace_id: int, user_pks: list[int], rows: list[dict[str, Any]],
               slots: dict[str, int]) -> None:
    """Replace these users' rows of the wide table (segments/paths.py) from their value rows."""
    from tidings.engine.segments.typed_index import wide_table

    table = wide_table(workspace_id)
    order = sorted(slots.items(), key=lambda kv: kv[1])
    at = {p: 1 + 4 * i for i, (p, _) in enumerate(order)}
    values = {pk: [pk] + [None] * (4 * len(order)) for pk in user_pks}
    for r in rows:
        i = at.get(r["path"])
        if i is None or r["ep"] != 0 or r["kind"] == "i":
            continue
        values[r["user_pk"]][i:i + 4] = (r["kind"], r["num"], r["txt"], r["ts"])
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    for part in chunks(user_pks, 5000):
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE user_pk IN ({', '.join([mark] * len(part))})", tuple(part))
    cols = ["user_pk"] + [f"{c}{s}" for _, s in order for c in ("k", "n", "t", "d")]
    if conn.dialect.name == "postgresql" and len(values) >= COPY_FROM_ROWS:  # see platform/db.py
        copy_tuples(conn, table, cols, [tuple(row) for row in values.values()])
        return
    one = f"({', '.join([mark] * len(cols))})"
    per = max(1, 32_000 // len(cols))
    flat = list(values.values())
    for start in range(0, len(flat), per):
        batch = flat[start:start + per]
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ", ".join([one] * len(batch)),
                             tuple(v for row in batch for v in row))


def _endpoint_doc(e) -> dict[str, Any]:
    return {"endpoint_id": e.endpoint_id, "channel": e.channel, "address": e.address, "opt_out": bool(e.opt_out),
            "effective_date": ms_to_iso(e.effective_date) if e.effective_date is not None else None,
            "attributes": e.attributes or {}, "metrics": e.metrics or {}, "demographic": e.demographic or {},
            "location": e.location or {}}


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def _event_facts(conn: Connection, user_pks: list[int], facts: dict[str, dict], now: int) -> dict[int, dict[str, Any]]:
    """Behaviour facts for these users, one query per fact and chunk."""
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, f in facts.items():
        kind = f["type"]
        if kind not in ("count", "since_last", "last_ts", "since_active"):
            continue
        for part in chunks(user_pks):
            if kind == "count":
                q = select(events.c.user_pk, events.c.name, events.c.attributes).where(
                    events.c.user_pk.in_(part), events.c.name.in_(history.stored_names([f["event"]])))
                if f["within"] is not None:
                    q = q.where(events.c.ts >= now - f["within"])
                for pk in part:
                    out[pk][key] = 0
                for row in history.expand(conn.execute(q), names={f["event"]}):
                    attrs = row.attributes or {}
                    if all(isinstance(attrs.get(k), str) and attrs.get(k) in vs for k, vs in f["where"].items()):
                        out[row.user_pk][key] += 1
                continue
            if kind == "since_active":
                q = select(events.c.user_pk, events.c.ts).where(events.c.user_pk.in_(part))
                q2 = select(endpoints.c.user_pk, endpoints.c.effective_date).where(
                    endpoints.c.user_pk.in_(part), endpoints.c.effective_date.is_not(None))
                latest: dict[int, int] = {}
                for pk, ts in list(conn.execute(q)) + list(conn.execute(q2)):
                    latest[pk] = max(latest.get(pk, ts), ts)
                for pk in part:
                    out[pk][key] = now - latest[pk] if pk in latest else None
                continue
            if f["event"] in history.SEGMENT_EVENTS:  # may be compact rows: the latest row that holds one
                got: dict[int, Any] = {}
                q = select(events.c.user_pk, events.c.name, events.c.attributes, events.c.ts).where(
                    events.c.user_pk.in_(part), events.c.name.in_(history.stored_names([f["event"]])))
                for row in history.expand(conn.execute(q), names={f["event"]}):
                    got[row.user_pk] = max(got.get(row.user_pk, row.ts), row.ts)
            else:
                q = select(events.c.user_pk, func.max(events.c.ts)).where(
                    events.c.user_pk.in_(part), events.c.name == f["event"]).group_by(events.c.user_pk)
                got = dict(conn.execute(q).all())
            for pk in part:
                ts = got.get(pk)
                out[pk][key] = None if ts is None else (ts if kind == "last_ts" else now - ts)
    return out


def memberships(conn: Connection, workspace_id: int, user_pks: list[int],
                chunk: int = 5000) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Each user's dynamic (`segment_member`) and imported (`static_member`) segment ids, sorted: both in one
    statement per chunk of users (a single write's two reads were two round trips on PostgreSQL)."""
    member: dict[int, list[str]] = defaultdict(list)
    imported: dict[int, list[str]] = defaultdict(list)
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    for part in chunks(user_pks, chunk):
        keys = ", ".join([mark] * len(part))
        sql = (f"SELECT user_pk, segment_id, 0 FROM {segment_members.name} WHERE workspace_id = {mark} AND user_pk IN ({keys})"
               f" UNION ALL SELECT user_pk, segment_id, 1 FROM {static_members.name} WHERE workspace_id = {mark}"
               f" AND user_pk IN ({keys})")
        for pk, sid, static in sorted(driver_rows(conn, sql, (workspace_id, *part, workspace_id, *part))):
            (imported if static else member)[pk].append(sid)
    return member, imported


def documents(conn: Connection, workspace_id: int, user_pks: list[int], facts: dict[str, dict], now: int,
              loaded: tuple[dict[int, Any], dict[int, list[Any]]] | None = None) -> dict[int, dict[str, Any]]:
    """The documents rules are evaluated on, for these users (missing users are left out)."""
    found, eps = loaded or load_customers(conn, user_pks)
    member, imported = memberships(conn, workspace_id, user_pks)
    behaviour = _event_facts(conn, user_pks, facts, now) if facts else {}
    docs = {}
    for pk in user_pks:
        u = found.get(pk)
        if u is None:
            continue
        doc = {"user_id": u.user_id, "attributes": u.attributes or {}, "metrics": u.metrics or {},
               "timezone": u.timezone, "locale": u.locale,
               "endpoints": [_endpoint_doc(e) for e in eps.get(pk, [])],
               "segments": member.get(pk, []), "imported": imported.get(pk, []),
               "behaviour": dict(behaviour.get(pk, {}))}
        for key, f in facts.items():
            if f["type"] in ("date", "ago"):
                group, _, name = f["path"].partition(".")
                raw = doc.get(group) if not name else doc[group].get(name)
                ms = parse_date(raw)
                doc["behaviour"][key] = None if ms is None else (ms if f["type"] == "date" else now - ms)
            elif f["type"] == "km":
                dists = [haversine_km(f["lat"], f["lon"], e.location["latitude"], e.location["longitude"])
                         for e in eps.get(pk, []) if "latitude" in (e.location or {}) and "longitude" in (e.location or {})]
                doc["behaviour"][key] = min(dists) if dists else None
        docs[pk] = doc
    return docs
