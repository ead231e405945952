"""`tidings`: the command line. Each sub-command is a small function; argparse wires them."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from tidings.engine.platform import log_format
from tidings.engine.platform.config import Settings


def _db(settings: Settings):
    from tidings.engine.platform.db import make_engine, migrate
    from tidings.engine.wiring import wire

    wire()
    db = make_engine(settings.database_url)
    migrate(db)
    return db


def cmd_keys_create(args, settings: Settings) -> int:
    if args.admin and not args.pinpoint:
        print("error: --admin makes a Pinpoint key pair: give --pinpoint too", file=sys.stderr)
        return 2
    if args.admin == bool(args.workspace):
        print("error: give --workspace NAME, or --admin --pinpoint for a key of every workspace", file=sys.stderr)
        return 2
    if args.pinpoint:
        return _create_pinpoint_key(args, settings)
    from tidings.engine.workspaces.service import create_key

    workspace, key = create_key(_db(settings), args.workspace, label=args.label)
    print(f"created a key for workspace {workspace.name!r}; it is shown once, keep it:")
    print(key)
    return 0


def _create_pinpoint_key(args, settings: Settings) -> int:
    """A SigV4 key pair for the Pinpoint-compatible API; the secret is sealed like channel secrets."""
    from tidings.engine.channels.secrets import KEY_SOURCES, keyring
    from tidings.engine.workspaces.access_keys import create_access_key

    ring = keyring()
    if ring is None:
        print(f"error: a Pinpoint key's secret is stored sealed, and this deployment has no encryption key "
              f"({KEY_SOURCES}); make one with `tidings secrets new-key`", file=sys.stderr)
        return 2
    workspace, key_id, secret = create_access_key(_db(settings), None if args.admin else args.workspace, ring.seal,
                                           label=args.label)
    reach = f"workspace {workspace.name!r} (its ApplicationId is {workspace.name!r})" if workspace else "every workspace (admin)"
    print(f"created a Pinpoint key pair for {reach}; the secret is shown once, keep it:")
    print(f"AWS_ACCESS_KEY_ID={key_id}")
    print(f"AWS_SECRET_ACCESS_KEY={secret}")
    return 0


def cmd_keys_list(args, settings: Settings) -> int:
    from tidings.engine.platform.clock import ms_to_iso
    from tidings.engine.workspaces.access_keys import list_access_keys
    from tidings.engine.workspaces.service import list_keys

    db = _db(settings)
    rows = [(r, r["prefix"] + "…", "bearer") for r in list_keys(db, args.workspace)]
    rows += [(r, r["prefix"], "pinpoint") for r in list_access_keys(db, args.workspace)]
    print(f"{'WORKSPACE':20} {'KEY':22} {'KIND':8} {'CREATED':26} {'STATUS':8} LABEL")
    for r, shown, kind in rows:
        status = "revoked" if r["revoked_at"] else "live"
        print(f"{r['name']:20} {shown:22} {kind:8} {ms_to_iso(r['created_at']):26} {status:8} {r['label']}")
    return 0


def cmd_keys_revoke(args, settings: Settings) -> int:
    from tidings.engine.workspaces.access_keys import revoke_access_keys
    from tidings.engine.workspaces.service import revoke_key

    db = _db(settings)
    key = args.key.rstrip("…")
    n = revoke_access_keys(db, key) or revoke_key(db, key)
    print(f"revoked {n} key(s)")
    return 0


def cmd_secrets_new_key(args, settings: Settings) -> int:
    from tidings.engine.channels.secrets import new_key

    print(new_key())
    return 0


def cmd_secrets_rotate(args, settings: Settings) -> int:
    """Seal every stored channel secret with the first configured key (plain ones included)."""
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.analytics.streams import reseal_streams
    from tidings.engine.channels.secrets import EncryptionKeyError, keyring, reseal_all

    try:
        ring = keyring()
        report = reseal_all(_db(settings), load_plugins(), rotate=True, also=[reseal_streams])
    except EncryptionKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key {ring.fingerprints[0]} ({ring.source}): {report.resealed} re-sealed from an older key, "
          f"{report.sealed_plain} sealed from plain text, {report.unchanged} already current")
    for name in report.unknown_plugin:
        print(f"warning: {name}: its plugin is not loaded, so its plain settings were left as they are",
              file=sys.stderr)
    for problem in report.unreadable:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.unreadable else 0


def cmd_api(args, settings: Settings) -> int:
    import uvicorn

    from tidings.api.app import create_app
    from tidings.api.server import DrainingServer

    # SIGTERM: stop accepting, let requests in flight finish (up to the shutdown timeout), then the lifespan
    # waits for import jobs (engine/segments/jobs.py) and stops the stream loop; then exit 0.
    # JSON logs: uvicorn's own loggers propagate to the root's JSON handler (no config of theirs), and each
    # request is logged once, with its request id, by api/guard.py instead of uvicorn's access line.
    as_json = log_format.wants_json(os.environ)
    logs: dict[str, Any] = {"log_config": None, "access_log": False} if as_json else {}
    graceful = max(1, round(settings.shutdown_timeout))
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _api_processes(args, settings, graceful, logs)
    config = uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                            timeout_graceful_shutdown=graceful, **logs)
    DrainingServer(config).run()
    return 0


def _api_processes(args, settings: Settings, graceful: int, logs: dict[str, Any]) -> int:
    """`tidings api --workers N`: uvicorn binds the port once and N processes accept on it (one core each;
    uvicorn's supervisor restarts one that dies, and forwards SIGTERM, each child draining as one process
    does). Each child builds its app from the environment (tidings.api.app.app_of_environment); the schema
    is brought to the head here first, so N children do not race to migrate."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from tidings.engine.platform.db import make_engine, migrate

    db = make_engine(settings.database_url)
    try:
        migrate(db)
    finally:
        db.dispose()
    config = uvicorn.Config("tidings.api.app:app_of_environment", factory=True, host=args.host, port=args.port,
                            workers=args.workers, timeout_graceful_shutdown=graceful, **logs)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def cmd_migrate(args, settings: Settings) -> int:
    """Bring the schema to the migrations' head (what every start does), or with --check only say whether it
    is there: exit 1 when not (docs/production.md, upgrades)."""
    from tidings.engine.platform.db import make_engine, migrate
    from tidings.engine.platform.readiness import store_problems

    db = make_engine(settings.database_url)
    try:
        if not args.check:
            migrate(db)
        state = store_problems(db)
    finally:
        db.dispose()
    problem = next((v for v in state.values() if v != "ok"), None)
    print(f"error: {problem}" if problem else "the schema is at the migrations' head",
          file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0


def cmd_worker(args, settings: Settings) -> int:
    if args.processes < 1:
        print("error: --processes must be at least 1", file=sys.stderr)
        return 2
    if args.processes > 1:  # a supervisor of N one-process workers (engine/ops/supervisor.py)
        from tidings.engine.ops.supervisor import supervise

        return supervise(args.processes, settings.shutdown_timeout)
    from tidings.engine.platform.temporal import connect
    from tidings.engine.ops.worker import run_worker, stop_on_signals

    if settings.worker_metrics_port:  # Prometheus scrapes the worker here (docs/production.md)
        from tidings.engine.platform.metrics_registry import serve

        serve(settings.worker_metrics_port, settings.worker_metrics_host)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        db = _db(settings)
        try:
            await run_worker(await connect(settings), db, settings, stop,
                             ready=lambda: print(f"worker ready on task queues {settings.task_queue} and "
                                                 f"{settings.send_queue} (at most {settings.worker_max_cohorts} "
                                                 f"sends at once)", flush=True))
        finally:
            db.dispose()

    asyncio.run(main())
    return 0


def cmd_dev(args, settings: Settings) -> int:
    from tidings.engine.ops.devstack import Ports, run_dev

    ports = Ports(api=args.port, temporal=args.temporal_port, ui=args.ui_port, smtp=args.smtp_port)
    try:
        asyncio.run(run_dev(settings, ports, args.host, args.worker_process))
    except KeyboardInterrupt:  # before the stack installed its handlers
        pass
    print("stopped.")
    return 0


def cmd_demo(args, settings: Settings) -> int:
    from tidings.engine.ops.demo import run_demo

    return asyncio.run(run_demo(settings))


def cmd_validate(args, settings: Settings) -> int:
    """Compile every journey under the path against the segments and templates declared beside them."""
    from tidings.engine.journeys import JourneyCompileError, StaticCatalog, compile_path, load_resources
    from tidings.engine.customers.schemas import ChannelType
    from typing import get_args

    try:
        catalog = StaticCatalog.from_resources(load_resources(args.path), channels=get_args(ChannelType))
        journeys = compile_path(args.path, catalog)
    except JourneyCompileError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    for ir in journeys:
        print(f"ok  {ir.id}  ({len(ir.nodes)} steps, entry: {type(ir.entry).__name__.removesuffix('Entry').lower()})")
    return 0


def cmd_pinpoint_convert(args, settings: Settings) -> int:
    """Pinpoint journey, segment and template JSON (a file or a folder) -> YAML resources in --out; non-zero when
    any is refused."""
    from pathlib import Path

    from tidings.engine.journeys.pinpoint.convert import convert, convert_fetched
    from tidings.engine.journeys.pinpoint.fetch import FetchFailed, fetch_project

    if (args.source is None) == (args.application_id is None):
        print("error: give a SOURCE file or folder, or --application-id to read a project live", file=sys.stderr)
        return 2
    if args.application_id is not None:
        try:
            fetched = fetch_project(args.application_id, args.endpoint_url)
        except FetchFailed as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        outcomes = convert_fetched(fetched, Path(args.out))
    else:
        source = Path(args.source)
        if not source.exists():
            print(f"error: {source} does not exist", file=sys.stderr)
            return 2
        outcomes = convert(source, Path(args.out))
    for o in outcomes:
        if o.written:
            print(f"ok       {o.source} -> {o.written}  ({o.kind} {o.journey})")
        else:
            print(f"refused  {o.source}" + (f": {o.kind} {o.journey}" if o.journey else "") + f": {o.error}",
                  file=sys.stderr)
    failed = sum(1 for o in outcomes if o.error)
    print(f"{len(outcomes) - failed} converted, {failed} refused")
    return 1 if failed else 0


def cmd_segments_ls(args, settings: Settings) -> int:
    from tidings.engine.segments.service import list_segments
    from tidings.engine.workspaces.service import ensure_workspace

    db = _db(settings)
    rows = list_segments(db, ensure_workspace(db, args.workspace))
    print(f"{'ID':24} {'KIND':8} {'SIZE':>9} {'VER':>4} NAME")
    for s in rows:
        print(f"{s.id:24} {s.kind:8} {s.size:>9} {s.version:>4} {s.name}")
    return 0


def cmd_segments_show(args, settings: Settings) -> int:
    import json

    import msgspec

    from tidings.engine.segments.service import get_segment, list_versions
    from tidings.engine.workspaces.service import ensure_workspace

    db = _db(settings)
    workspace = ensure_workspace(db, args.workspace)
    out = msgspec.to_builtins(get_segment(db, workspace, args.id))
    out["versions"] = [v.version for v in list_versions(db, workspace, args.id)]
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _progress_bar(total: int, stop, job_id: str) -> None:
    from tidings.engine.segments import imports

    phase, last = 0, -1
    while not stop.wait(0.2):
        done = imports._progress.get(job_id, 0)
        if done < last:
            phase = 1
        last = done
        frac = min(1.0, (phase * total + done) / max(1, 2 * total))
        bar = "#" * int(frac * 30)
        label = "validating" if phase == 0 else "writing"
        print(f"\r[{bar:30}] {frac:6.1%} {label} {done:,}/{total:,} rows", end="", file=sys.stderr, flush=True)


def cmd_segments_import(args, settings: Settings) -> int:
    import threading
    import uuid

    from tidings.engine.segments import imports
    from tidings.engine.workspaces.service import ensure_workspace

    from tidings.engine.platform.collector import tune_collector

    db = _db(settings)
    workspace = ensure_workspace(db, args.workspace)
    # as in the API and the worker, which run the same import for uploads and jobs: the collector's young
    # passes every 700 allocations made msgspec's decoding of the staged rows 3x slower (1.9 s vs 0.6 s per
    # 50,000 rows, most of it walking the chunk of rows in flight)
    tune_collector()
    with open(args.file, "rb") as f:
        total = max(0, sum(1 for _ in f) - (0 if args.file.endswith((".json", ".ndjson", ".jsonl")) else 1))
    job_id, stop = uuid.uuid4().hex, threading.Event()
    bar = threading.Thread(target=_progress_bar, args=(total, stop, job_id), daemon=True)
    bar.start()
    try:
        with open(args.file, "rb") as f:
            result = imports.run_import(db, workspace, f, args.format, args.name or args.file, args.id, job_id)
    except imports.ImportRejected as exc:
        stop.set()
        print(f"\nrejected: {exc.message}", file=sys.stderr)
        for d in exc.details:
            print(f"  row {d.get('row', '?')}: {d.get('field') or ''} {d['message']}", file=sys.stderr)
        return 2
    finally:
        stop.set()
        bar.join()
    print(f"\nimported {result['rows']:,} rows into segment {result['segment_id']}")
    return 0


def cmd_segments_export(args, settings: Settings) -> int:
    import msgspec

    from tidings.engine.segments.imports import csv_lines
    from tidings.engine.segments.service import export_rows
    from tidings.engine.workspaces.service import ensure_workspace

    db = _db(settings)
    rows = export_rows(db, ensure_workspace(db, args.workspace), args.id)
    out = sys.stdout.buffer
    for chunk in (csv_lines(rows) if args.format == "csv" else (msgspec.json.encode(r) + b"\n" for r in rows)):
        out.write(chunk)
    out.flush()
    return 0


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def format_journey_stats(m: dict) -> str:
    """The journey's metrics as a terminal table: one row per step, then variants, channels and totals."""
    cols = ["sent", "delivered", "failed", "bounced", "opened", "clicked", "unsubscribed", "converted"]
    short = {"unsubscribed": "UNSUBS"}
    head = f"{'':16}" + "".join(f"{short.get(c, c.upper()):>11}" for c in cols) + f"{'OPEN%':>7}{'CLICK%':>7}{'CONV%':>7}"
    within = m["goal"]["within_seconds"] if m["goal"] else 0
    window = f"{within // 86400}d" if within % 86400 == 0 else f"{within // 3600}h" if within % 3600 == 0 else f"{within}s"
    lines = [f"journey {m['journey_id']}" + (f" v{m['version']}" if m["version"] is not None else "")
             + (f"  goal {m['goal']['event']} within {window}" if m["goal"] else ""),
             "counts are customers (messages in brackets when they differ)", head]

    def row(label: str, metrics: dict, rates: dict) -> str:
        cells = []
        for c in cols:
            v = metrics[c]
            cell = str(v["customers"]) + (f" ({v['messages']})" if c != "converted" and v["messages"] != v["customers"] else "")
            cells.append(f"{cell:>11}")
        return (f"{label[:16]:16}" + "".join(cells) + f"{_pct(rates['open']):>7}{_pct(rates['click']):>7}"
                f"{_pct(rates['conversion']):>7}")

    for title, key, items in (("step", "step_id", m["steps"]), ("variant", "variant", m["variants"]),
                              ("channel", "channel", m["channels"])):
        if len(items) > 1 or title == "step":
            for it in items:
                lines.append(row(f"{title} {it[key] if it[key] is not None else '-'}", it["metrics"], it["rates"]))
    lines.append(row("total", m["totals"]["metrics"], m["totals"]["rates"]))
    c = m["control"]
    if c["customers"]:
        lift = "–" if m["lift"] is None else f"{m['lift'] * 100:+.1f}%"
        lines.append(f"control group: {c['customers']} customers, {c['converted']} converted ({_pct(c['rate'])}); "
                     f"treatment {_pct(m['treatment_rate'])}; lift {lift}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def format_progress(p, width: int = 30) -> str:
    """One line: a bar of the customers done (sent to, or their run ended), then sent, pending, rate and ETA."""
    frac = p.done_customers / p.total if p.total else (1.0 if p.done else 0.0)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    eta = "done" if p.done else f"ETA {_duration(p.eta_seconds)}" if p.eta_seconds is not None else "ETA –"
    extra = "".join(f"  {n} {v:,}" for n, v in (("failed", p.failed), ("retrying", p.retrying)) if v)
    return (f"{p.journey_id} v{p.version} [{bar}] {frac:6.1%}  sent {p.sent:,}  pending {p.pending:,} "
            f"of {p.total:,}{extra}  {p.per_second:,.1f}/s  {eta}")


def _show_progress(db, workspace, args) -> int:
    import time

    import msgspec

    from tidings.engine.journeys.counts import progress

    tty = sys.stdout.isatty() and not args.json
    try:
        while True:
            p = progress(db, workspace, args.journey_id, args.version)
            if args.json:
                print(msgspec.json.encode(p).decode(), flush=True)
            else:
                print(("\r\x1b[2K" if tty else "") + format_progress(p), end="" if tty else "\n", flush=True)
            if args.watch is None or (p.done and p.broadcast):
                break
            time.sleep(args.watch)
    except KeyboardInterrupt:
        pass
    if tty:
        print()
    return 0


def cmd_journeys_stats(args, settings: Settings) -> int:
    from tidings.engine.platform.clock import duration_seconds, iso_to_ms
    from tidings.engine.analytics.metrics import journey_metrics
    from tidings.engine.workspaces.service import find_workspace

    db = _db(settings)
    workspace = find_workspace(db, args.workspace)
    if args.progress or args.watch is not None:
        if args.watch is not None and args.watch <= 0:
            print("error: --watch takes a positive number of seconds", file=sys.stderr)
            return 2
        return _show_progress(db, workspace, args)
    within = duration_seconds(args.within) if args.within else None
    m = journey_metrics(db, workspace, args.journey_id, version=args.version,
                        goal=args.goal, within_seconds=within,
                        since_ms=iso_to_ms(args.since) if args.since else None,
                        until_ms=iso_to_ms(args.until) if args.until else None)
    if args.json:
        import json

        print(json.dumps(m, indent=2))
    else:
        print(format_journey_stats(m))
    return 0


def cmd_apply(args, settings: Settings) -> int:
    from tidings.engine.journeys.apply import apply
    from tidings.engine.journeys import JourneyCompileError
    from tidings.engine.workspaces.service import ensure_workspace

    db = _db(settings)
    try:
        changes = apply(db, ensure_workspace(db, args.workspace), args.path)
    except JourneyCompileError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.errors)} error(s); nothing was applied", file=sys.stderr)
        return 1
    marks = {"created": "+", "unchanged": "="}
    for c in changes:
        print(f"{marks.get(c.outcome, '~')} {c.kind.lower():8} {c.id}  {c.outcome}")
        for line in c.diff:
            print(f"    {line}")
    if args.activate:
        from tidings.engine.journeys import store
        from tidings.engine.platform.temporal import connect

        async def activate_all() -> None:
            client = await connect(settings)
            for c in changes:
                if c.kind == "Journey":
                    info = await store.activate(client, db, ensure_workspace(db, args.workspace), c.id,
                                                **settings.journey_queues())
                    print(f"  journey {c.id} active on v{info.active_version}")

        asyncio.run(activate_all())
    db.dispose()
    return 0


def cmd_plugins(args, settings: Settings) -> int:
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.channels.plugin_manager import describe_plugins

    manager = load_plugins()
    print(f"{'PLUGIN':16} {'SOURCE':28} {'CHANNELS':40} {'EVENT SINKS':16} MODULE")
    for p in describe_plugins(manager):
        channels = ", ".join(f"{c} ({_channel_kind(manager.channels[c])})" for c in p["channels"]) or "-"
        sinks = ", ".join(p["event_sinks"]) or "-"  # the `sink.kind` values event streams accept
        print(f"{p['name']:16} {p['source']:28} {channels:40} {sinks:16} {p['module']}")
    return 0


def _channel_kind(channel) -> str:
    kind = "any type" if getattr(channel, "serves_any_type", False) else channel.channel_type.value
    rate = getattr(channel, "default_rate_limit", None)
    return f"{kind}, {rate:g}/s" if rate else kind


def cmd_send(args, settings: Settings) -> int:
    import json

    import msgspec

    from tidings.engine.channels.config import load_plugins
    from tidings.engine.platform.errors import InvalidInput
    from tidings.engine.messaging.transactional import MessageRequest, send
    from tidings.engine.workspaces.service import find_workspace

    db = _db(settings)
    workspace = find_workspace(db, args.workspace)
    inline = {k: getattr(args, k) for k in ("subject", "text", "html", "body", "title") if getattr(args, k)}
    try:
        data = json.loads(args.data) if args.data else {}
    except ValueError as exc:
        raise InvalidInput(f"--data is not JSON: {exc}", field="data") from None
    body = {"channel": args.channel, "data": data, "recipients": [{"address": a} for a in args.to],
            **({"template_id": args.template} if args.template else {}), **({"content": inline} if inline else {})}
    try:
        request = msgspec.convert(body, MessageRequest)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), field="channel") from None
    [answer] = asyncio.run(send(db, load_plugins(), workspace, [request], None, batch=False))
    failed = 0
    for r in answer.results:
        failed += r.status != "sent"
        print(f"{r.recipient.get('address', '')}: {r.status} {r.message_id or ''}{('  ' + r.error) if r.error else ''}")
    return 1 if failed else 0


def cmd_templates_ls(args, settings: Settings) -> int:
    from tidings.engine.messaging.template_store import list_templates
    from tidings.engine.workspaces.service import find_workspace

    rows = list_templates(_db(settings), find_workspace(_db(settings), args.workspace))
    print(f"{'TEMPLATE':30} {'CHANNEL':8} {'VERSION':>7}  UPDATED")
    for t in rows:
        print(f"{t.id:30} {t.channel:8} {t.version:>7}  {t.updated_at}")
    return 0


def cmd_retention_set(args, settings: Settings) -> int:
    from tidings.engine.ops.retention import set_retention

    days = {k: getattr(args, k) for k in ("events_days", "message_events_days", "journey_runs_days")
            if getattr(args, k) is not None}
    r = set_retention(_db(settings), args.workspace, **days)
    print(f"{args.workspace}: events {r.events_days} days, message events {r.message_events_days} days, "
          f"finished journey runs {r.journey_runs_days} days")
    return 0


def cmd_retention_show(args, settings: Settings) -> int:
    from tidings.engine.ops.retention import get_retention, workspace_id_of

    db = _db(settings)
    with db.connect() as conn:
        r = get_retention(conn, workspace_id_of(conn, args.workspace))
    print(f"{args.workspace}: events {r.events_days} days, message events {r.message_events_days} days, "
          f"finished journey runs {r.journey_runs_days} days")
    return 0


def cmd_prune(args, settings: Settings) -> int:
    from tidings.engine.ops.retention import prune

    rows = prune(_db(settings), dry_run=args.dry_run, batch_size=args.batch_size)
    print(f"{'WORKSPACE':20} {'TABLE':14} {'WOULD GO' if args.dry_run else 'DELETED'}")
    for r in rows:
        print(f"{r.workspace:20} {r.table:14} {r.rows}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidings", description="Tidings customer-engagement engine")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="workspace API keys").add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create a key (and the workspace if needed)")
    k.add_argument("--workspace")
    k.add_argument("--label", default="")
    k.add_argument("--admin", action="store_true",
                   help="with --pinpoint: a key pair of every workspace, which may create them (CreateApp)")
    k.add_argument("--pinpoint", action="store_true",
                   help="an AWS SigV4 key pair for the Pinpoint-compatible API (docs/pinpoint.md)")
    k.set_defaults(fn=cmd_keys_create)
    k = keys.add_parser("list", help="list keys (prefixes only)")
    k.add_argument("--workspace")
    k.set_defaults(fn=cmd_keys_list)
    k = keys.add_parser("revoke", help="revoke a key by the prefix `keys list` shows, the whole key, or a Pinpoint key id")
    k.add_argument("key")
    k.set_defaults(fn=cmd_keys_revoke)

    secrets = sub.add_parser("secrets", help="encryption keys of stored channel secrets").add_subparsers(
        dest="secrets_command", required=True)
    secrets.add_parser("new-key", help="print a new key (for TIDINGS_ENCRYPTION_KEYS or a key file)").set_defaults(
        fn=cmd_secrets_new_key)
    secrets.add_parser("rotate", help="re-seal every stored channel secret with the first configured key"
                       ).set_defaults(fn=cmd_secrets_rotate)

    a = sub.add_parser("api", help="run the HTTP API")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.add_argument("--workers", type=int, default=1,
                   help="run N API processes accepting on the one port (one per core; PostgreSQL: SQLite "
                        "admits one writer at a time)")
    a.set_defaults(fn=cmd_api)

    w = sub.add_parser("worker", help="run the Temporal worker")
    w.add_argument("--processes", type=int, default=1,
                   help="run N worker processes under a supervisor that restarts one that dies and forwards "
                        "SIGTERM (sends spread over them through Temporal's task queues)")
    w.set_defaults(fn=cmd_worker)
    m = sub.add_parser("migrate", help="bring the database schema to the migrations' head (every start does)")
    m.add_argument("--check", action="store_true", help="change nothing; exit 1 unless the schema is at the head")
    m.set_defaults(fn=cmd_migrate)

    d = sub.add_parser("dev", help="run everything locally: Temporal dev server + UI, API, worker, SMTP sink")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8000, help="API port")
    d.add_argument("--temporal-port", type=int, default=7233)
    d.add_argument("--ui-port", type=int, default=8233)
    d.add_argument("--smtp-port", type=int, default=1025)
    d.add_argument("--worker-process", action="store_true",
                   help="run the worker as its own process (uses a second core; as `tidings worker` in production)")
    d.set_defaults(fn=cmd_dev)

    v = sub.add_parser("validate", help="compile journeys (YAML) and print every error as file:line:column")
    v.add_argument("path", nargs="?", default="journeys")
    v.set_defaults(fn=cmd_validate)

    a = sub.add_parser("apply", help="create or update the templates, segments and journeys of a folder (idempotent)")
    a.add_argument("path", nargs="?", default="journeys")
    a.add_argument("--workspace", default=os.environ.get("TIDINGS_WORKSPACE", "dev"))
    a.add_argument("--activate", action="store_true", help="also activate the journeys (needs Temporal)")
    a.set_defaults(fn=cmd_apply)

    pp = sub.add_parser("pinpoint", help="migrating from Amazon Pinpoint").add_subparsers(
        dest="pinpoint_command", required=True)
    c = pp.add_parser("convert", help="write Pinpoint JSON (GetJourney / ListJourneys, GetSegment(s), Get*Template "
                                      "output; a file or a folder) as Tidings YAML resources")
    c.add_argument("source", nargs="?", help="a .json file or a folder of them")
    c.add_argument("--application-id", help="instead of SOURCE: read this project's journeys, segments and "
                                            "templates live (credentials and region as the AWS CLI finds them)")
    c.add_argument("--endpoint-url", help="with --application-id: a Pinpoint-compatible endpoint instead of AWS's "
                                          "(e.g. http://tidings.example:8000/pinpoint)")
    c.add_argument("--out", required=True, help="the folder to write <journey id>.yaml, segments/<id>.yaml and "
                                             "templates/<name>.yaml into (e.g. journeys/)")
    c.set_defaults(fn=cmd_pinpoint_convert)

    segs = sub.add_parser("segments", help="segments").add_subparsers(dest="segments_command", required=True)
    for name, fn, helptext in (("ls", cmd_segments_ls, "list segments with sizes"),
                               ("show", cmd_segments_show, "show one segment"),
                               ("import", cmd_segments_import, "import a CSV/JSON file as a static segment"),
                               ("export", cmd_segments_export, "write a segment's members to stdout")):
        c = segs.add_parser(name, help=helptext)
        c.add_argument("--workspace", default=os.environ.get("TIDINGS_WORKSPACE", "dev"),
                       help="workspace name (default: $TIDINGS_WORKSPACE or dev, the one `tidings dev` uses)")
        c.set_defaults(fn=fn)
        if name in ("show", "export"):
            c.add_argument("id")
        if name == "export":
            c.add_argument("--format", choices=["csv", "ndjson"], default="ndjson")
        if name == "import":
            c.add_argument("file")
            c.add_argument("--name")
            c.add_argument("--id")
            c.add_argument("--format", choices=["pinpoint", "plain"], default="pinpoint")

    journeys = sub.add_parser("journeys", help="journeys").add_subparsers(dest="journeys_command", required=True)
    j = journeys.add_parser("stats", help="delivery and response metrics of a journey, as a table")
    j.add_argument("journey_id", metavar="ID")
    j.add_argument("--workspace", required=True)
    j.add_argument("--version", type=int)
    j.add_argument("--goal", help="conversion event name (default: the journey's goal)")
    j.add_argument("--within", help="attribution window: seconds or 90m, 12h, 7d (default: 7d)")
    j.add_argument("--since", help="ISO-8601")
    j.add_argument("--until", help="ISO-8601")
    j.add_argument("--json", action="store_true", help="print the metrics as JSON (with --progress: a JSON line "
                   "per reading)")
    j.add_argument("--progress", action="store_true",
                   help="how far the journey's run has got: sent, pending, messages per second, ETA, a progress bar")
    j.add_argument("--watch", type=float, nargs="?", const=1.0, metavar="SECONDS",
                   help="--progress again every SECONDS (default 1) until a broadcast is done (or Ctrl-C)")
    j.set_defaults(fn=cmd_journeys_stats)

    sub.add_parser("plugins", help="list loaded plugins, their channels and where they come from").set_defaults(
        fn=cmd_plugins)

    s = sub.add_parser("send", help="send a transactional message now (through the configured database)")
    s.add_argument("--workspace", default="dev")
    s.add_argument("--channel", default="EMAIL", help="EMAIL, SMS, VOICE, PUSH, WEBHOOK or CUSTOM")
    s.add_argument("--to", action="append", required=True, help="an address; repeat for several")
    s.add_argument("--template", help="a stored template id (or give inline parts)")
    s.add_argument("--data", help="template data as JSON")
    for part in ("subject", "text", "html", "body", "title"):
        s.add_argument(f"--{part}", help=f"inline {part} (a template itself)")
    s.set_defaults(fn=cmd_send)

    t = sub.add_parser("templates", help="message templates").add_subparsers(dest="templates_command", required=True)
    ls = t.add_parser("ls", help="list a workspace's templates")
    ls.add_argument("--workspace", default="dev")
    ls.set_defaults(fn=cmd_templates_ls)

    ret = sub.add_parser("retention", help="how long a workspace keeps events and finished journey runs"
                         ).add_subparsers(dest="retention_command", required=True)
    r = ret.add_parser("set", help="set retention periods in days (unset ones keep the default, 400)")
    r.add_argument("--workspace", required=True)
    for name in ("events-days", "message-events-days", "journey-runs-days"):
        r.add_argument(f"--{name}", type=int)
    r.set_defaults(fn=cmd_retention_set)
    r = ret.add_parser("show", help="print a workspace's retention periods")
    r.add_argument("--workspace", required=True)
    r.set_defaults(fn=cmd_retention_show)
    pr = sub.add_parser("prune", help="delete what is past retention and no longer read (docs/production.md)")
    pr.add_argument("--dry-run", action="store_true", help="print per workspace and table what would go")
    pr.add_argument("--batch-size", type=int, default=1000, help="rows per delete transaction")
    pr.set_defaults(fn=cmd_prune)

    sub.add_parser("demo", help="start the embedded stack, seed sample data, show the result").set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    log_format.configure(os.environ)  # TIDINGS_LOG_FORMAT (text, json) and TIDINGS_LOG_LEVEL
    args = build_parser().parse_args(argv)
    from tidings.engine.platform.errors import TidingsError

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a mistyped setting (TIDINGS_...): named, without a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.fn(args, settings) or 0
    except TidingsError as exc:
        print(f"error: {exc.message}" + (f" ({exc.field})" if exc.field else ""), file=sys.stderr)
        return 2
    finally:
        sys.stdout.flush()
        if "temporalio.client" in sys.modules:  # a command that used Temporal: free its client before exit
            from tidings.engine.platform.temporal import release_clients

            release_clients()


def console_main() -> int:
    """The `tidings` command. A process that used Temporal ends with os._exit once its work is done and its
    output flushed: the Rust core's threads of the SDK's runtime, which lives as long as the process, can
    still call into Python while the interpreter finalizes and abort a command that succeeded (exit -6,
    `PyGILState_Release ... finalizing`; temporalio/sdk-python#300). release_clients() frees the clients but
    not that runtime, and a `tidings worker` stopped by SIGTERM still crashed now and then without this."""
    code = main()
    if "temporalio.client" not in sys.modules:
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(console_main())
