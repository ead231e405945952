"""Static segments from files: Pinpoint's CSV/JSON import format, or a plain user_id + attributes format.

Two passes over a spooled file, never the whole file in memory:
  1. parse and validate every row (the same checks as the API), writing parsed rows to a staging file;
     any bad row rejects the whole file with a report (row number and reason, first 100);
  2. in ONE transaction: upsert users and endpoints chunk by chunk (memberships of dynamic segments kept
     current per chunk), record who was imported, create the static segment and evaluate it.
JSON comes as newline-delimited objects or as one array; the array form is parsed whole, so it is
limited to MAX_JSON_ARRAY bytes (use NDJSON or CSV beyond that).
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

import msgspec
from msgspec import UNSET
from sqlalchemy import Connection, Engine, select

from tidings.engine.customers import on_write as changes
from tidings.engine.customers.attributes import register_names
from tidings.engine.customers.users import check_user, write_users_mapped
from tidings.engine.customers.endpoints import check_endpoint, write_endpoints
from tidings.engine.platform.errors import BatchRejected, InvalidInput, NotFound, TidingsError
from tidings.engine.platform.db import bulk_insert, refresh_statistics, writing
from tidings.engine.customers.schemas import Demographic, EndpointBatchItem, Location, UserBatchItem
from tidings.engine.customers.tables import endpoints, users
from tidings.engine.segments.tables import import_jobs, static_members
from tidings.engine.segments.service import SegmentIn, check_new_id, create_in
from tidings.engine.customers.limits import MAX_DEPTH, check_depth
from tidings.engine.workspaces.service import WorkspaceRef

MAX_REPORTED = 100
CHUNK = 10_000
MAX_JSON_ARRAY = 100 * 1024 * 1024
ASYNC_ROWS = 5000
_DEMO = {"AppVersion": "app_version", "Locale": "locale", "Make": "make", "Model": "model",
         "Platform": "platform", "PlatformVersion": "platform_version", "Timezone": "timezone"}
_LOC = {"City": "city", "Country": "country", "Latitude": "latitude", "Longitude": "longitude",
        "PostalCode": "postal_code", "Region": "region"}
_progress: dict[str, int] = {}
# What the chunks' reads look rows up by: the statistics refreshed between chunks cover these (and the
# tables' sizes), the documents only once, before the segment is evaluated.
KEY_COLUMNS = {"users": ["id", "workspace_id", "user_id"], "endpoint": ["id", "workspace_id", "endpoint_id", "user_pk"]}


class ImportRejected(InvalidInput):
    code = "import_rejected"


class Staged(msgspec.Struct):
    user: UserBatchItem
    endpoint: EndpointBatchItem | None = None


# ---- reading rows ------------------------------------------------------------------------------

# Pinpoint names each push service as its own channel type; Tidings has one PUSH endpoint channel and the
# workspace's push channel plugin (fcm or apns) picks the service.
PINPOINT_PUSH_TYPES = ("GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "BAIDU", "ADM")

def _json_row(item: Any) -> Any:
    # Lists are how CSV rows travel, as (header, value) pairs: a JSON row must be an object.
    return item if isinstance(item, dict) else InvalidInput("a JSON row is an object")


def _rows(f: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(row number, row) where a row is a dict (JSON) or a list of (header, value) pairs (CSV)."""
    head = f.read(4096)
    f.seek(0)
    first = head.lstrip()[:1]
    if first == b"[":
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_ARRAY:
            raise InvalidInput(f"a JSON array is at most {MAX_JSON_ARRAY // 2**20} MB; send NDJSON or CSV",
                               field="file")
        try:
            items = msgspec.json.decode(f.read())
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"malformed JSON: {exc}", field="file") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
                               field="file") from None
        except RecursionError:
            raise InvalidInput(f"the JSON nests more than {MAX_DEPTH} levels deep", field="file") from None
        if not isinstance(items, list):
            raise InvalidInput("a JSON file is an array of objects, or one object per line", field="file")
        for n, item in enumerate(items, 1):
            yield n, _json_row(item)
    elif first == b"{":
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, _json_row(msgspec.json.decode(line))
                except msgspec.DecodeError as exc:
                    yield n, InvalidInput(f"malformed JSON line: {exc}")
                except RecursionError:
                    yield n, InvalidInput(f"the line nests more than {MAX_DEPTH} levels deep")
                except UnicodeDecodeError as exc:
                    yield n, InvalidInput(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {n}")
    else:
        yield from _csv_rows(f)


def _csv_rows(f: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """CSV records as (row number, [(header, value)]); a record with bytes that are not UTF-8, or a value
    past the csv module's field limit, is a bad row (numbered like the others), never the end of the file."""
    lines = _DecodedLines(f)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidInput(f"row 1 (the header): {exc}", field="file") from None
    if lines.bad_since(0):
        raise InvalidInput(f"row 1 (the header): {lines.bad_since(0)}", field="file")
    if not header:
        raise InvalidInput("the file is empty", field="file")
    n = 1
    while True:
        start = reader.line_num
        n += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # "field larger than field limit (131072)": the reader resumes on the next line
            yield n, InvalidInput(f"a value is longer than {csv.field_size_limit():,} characters"
                                  if "field limit" in str(exc) else f"malformed CSV: {exc}")
            continue
        if problem := lines.bad_since(start):
            yield n, InvalidInput(problem)
        elif values:
            yield n, list(zip(header, values)) if len(values) == len(header) else InvalidInput(
                f"{len(values)} values for {len(header)} columns")


class _DecodedLines:
    """The file's lines as text for csv.reader: each line decoded alone, so a bad byte spoils only the
    record it is in (decoded with replacement there, and reported)."""

    def __init__(self, f: IO[bytes]):
        self.lines = iter(f)
        self.number = 0
        self.bad: deque[tuple[int, str]] = deque()  # (physical line number, what is wrong), in file order

    def __iter__(self) -> "_DecodedLines":
        return self

    def __next__(self) -> str:
        raw = next(self.lines)
        self.number += 1
        if self.number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # the byte-order mark spreadsheet programs write
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.bad.append((self.number, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {self.number}"))
            return raw.decode("utf-8", "replace")

    def bad_since(self, line: int) -> str | None:
        """The first problem on the physical lines after `line` read so far (earlier ones are forgotten)."""
        while self.bad and self.bad[0][0] <= line:
            self.bad.popleft()
        return self.bad[0][1] if self.bad else None


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        elif isinstance(v, list) and key.split(".")[0] in ("Attributes", "User") :
            out += [(key, x) for x in v] if v else []
        else:
            out.append((key, v))
    return out


def _number(value: Any, name: str) -> float | int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}", field=name) from None
    return int(f) if f.is_integer() and "." not in str(value) else f


@dataclass
class _PinpointColumns:
    """One Pinpoint row's columns, grouped by what they describe."""

    endpoint: dict[str, Any] = field(default_factory=dict)  # ChannelType, Address, Id, OptOut, EffectiveDate
    user_id: str | None = None
    user_attributes: dict[str, list[str]] = field(default_factory=dict)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    demographic: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)


def _pinpoint_columns(pairs: list[tuple[str, Any]]) -> _PinpointColumns:
    row = _PinpointColumns()
    for key, value in pairs:
        if value is None or value == "":
            continue
        head, _, rest = key.partition(".")
        if key in ("ChannelType", "Address", "Id", "OptOut", "EffectiveDate"):
            row.endpoint[key] = value
        elif key == "User.UserId":
            row.user_id = str(value)
        elif key.startswith("User.UserAttributes."):
            row.user_attributes.setdefault(key.removeprefix("User.UserAttributes."), []).append(str(value))
        elif head == "Attributes" and rest:
            row.attributes.setdefault(rest, []).append(str(value))
        elif head == "Metrics" and rest:
            row.metrics[rest] = _number(value, key)
        elif head == "Demographic" and rest in _DEMO:
            row.demographic[_DEMO[rest]] = str(value)
        elif head == "Location" and rest in _LOC:
            row.location[_LOC[rest]] = _number(value, key) if rest in ("Latitude", "Longitude") else str(value)
        else:
            raise InvalidInput(f"unknown column {key!r}", field=key)
    return row


def _pinpoint_channel(ep: dict[str, Any]) -> str:
    """Tidings' channel type of a Pinpoint endpoint (its push services are all PUSH)."""
    if "Address" not in ep or "ChannelType" not in ep:
        raise InvalidInput("ChannelType and Address are required", field="Address" if "ChannelType" in ep else "ChannelType")
    if ep["ChannelType"] == "IN_APP":
        raise InvalidInput("IN_APP endpoints are not supported (Tidings has no in-app channel)", field="ChannelType")
    if ep["ChannelType"] not in ("EMAIL", "SMS", "VOICE", "PUSH", "WEBHOOK", "CUSTOM", *PINPOINT_PUSH_TYPES):
        raise InvalidInput(f"unknown ChannelType {ep['ChannelType']!r}", field="ChannelType")
    return "PUSH" if ep["ChannelType"] in PINPOINT_PUSH_TYPES else ep["ChannelType"]


def parse_pinpoint(pairs: list[tuple[str, Any]]) -> Staged:
    row = _pinpoint_columns(pairs)
    ep = row.endpoint
    channel = _pinpoint_channel(ep)
    endpoint_id = str(ep.get("Id") or f"{channel.lower()}:{ep['Address']}")
    opt = str(ep.get("OptOut", "NONE")).upper()
    if opt not in ("ALL", "NONE"):
        raise InvalidInput(f"OptOut is ALL or NONE, got {ep.get('OptOut')!r}", field="OptOut")
    uid = row.user_id or endpoint_id
    try:
        endpoint = EndpointBatchItem(
            endpoint_id=endpoint_id, user_id=uid, channel=channel,  # type: ignore[arg-type]  # Pinpoint ChannelType as exported
            address=str(ep["Address"]),
            attributes=row.attributes, metrics=row.metrics, opt_out=opt == "ALL",
            demographic=Demographic(**row.demographic) if row.demographic else UNSET,
            location=Location(**row.location) if row.location else UNSET,
            effective_date=str(ep["EffectiveDate"]) if ep.get("EffectiveDate") else UNSET)
    except (TypeError, msgspec.ValidationError) as exc:
        raise InvalidInput(str(exc)) from None
    attributes: dict[str, Any] = {k: v if len(v) > 1 else v[0] for k, v in row.user_attributes.items()}
    return Staged(user=UserBatchItem(user_id=uid, attributes=attributes), endpoint=endpoint)


def parse_plain(pairs: list[tuple[str, Any]]) -> Staged:
    attrs: dict[str, Any] = {}
    user_id = None
    for key, value in pairs:
        if key == "user_id":
            user_id = None if value in (None, "") else str(value)
        elif value is not None and value != "":
            if key in attrs:
                prev = attrs[key]
                attrs[key] = (prev if isinstance(prev, list) else [prev]) + [str(value)]
            else:
                attrs[key] = value if isinstance(value, (str, int, float, bool, list)) else str(value)
    if not user_id:
        raise InvalidInput("user_id is required", field="user_id")
    return Staged(user=UserBatchItem(user_id=user_id, attributes=attrs))


def _validate(row: Any, fmt: str) -> Staged:
    if isinstance(row, InvalidInput):
        raise row
    if isinstance(row, dict):
        check_depth(row, "row")
        pairs = _flatten(row) if fmt == "pinpoint" else list(row.items())
    elif isinstance(row, list):
        pairs = row
    else:
        raise InvalidInput("a row is an object")
    staged = parse_pinpoint(pairs) if fmt == "pinpoint" else parse_plain(pairs)
    check_user(0, staged.user)
    if staged.endpoint is not None:
        check_endpoint(0, staged.endpoint)
    return staged


# ---- the two passes ------------------------------------------------------------------------------

def stage(f: IO[bytes], fmt: str, job_id: str | None = None) -> tuple[IO[bytes], int]:
    """Pass 1: validate every row into a staging file; raise ImportRejected listing bad rows."""
    if fmt not in ("pinpoint", "plain"):
        raise InvalidInput("format is pinpoint or plain", field="format")
    staging = tempfile.TemporaryFile()
    errors: list[dict[str, Any]] = []
    n_bad = total = 0
    enc = msgspec.json.Encoder()
    for number, row in _rows(f):
        total += 1
        try:
            staged = _validate(row, fmt)
        except TidingsError as exc:
            n_bad += 1
            if len(errors) < MAX_REPORTED:
                errors.append({"row": number, "field": exc.field, "message": exc.message})
            continue
        staging.write(enc.encode(staged) + b"\n")
        if job_id and total % 10_000 == 0:
            _progress[job_id] = total
    if total == 0:
        raise InvalidInput("the file has no rows", field="file")
    if n_bad:
        raise ImportRejected(f"{n_bad} of {total} rows are invalid; nothing was written", field="file", details=errors)
    staging.seek(0)
    return staging, total


def apply(db: Engine, workspace: WorkspaceRef, staging: IO[bytes], name: str, segment_id: str | None,
          job_id: str | None = None,
          before_commit: Callable[[Connection, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Pass 2, all or nothing: upsert customers in chunks, then create the static segment.
    `before_commit(conn, result)` writes in the same transaction (a job marks itself done there)."""
    dec = msgspec.json.Decoder(Staged)
    done = 0
    with writing(db) as conn:
        # The segment is created after its members are recorded, so the chunks do not evaluate it
        # (creating it evaluates it once); its id is checked now, to fail before any write.
        seg_id = segment_id or uuid.uuid4().hex[:12]
        check_new_id(conn, workspace.id, seg_id)
        batch: list[Staged] = []
        analyzed_at = CHUNK  # statistics refreshed each time the rows written double (see refresh_statistics)

        def flush() -> None:
            people = [s.user for s in batch]
            eps = [s.endpoint for s in batch if s.endpoint is not None]
            register_names(conn, workspace.id, "attribute", {k for u in people for k in u.attributes} |
                           {k for e in eps for k in e.attributes})
            register_names(conn, workspace.id, "metric", {k for e in eps for k in e.metrics})
            owners, created = write_users_mapped(conn, workspace.id, people)
            pks = sorted(set(owners.values()))
            touched: list[int] = []
            if eps:
                try:  # the owners were written just above: write_endpoints need not read them again
                    touched, _ = write_endpoints(conn, workspace.id, eps, known_owners=owners, new_owners=created)
                except BatchRejected as exc:
                    raise ImportRejected(f"rows {done + 1}-{done + len(batch)}: {exc.details[0]['message']}",
                                         field="file", details=exc.details) from None
            # `touched` adds the former owners of endpoints the file gave to another user
            changes.customers_changed(conn, workspace.id, sorted(set(pks) | set(touched)))
            # No read-before-write: over a table the planner knows nothing of, that read was a scan. A user
            # created by this chunk has a row id no earlier chunk can have recorded, so those rows need no
            # conflict check (COPY on PostgreSQL); users that existed before the chunk may be members
            # already (named in an earlier chunk) and go with ON CONFLICT DO NOTHING.
            fresh = set(created)
            bulk_insert(conn, static_members, [{"workspace_id": workspace.id, "segment_id": seg_id, "user_pk": pk}
                                               for pk in pks if pk in fresh])
            bulk_insert(conn, static_members, [{"workspace_id": workspace.id, "segment_id": seg_id, "user_pk": pk}
                                               for pk in pks if pk not in fresh],
                        ignore_conflicts_on=["workspace_id", "segment_id", "user_pk"])

        for line in staging:
            batch.append(dec.decode(line))
            if len(batch) >= CHUNK:
                flush()
                done += len(batch)
                batch = []
                if done >= analyzed_at:
                    refresh_statistics(conn, users, endpoints, static_members, columns=KEY_COLUMNS)
                    analyzed_at *= 2
                if job_id:
                    _progress[job_id] = done
        if batch:
            flush()
            done += len(batch)
        refresh_statistics(conn, users, endpoints, static_members, columns=KEY_COLUMNS)  # creating the segment evaluates it
        create_in(conn, workspace.id, SegmentIn(name=name, id=seg_id), kind="static")
        result = {"segment_id": seg_id, "rows": done}
        if before_commit is not None:
            before_commit(conn, result)
    return result


def run_import(db: Engine, workspace: WorkspaceRef, f: IO[bytes], fmt: str, name: str, segment_id: str | None = None,
               job_id: str | None = None,
               before_commit: Callable[[Connection, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    staging, _ = stage(f, fmt, job_id)
    with staging:
        return apply(db, workspace, staging, name, segment_id, job_id, before_commit)


# ---- jobs (their lifecycle: engine/segments/jobs.py) ---------------------------------------------

def get_job(db: Engine, workspace: WorkspaceRef, job_id: str) -> dict[str, Any]:
    from tidings.engine.platform.db import reading
    from tidings.engine.platform.clock import ms_to_iso

    with reading(db) as conn:
        row = conn.execute(select(import_jobs).where(import_jobs.c.id == job_id,
                                                     import_jobs.c.workspace_id == workspace.id)).first()
    if row is None:
        raise NotFound(f"no import job {job_id!r}", field="id")
    done = _progress.get(job_id, row.rows_done) if row.status == "running" else row.rows_done
    return {"id": row.id, "status": row.status, "segment_id": row.segment_id or None, "rows_done": done,
            "rows_total": row.rows_total, "errors": row.errors, "message": row.message,
            "created_at": ms_to_iso(row.created_at),
            "finished_at": ms_to_iso(row.finished_at) if row.finished_at else None}


def csv_lines(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """Export rows as CSV: user_id, then attribute columns as they are first seen in the stream...
    kept simple: user_id, attributes (JSON), metrics (JSON), endpoints (addresses joined by ';')."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["user_id", "attributes", "metrics", "timezone", "locale", "addresses"])
    for r in items:
        w.writerow([r["user_id"], msgspec.json.encode(r["attributes"]).decode(),
                    msgspec.json.encode(r["metrics"]).decode(), r["timezone"] or "", r["locale"] or "",
                    ";".join(e["address"] for e in r["endpoints"])])
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()
