"""Built-in channel ``smtp``: email through any SMTP server (aiosmtplib).

Connections are pooled per (event loop, connection settings) and reused across
batches and requests (connect, optionally STARTTLS/TLS and AUTH once, then one
transaction per message). Classification:

* a host the destination guard refuses (:mod:`tidings.engine.platform.egress`: a non-public
  address the operator has not allowed): permanent for every message of the
  batch;
* connection / TLS / authentication failures: transient for every message
  of the batch (authentication failures too, since they are usually fixed by
  the operator without changing the messages);
* a recipient, sender or content refused with a 5xx reply: permanent for
  that message only; a 4xx reply (greylisting, mailbox busy): transient for
  that message only;
* the server dropping the connection mid-batch: the current and remaining
  messages fail transiently.
"""

from __future__ import annotations

import asyncio
import binascii
import email
import email.policy
import email.utils
import functools
import random
import re
import secrets
import ssl
import time
import weakref
from collections.abc import Mapping
from email.header import Header
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from tidings.engine.platform import egress
from tidings.engine.channels import (
    Channel,
    ChannelConfigError,
    ChannelType,
    ConfigField,
    OutgoingMessage,
    SendResult,
)
from tidings.engine.hookspecs import hookimpl

# Headers computed by the channel; a message may not override them.
_RESERVED_HEADERS = {
    "from",
    "to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-tidings-message-id",
}

_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]")


class SmtpChannel(Channel):
    name = "smtp"
    channel_type = ChannelType.EMAIL
    description = "Email through an SMTP server (STARTTLS, implicit TLS or plain)."
    default_rate_limit = 10.0
    config_fields = (
        ConfigField(name="host", required=True, description="SMTP server host name"),
        ConfigField(
            name="port",
            type="int",
            description="Server port; default 587 for starttls, 465 for tls, 25 for none",
        ),
        ConfigField(name="username", description="AUTH user name (no AUTH when empty)"),
        ConfigField(name="password", secret=True, description="AUTH password"),
        ConfigField(
            name="security",
            default="starttls",
            choices=("none", "starttls", "tls"),
            description="none: plain text; starttls: upgrade (required); tls: implicit TLS",
        ),
        ConfigField(name="from_address", required=True, description='e.g. "Acme <news@acme.io>"'),
        ConfigField(name="reply_to", description="Reply-To address"),
        ConfigField(
            name="message_id_domain",
            description="Domain part of Message-ID headers (default: domain of from_address)",
        ),
        ConfigField(name="validate_certs", type="bool", default=True),
        ConfigField(name="ca_file", description="PEM bundle to trust instead of system CAs"),
        ConfigField(name="timeout", type="float", default=30.0, description="Seconds per command"),
        ConfigField(
            name="connections",
            type="int",
            default=4,
            description="Connections per process kept open and reused; more batches at once wait for one",
        ),
    )

    # -- message construction -----------------------------------------------
    def build_email(self, msg: OutgoingMessage, cfg: Mapping[str, Any]) -> EmailMessage:
        """The MIME message (exposed so previews show exactly what is sent)."""
        raw = compose(msg, cfg)
        if raw is None:
            return _stdlib_email(msg, cfg)
        return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]

    # -- sending ------------------------------------------------------------
    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)
        if not messages:
            return []
        try:
            sender = _bare_address(cfg["from_address"])
        except ValueError as exc:
            raise ChannelConfigError(f"from_address: {exc}") from None
        results: list[SendResult | None] = [None] * len(messages)

        # Build every message first: a bad message fails alone, permanently. A big batch is built in a
        # thread, so the event loop keeps serving the SMTP round trips of other batches meanwhile.
        if len(messages) > STRIPE:
            built = await asyncio.to_thread(_build_all, messages, cfg, results)
        else:
            built = _build_all(messages, cfg, results)
        if not built:
            return results  # type: ignore[return-value]

        pool = _pool(cfg)
        try:
            first = await pool.acquire(self._client)
        except egress.DestinationRefused as exc:  # the operator has not allowed this host: permanent
            raise ChannelConfigError(f"host: {exc}") from None
        except Exception as exc:  # connection, TLS, auth
            err = f"SMTP connection to {cfg['host']} failed: {_describe(exc)}"
            for i, _, _ in built:
                results[i] = SendResult.failed(messages[i].message_id, err, permanent=False)
            return results  # type: ignore[return-value]
        conns = [first]
        # A big batch also takes the pool's free slots (never waiting for one): each SMTP transaction is
        # four round trips, and with several connections in flight the server answers them together,
        # so a batch leaves several times sooner than over one connection. Small batches keep to one.
        want = min(pool.size, -(-len(built) // STRIPE))
        while len(conns) < want and not pool.slots.locked():
            try:
                conns.append(await pool.acquire(self._client))
            except Exception:
                break  # the connection we have will do
        batch = _Batch(messages, built, results, sender, _msgid_domain(cfg))
        await asyncio.gather(*(self._drain(pool, conn, batch) for conn in conns))
        return results  # type: ignore[return-value]

    async def _drain(self, pool: "_Pool", conn: "_Conn | None", batch: "_Batch") -> None:
        """Send the batch's next message over `conn` until none is left or the server drops us; then
        every message not yet sent (on any connection) fails transiently."""
        results, messages = batch.results, batch.messages
        dead: str | None = None
        while (item := batch.next()) is not None:
            i, content, rcpt = item
            mid = messages[i].message_id
            if batch.dead is not None:
                results[i] = SendResult.failed(mid, batch.dead, permanent=False)
                continue
            try:
                try:
                    await _transaction(conn.client, batch.sender, rcpt, content)
                except _Stale:
                    # A pooled connection the server had closed; nothing of this message was sent.
                    # The new connection takes the old one's slot.
                    await conn.close()
                    try:
                        conn = await pool.acquire(self._client, fresh=True)
                    except Exception as exc:
                        conn = None
                        raise aiosmtplib.SMTPServerDisconnected(f"reconnecting failed: {_describe(exc)}") from exc
                    await _transaction(conn.client, batch.sender, rcpt, content)
                results[i] = SendResult.sent(mid, message_id_header(mid, batch.domain))
            except _Stale as exc:  # the replacement connection was closed at once too
                dead = f"SMTP connection lost: {_describe(exc.__cause__ or exc)}"
                results[i] = SendResult.failed(mid, dead, permanent=False)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
                results[i] = SendResult.failed(
                    mid, f"recipient refused: {text}", permanent=all(c >= 500 for c in codes)
                )
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code in (-1, 421) or isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                    dead = f"SMTP connection lost: {_describe(exc)}"
                    results[i] = SendResult.failed(mid, dead, permanent=False)
                else:
                    results[i] = SendResult.failed(
                        mid, f"refused: {exc.code} {exc.message}", permanent=exc.code >= 500
                    )
            except ValueError as exc:  # unusable address
                results[i] = SendResult.failed(mid, f"invalid address: {exc}", permanent=True)
            except (aiosmtplib.SMTPException, OSError) as exc:
                dead = f"SMTP connection lost: {_describe(exc)}"
                results[i] = SendResult.failed(mid, dead, permanent=False)
            if dead is not None:
                batch.dead = batch.dead or dead  # the loop fails what is left, here and on the others
        if conn is None:  # reconnecting failed (its slot went back in acquire)
            pass
        elif dead is None:
            pool.release(conn)
        else:
            await pool.discard(conn)

    def _client(self, cfg: Mapping[str, Any]) -> aiosmtplib.SMTP:
        """The client, unconnected: the pool connects it over a socket from the destination guard."""
        security = cfg["security"]
        tls_context = None
        if security != "none":
            tls_context = ssl.create_default_context(cafile=cfg.get("ca_file") or None)
            if not cfg["validate_certs"]:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        return aiosmtplib.SMTP(
            hostname=cfg["host"],  # kept for TLS (SNI, certificate check); the socket is given at connect
            use_tls=security == "tls",
            start_tls=True if security == "starttls" else False,
            validate_certs=cfg["validate_certs"],
            tls_context=tls_context,
            timeout=cfg["timeout"],
        )


# -- connection pool ------------------------------------------------------------
#
# One pool per (event loop, connection settings): a batch takes an idle connection (or opens one, with
# STARTTLS/TLS and AUTH), sends, and gives it back, so consecutive requests skip the TCP/TLS/EHLO/AUTH
# round trips. A connection idle for more than NOOP_AFTER seconds is checked with NOOP first; one idle
# for more than IDLE_CLOSE seconds is closed; a reused connection the server dropped is replaced once,
# transparently (only when its first command fails, before anything of the message was accepted).

NOOP_AFTER = 10.0
IDLE_CLOSE = 60.0
_CONNECTION_KEYS = ("host", "port", "security", "username", "password", "validate_certs", "ca_file", "timeout",
                    "connections")


def smtp_port(cfg: Mapping[str, Any]) -> int:
    return cfg.get("port") or {"none": 25, "starttls": 587, "tls": 465}[cfg["security"]]


STRIPE = 25  # messages per extra connection a batch takes: a batch of 3 goes over one connection


class _Batch:
    """The messages of one send_batch, handed out one at a time to the connections draining it."""

    __slots__ = ("messages", "built", "results", "sender", "domain", "dead", "_next")

    def __init__(self, messages, built, results, sender: str, domain: str):
        self.messages, self.built, self.results = messages, built, results
        self.sender, self.domain = sender, domain
        self.dead: str | None = None  # set when the server dropped a connection: the rest fail transiently
        self._next = 0

    def next(self):
        if self._next >= len(self.built):
            return None
        self._next += 1
        return self.built[self._next - 1]


class _Stale(Exception):
    """The first command on a reused connection found it closed."""


class _Conn:
    __slots__ = ("client", "idle_since", "reused")

    def __init__(self, client: aiosmtplib.SMTP):
        self.client = client
        self.idle_since = 0.0
        self.reused = False

    async def close(self) -> None:
        await _close(self.client)


class _Pool:
    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)
        self.size = max(1, int(cfg.get("connections") or 4))
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(self.size)  # connections in use or idle, at most `size`

    async def acquire(self, make, *, fresh: bool = False) -> _Conn:
        """A connection; the caller owns one slot until release() or discard()."""
        if not fresh:
            await self.slots.acquire()
        try:
            return await self._connection(make, fresh)
        except BaseException:
            self.slots.release()
            raise

    async def _connection(self, make, fresh: bool) -> _Conn:
        now = time.monotonic()
        while self.idle and not fresh:
            conn = self.idle.pop()
            idle = now - conn.idle_since
            if not conn.client.is_connected or idle > IDLE_CLOSE:
                await conn.close()
                continue
            if idle > NOOP_AFTER:
                try:
                    await conn.client.noop()
                except Exception:
                    await conn.close()
                    continue
            conn.reused = True
            return conn
        client = make(self.cfg)
        sock = None
        try:
            # Through the destination guard (tidings.engine.platform.egress): a socket connected to a checked address of
            # the host, so no second resolution can take the connection elsewhere.
            sock = await egress.open_socket(self.cfg["host"], smtp_port(self.cfg), timeout=self.cfg.get("timeout"))
            await client.connect(sock=sock)
            if self.cfg.get("username"):
                await client.login(self.cfg["username"], self.cfg.get("password") or "")
        except BaseException:
            await _close(client)
            if sock is not None:
                sock.close()
            raise
        return _Conn(client)

    def release(self, conn: _Conn) -> None:
        if conn.client.is_connected:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            asyncio.ensure_future(conn.close())
        self.slots.release()

    async def discard(self, conn: _Conn) -> None:
        await conn.close()
        self.slots.release()


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Pool]]" = weakref.WeakKeyDictionary()


def _pool(cfg: Mapping[str, Any]) -> _Pool:
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
    key = tuple(cfg.get(k) for k in _CONNECTION_KEYS)
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = _Pool(cfg)
    return pool


async def close_pools() -> None:
    """Close the idle connections of this event loop's pools (at shutdown)."""
    for pool in (_pools.pop(asyncio.get_running_loop(), None) or {}).values():
        while pool.idle:
            await pool.idle.pop().close()


async def _transaction(client: aiosmtplib.SMTP, sender: str, rcpt: str, content: bytes | EmailMessage) -> None:
    """MAIL, RCPT, DATA for one message; RSET after a refusal keeps the connection usable."""
    if isinstance(content, EmailMessage):  # non-ASCII addresses: aiosmtplib negotiates SMTPUTF8
        await client.send_message(content, sender=sender, recipients=[rcpt])
        return
    try:
        await client.mail(sender, options=[f"SIZE={len(content)}"] if client.supports_extension("size") else [])
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
        raise _Stale() from exc
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:  # the server closes the connection (idle timeout, shutdown)
            raise _Stale() from exc
        await _rset(client)
        raise
    try:
        resp = await client.rcpt(rcpt)
    except aiosmtplib.SMTPResponseException as exc:
        await _rset(client)
        if exc.code in (-1, 421) or isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            raise
        raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(exc.code, exc.message, rcpt)]) from exc
    del resp
    try:
        await client.data(content)
    except aiosmtplib.SMTPResponseException as exc:
        if not (exc.code in (-1, 421) or isinstance(exc, aiosmtplib.SMTPServerDisconnected)):
            await _rset(client)
        raise


async def _rset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (ConnectionError, aiosmtplib.SMTPException):
        pass


# -- MIME ---------------------------------------------------------------------------


def compose(msg: OutgoingMessage, cfg: Mapping[str, Any]) -> bytes | None:
    """RFC 5322/2045 bytes of an email: headers (RFC 2047 words where not ASCII), then text/plain,
    text/html or multipart/alternative of both, each 7bit when it can be and quoted-printable
    otherwise. None when an address itself is not ASCII (needs SMTPUTF8)."""
    text, html = msg.text, msg.html
    if text is None and html is None:
        raise ValueError("email has neither a text nor an HTML part")
    sender = _sender_headers(cfg["from_address"], cfg.get("reply_to") or "", cfg.get("message_id_domain") or "")
    if sender is None or not msg.to.isascii():
        return None
    from_header, reply_to_header, domain = sender
    lines = [
        "From: " + from_header,
        "To: " + _plain(msg.to, "To"),
    ]
    if reply_to_header:
        lines.append("Reply-To: " + reply_to_header)
    lines += [
        "Subject: " + _unstructured("Subject", msg.subject or ""),
        "Date: " + _date_header(),
        "Message-ID: " + message_id_header(msg.message_id, domain),
        "X-Tidings-Message-Id: " + _plain(msg.message_id, "X-Tidings-Message-Id"),
    ]
    if msg.unsubscribe_url:
        lines.append("List-Unsubscribe: <" + _plain(msg.unsubscribe_url, "List-Unsubscribe") + ">")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for key, value in msg.headers.items():
        if key.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {key!r} is set by the channel and cannot be overridden")
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(f"header name {key!r} is not allowed")
        lines.append(f"{key}: " + _unstructured(key, value))
    lines.append("MIME-Version: 1.0")
    if text is not None and html is not None:
        boundary = _boundary(msg.message_id, text, html)
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        lines += ["", f"--{boundary}", *_part("plain", text), f"--{boundary}", *_part("html", html),
                  f"--{boundary}--", ""]
    else:
        lines += _part("plain" if text is not None else "html", text if text is not None else html)  # type: ignore[arg-type]
    return "\r\n".join(lines).encode("ascii")


_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ':' (RFC 5322 ftext)


def _build_all(messages: list[OutgoingMessage], cfg: Mapping[str, Any],
               results: list[SendResult | None]) -> list[tuple[int, bytes | EmailMessage, str]]:
    """(index, content, envelope recipient) of each message; a message that cannot be built gets its
    permanent failure in `results` instead."""
    built: list[tuple[int, bytes | EmailMessage, str]] = []
    for i, m in enumerate(messages):
        try:
            raw = compose(m, cfg)
            content = raw if raw is not None else _stdlib_email(m, cfg)
            built.append((i, content, _bare_address(m.to)))
        except (ValueError, TypeError) as exc:
            results[i] = SendResult.failed(m.message_id, f"invalid message: {exc}", permanent=True)
    return built


@functools.lru_cache(maxsize=64)
def _sender_headers(from_address: str, reply_to: str, message_id_domain: str) -> tuple[str, str, str] | None:
    """(From, Reply-To, Message-ID domain) of a configuration, worked out once rather than per message
    (parsing the addresses was a tenth of composing one); None when an address needs SMTPUTF8."""
    if not (_addr_ascii(from_address) and _addr_ascii(reply_to)):
        return None
    domain = message_id_domain or _msgid_domain({"from_address": from_address})
    return _address_header(from_address), _address_header(reply_to) if reply_to else "", domain


_date_cache: list = [0, ""]


def _date_header() -> str:
    """The Date header, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date_cache[1]


_boundary_random = random.Random(secrets.randbits(64))  # one system call at import, not one per message


def _boundary(message_id: str, text: str, html: str) -> str:
    """A multipart boundary: the message id (random already) and a counter-like random suffix, checked
    against both parts so it cannot occur in them (RFC 2046 5.1.1)."""
    stem = "=_tdg_" + _MSGID_UNSAFE.sub("", message_id)[:40] + "_"
    while True:
        boundary = stem + f"{_boundary_random.getrandbits(48):012x}"
        if boundary not in text and boundary not in html:
            return boundary


def _part(subtype: str, body: str) -> list[str]:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if body.isascii() and max(map(len, body.split("\n")), default=0) <= 990:
        cte, encoded = "7bit", body
    else:
        cte = "quoted-printable"
        encoded = binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
    if not encoded.endswith("\n"):
        encoded += "\n"
    return [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}", "",
            encoded.replace("\n", "\r\n")[:-2]]


def _plain(value: str, name: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} contains a line break")
    return value


def _unstructured(name: str, value: str) -> str:
    """A header value: as is when short printable ASCII, else folded / RFC 2047 encoded."""
    _plain(value, name)
    if value.isascii() and len(name) + len(value) <= 76 and value.isprintable():
        return value
    return Header(value, "utf-8" if not value.isascii() else "us-ascii", header_name=name).encode(linesep="\r\n")


def _addr_ascii(value: str) -> bool:
    return email.utils.parseaddr(value)[1].isascii()


def _address_header(value: str) -> str:
    _plain(value, "address")
    name, addr = email.utils.parseaddr(value)
    if not addr:
        raise ValueError(f"not an email address: {value!r}")
    return email.utils.formataddr((name, addr), charset="utf-8") if name else addr


def _stdlib_email(msg: OutgoingMessage, cfg: Mapping[str, Any]) -> EmailMessage:
    """The stdlib's EmailMessage, for what `compose` leaves out (internationalised addresses)."""
    em = EmailMessage(policy=email.policy.SMTPUTF8)
    em["From"] = cfg["from_address"]
    em["To"] = msg.to
    if cfg.get("reply_to"):
        em["Reply-To"] = cfg["reply_to"]
    em["Subject"] = msg.subject or ""
    em["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    em["Message-ID"] = message_id_header(msg.message_id, _msgid_domain(cfg))
    em["X-Tidings-Message-Id"] = msg.message_id
    if msg.unsubscribe_url:
        em["List-Unsubscribe"] = f"<{msg.unsubscribe_url}>"
        em["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for key, value in msg.headers.items():
        if key.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {key!r} is set by the channel and cannot be overridden")
        em[key] = value
    text, html = msg.text, msg.html
    if text is None and html is None:
        raise ValueError("email has neither a text nor an HTML part")
    if text is not None:
        em.set_content(text, subtype="plain", charset="utf-8")
        if html is not None:
            em.add_alternative(html, subtype="html", charset="utf-8")
    else:
        em.set_content(html, subtype="html", charset="utf-8")
    return em


def message_id_header(message_id: str, domain: str) -> str:
    """Stable RFC 5322 Message-ID derived from our message id."""
    local = _MSGID_UNSAFE.sub("-", message_id).strip(".") or "message"
    return f"<{local}@{domain}>"


def _msgid_domain(cfg: Mapping[str, Any]) -> str:
    if cfg.get("message_id_domain"):
        return cfg["message_id_domain"]
    addr = _bare_address(cfg["from_address"])
    return addr.rpartition("@")[2] or "tidings.local"


def _bare_address(value: str) -> str:
    _, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"not an email address: {value!r}")
    return addr


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except Exception:
        client.close()


__all__ = ["SmtpChannel", "message_id_header", "compose", "close_pools"]


@hookimpl
def register_channels() -> list[Channel]:
    return [SmtpChannel()]


@hookimpl
async def shutdown() -> None:
    await close_pools()  # QUIT the pooled SMTP connections of this event loop
