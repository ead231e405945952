"""Open and click tracking, one-click unsubscribe: signed URLs that recipients reach without a key.

    GET      /t/o/{token}.gif   open pixel (1x1 GIF)           -> `_{channel}.open`
    GET      /t/c/{token}       click: 302 to the signed link   -> `_{channel}.click` with attributes.link
    GET|POST /t/u/{token}       unsubscribe (POST = RFC 8058)   -> opt-out + `_{channel}.unsubscribe`

A token is `base64url(json [version, workspace id, kind, message id, link?]) "." base64url(mac)` where
mac is the first 16 bytes of HMAC-SHA256 over the payload with the workspace's key: a row of
`tracking_secret` made at first use or, when TIDINGS_SECRET_KEY is set, HMAC(that key, workspace id).
Changing any byte of the token (another link, another message, another workspace) fails the check.

Messaging calls `rewrite_html` on the rendered HTML of an email before sending, and passes
`unsubscribe_url(...)` as `OutgoingMessage.unsubscribe_url` (the SMTP channel turns it into
List-Unsubscribe / List-Unsubscribe-Post headers).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html as htmllib
import os
import re
import secrets
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, select

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import insert_ignoring_conflicts, reading, writing
from tidings.engine.messaging.ledger import Occurrence, find_messages, opt_out, record_occurrences
from tidings.engine.platform.errors import NotFound
from tidings.engine.messaging.tables import tracking_secrets
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tables import workspaces

KINDS = {"o": "open", "c": "click", "u": "unsubscribe"}
_VERSION = 1
_MAC_BYTES = 16
_cache: dict[tuple[str, int], bytes] = {}

PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


class InvalidToken(NotFound):
    """The token was not made by us (tampered, truncated, or for a workspace that does not exist). Answered
    404 with one message whatever the reason: whoever holds the link learns nothing from it."""

    def __init__(self, reason: str):
        super().__init__("unknown or tampered link")
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ws_id(workspace: WorkspaceRef | int) -> int:
    return workspace.id if isinstance(workspace, WorkspaceRef) else int(workspace)


def workspace_key(db: Engine | Connection, workspace: WorkspaceRef | int, secret_key: str | None = None) -> bytes:
    """The workspace's tracking key (cached; made on first use unless TIDINGS_SECRET_KEY derives it)."""
    workspace_id = _ws_id(workspace)
    master = os.environ.get("TIDINGS_SECRET_KEY", "") if secret_key is None else secret_key
    if master:
        return hmac.new(master.encode(), f"tidings-tracking/{workspace_id}".encode(), hashlib.sha256).digest()
    engine = db if isinstance(db, Engine) else db.engine
    cache_key = (str(engine.url), workspace_id)
    if cache_key in _cache:
        return _cache[cache_key]

    def load(conn: Connection) -> str | None:
        return conn.execute(
            select(tracking_secrets.c.secret).where(tracking_secrets.c.workspace_id == workspace_id)
        ).scalar()

    def make(conn: Connection) -> str:
        conn.execute(insert_ignoring_conflicts(conn, tracking_secrets, ["workspace_id"]).values(
            workspace_id=workspace_id, secret=secrets.token_urlsafe(32), created_at=now_ms()))
        return load(conn)

    if isinstance(db, Connection):
        value = load(db) or make(db)
    else:
        with reading(db) as conn:
            value = load(conn)
        if value is None:
            with writing(db) as conn:
                value = load(conn) or make(conn)
    key = value.encode()
    _cache[cache_key] = key
    return key


def cached_key(db: Engine, workspace: WorkspaceRef | int) -> bytes | None:
    """The workspace's key when it is known without touching the database (derived or cached), else None."""
    workspace_id = _ws_id(workspace)
    if os.environ.get("TIDINGS_SECRET_KEY"):
        return workspace_key(db, workspace_id)
    return _cache.get((str(db.url), workspace_id))


def make_token(key: bytes, workspace_id: int, kind: str, message_id: str, link: str | None = None) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown tracking kind {kind!r}")
    fields: list[Any] = [_VERSION, workspace_id, kind, message_id] + ([link] if link is not None else [])
    payload = _b64(msgspec.json.encode(fields))
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{payload}.{_b64(mac)}"


class Token(msgspec.Struct, frozen=True):
    workspace_id: int
    kind: str
    message_id: str
    link: str | None


def peek(token: str) -> Token:
    """Decode without checking the signature (the workspace id says which key checks it)."""
    try:
        payload, _, _mac = token.partition(".")
        fields = msgspec.json.decode(_unb64(payload))
        version, workspace_id, kind, message_id = fields[:4]
        link = fields[4] if len(fields) > 4 else None
        if version != _VERSION or kind not in KINDS or not isinstance(workspace_id, int) or not isinstance(message_id, str):
            raise ValueError
        if link is not None and not isinstance(link, str):
            raise ValueError
    except (ValueError, TypeError, msgspec.DecodeError, IndexError):
        raise InvalidToken("malformed tracking token") from None
    return Token(workspace_id, kind, message_id, link)


def verify(token: str, key: bytes, kind: str) -> Token:
    kind = KINDS.get(kind, kind)
    t = peek(token)
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES])
    if not hmac.compare_digest(expected.encode(), mac.encode()) or KINDS[t.kind] != kind:
        raise InvalidToken("tracking token signature does not match")
    if kind == "click" and not (t.link or "").lower().startswith(("http://", "https://")):
        raise InvalidToken("click token without an http(s) link")
    return t


def read(db: Engine | Connection, token: str, kind: str, secret_key: str | None = None) -> Token:
    """Check a token from a URL; raises InvalidToken when it was not made by us for `kind`."""
    t = peek(token)
    if isinstance(db, Connection):
        exists = db.execute(select(workspaces.c.id).where(workspaces.c.id == t.workspace_id)).first()
    else:
        with reading(db) as conn:
            exists = conn.execute(select(workspaces.c.id).where(workspaces.c.id == t.workspace_id)).first()
    if exists is None:
        raise InvalidToken("unknown workspace")
    return verify(token, workspace_key(db, t.workspace_id, secret_key), kind)


# ---- URLs for messaging -----------------------------------------------------------------------------


def _base(base_url: str | None) -> str:
    base = base_url if base_url is not None else os.environ.get("TIDINGS_PUBLIC_URL", "")
    if not base:
        raise ValueError("tracking URLs need a public base URL: set TIDINGS_PUBLIC_URL")
    return base.rstrip("/")


def click_url(db, workspace, message_id: str, link: str, base_url: str | None = None, *,
              secret_key: str | None = None) -> str:
    workspace_id = _ws_id(workspace)
    return f"{_base(base_url)}/t/c/{make_token(workspace_key(db, workspace_id, secret_key), workspace_id, 'c', message_id, link)}"


def unsubscribe_url(db, workspace, message_id: str, base_url: str | None = None, *,
                    secret_key: str | None = None) -> str:
    """The one-click unsubscribe URL of a message (for `OutgoingMessage.unsubscribe_url` and templates)."""
    workspace_id = _ws_id(workspace)
    return f"{_base(base_url)}/t/u/{make_token(workspace_key(db, workspace_id, secret_key), workspace_id, 'u', message_id)}"


_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def rewrite_html(html: str, workspace: WorkspaceRef | int, message_id: str, base_url: str | None = None, *,
                 db: Engine | Connection, secret_key: str | None = None, pixel: bool = True) -> str:
    """Route every http(s) `<a href>` through a signed click URL and add the open pixel.

    Links already pointing at our tracking URLs, `mailto:`, `tel:`, anchors and links whose tag has a
    `data-tidings-notrack` attribute are left alone.
    """
    base = _base(base_url)
    workspace_id = _ws_id(workspace)
    key = workspace_key(db, workspace_id, secret_key)
    ours = base + "/t/"

    def href(m: re.Match) -> str:
        head, quote, raw = m.group(1), m.group(2), m.group(3)
        link = htmllib.unescape(raw).strip()
        if not link.lower().startswith(("http://", "https://")) or link.startswith(ours):
            return m.group(0)
        url = f"{base}/t/c/{make_token(key, workspace_id, 'c', message_id, link)}"
        return f"{head}{quote}{htmllib.escape(url, quote=True)}{quote}"

    def tag(m: re.Match) -> str:
        if "data-tidings-notrack" in m.group(0).lower():
            return m.group(0)
        return _HREF.sub(href, m.group(0), count=1)

    out = _A_TAG.sub(tag, html)
    if pixel:
        img = (f'<img src="{base}/t/o/{make_token(key, workspace_id, "o", message_id)}.gif" width="1" height="1" '
               f'alt="" style="display:block;border:0;width:1px;height:1px" />')
        ends = list(_BODY_END.finditer(out))
        out = out[: ends[-1].start()] + img + out[ends[-1].start():] if ends else out + img
    return out


# ---- recording what recipients did -------------------------------------------------------------------


def _occur(db: Engine, t: Token, type_: str, details: dict[str, Any], *, unsubscribe: bool = False) -> bool:
    """Record `type_` for the token's message; False when the message is unknown (nothing recorded)."""
    with writing(db) as conn:
        by_id, _ = find_messages(conn, t.workspace_id, message_ids=[t.message_id])
        ref = by_id.get(t.message_id)
        if ref is None:
            return False
        record_occurrences(conn, t.workspace_id, [(ref, Occurrence(type=type_, ts=now_ms(), details=details))])
        if unsubscribe:
            opt_out(conn, ref)
    return True


def track_open(db: Engine, token: str, *, user_agent: str = "", ip_address: str = "",
               secret_key: str | None = None) -> bool:
    t = read(db, token, "o", secret_key)
    return _occur(db, t, "open", {"user_agent": user_agent[:500], "ip_address": ip_address})


def track_click(db: Engine, token: str, *, user_agent: str = "", ip_address: str = "",
                secret_key: str | None = None) -> str:
    """Record the click and return the link to redirect to."""
    t = read(db, token, "c", secret_key)
    _occur(db, t, "click", {"link": t.link, "user_agent": user_agent[:500], "ip_address": ip_address})
    return t.link


def check_unsubscribe(db: Engine, token: str, *, secret_key: str | None = None) -> Token:
    return read(db, token, "u", secret_key)


def unsubscribe(db: Engine, token: str, *, one_click: bool, user_agent: str = "", ip_address: str = "",
                secret_key: str | None = None) -> bool:
    """Opt the message's endpoint out and record `_{channel}.unsubscribe` (once per message)."""
    t = read(db, token, "u", secret_key)
    return _occur(db, t, "unsubscribe", {"method": "one_click" if one_click else "link",
                                         "user_agent": user_agent[:500], "ip_address": ip_address}, unsubscribe=True)
