"""Channel secrets at rest: the values of settings marked secret (and each channel's feedback secret) are
sealed with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) before they reach the database.

Keys come from the operator, first match wins:
1. ``TIDINGS_ENCRYPTION_KEYS``: Fernet keys separated by commas or spaces;
2. ``TIDINGS_ENCRYPTION_KEY_FILE``: a file with one key per line (``#`` comments);
3. ``$TIDINGS_HOME/encryption-keys``, when it exists (``tidings dev`` makes it on first run).
The first key seals every new value; all of them open stored ones, so a key can be rotated in
(``new,old``), stored values re-sealed (``tidings secrets rotate``), and the old key dropped.

A sealed value is the string ``"fernet:" + token`` of the JSON-encoded setting (a JSON-typed secret such as
``service_account_json`` keeps its type). Values stored before encryption existed are plain: they are read
as they are and sealed at the next start-up with a key, the next PUT, or ``tidings secrets rotate``.
Without a key nothing secret is stored: the write is refused (:class:`NoEncryptionKey`), never kept plain.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine, select, update

from tidings.engine.channels.contract import ChannelConfigError, secret_keys
from tidings.engine.platform.errors import Conflict
from tidings.engine.platform.db import reading, writing
from tidings.engine.channels.tables import channel_configs
from tidings.engine.workspaces.tables import workspaces

log = logging.getLogger("tidings.secrets")

SEALED_PREFIX = "fernet:"
KEY_FILE_NAME = "encryption-keys"
KEY_SOURCES = "TIDINGS_ENCRYPTION_KEYS, TIDINGS_ENCRYPTION_KEY_FILE or $TIDINGS_HOME/encryption-keys"


class EncryptionKeyError(Exception):
    """The configured keys are unusable (not Fernet keys, unreadable file): start-up stops here."""


class NoEncryptionKey(Conflict):
    """A secret was to be stored and this deployment has no key: refused rather than kept in plain text."""

    code = "no_encryption_key"


class SecretUnreadable(ChannelConfigError):
    """A stored secret does not open with any configured key (wrong key, or its key was dropped)."""


@dataclass(frozen=True)
class Keyring:
    keys: tuple[Fernet, ...]
    fingerprints: tuple[str, ...]  # sha256 of each key, shortened: safe to log, tells keys apart
    source: str

    @functools.cached_property
    def _multi(self) -> MultiFernet:
        return MultiFernet(list(self.keys))

    def seal(self, value: Any) -> str:
        return SEALED_PREFIX + self.keys[0].encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def open(self, sealed: str) -> Any:
        """The value of a sealed string; raises InvalidToken when no key opens it."""
        return json.loads(self._multi.decrypt(sealed[len(SEALED_PREFIX):].encode()))

    def sealed_with_current(self, sealed: str) -> bool:
        try:
            self.keys[0].decrypt(sealed[len(SEALED_PREFIX):].encode())
            return True
        except InvalidToken:
            return False


def new_key() -> str:
    return Fernet.generate_key().decode()


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _parse_keys(text: str, source: str) -> Keyring:
    raw = [k for k in re.split(r"[\s,]+", "\n".join(line.split("#", 1)[0] for line in text.splitlines())) if k]
    if not raw:
        raise EncryptionKeyError(f"{source} holds no key")
    keys = []
    for i, k in enumerate(raw, 1):
        try:
            keys.append(Fernet(k.encode()))
        except (ValueError, TypeError):
            raise EncryptionKeyError(f"{source}: key {i} is not a Fernet key (32 url-safe base64-encoded bytes); "
                                     "make one with `tidings secrets new-key`") from None
    return Keyring(tuple(keys), tuple(hashlib.sha256(k.encode()).hexdigest()[:8] for k in raw), source)


_cache: dict[tuple, Keyring | None] = {}


def keyring(environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The configured keys, or None when there are none. Cached per source (and key file change)."""
    env = os.environ if environ is None else environ
    listed = env.get("TIDINGS_ENCRYPTION_KEYS", "").strip()
    if listed:
        cache_key: tuple = ("env", listed)
        if cache_key not in _cache:
            _cache[cache_key] = _parse_keys(listed, "TIDINGS_ENCRYPTION_KEYS")
        return _cache[cache_key]
    named = env.get("TIDINGS_ENCRYPTION_KEY_FILE", "").strip()
    path = Path(named) if named else Path(env.get("TIDINGS_HOME", ".tidings")).absolute() / KEY_FILE_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        if named:
            raise EncryptionKeyError(f"TIDINGS_ENCRYPTION_KEY_FILE: {path} does not exist") from None
        return None
    cache_key = ("file", str(path), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _cache:
        try:
            text = path.read_text()
        except OSError as exc:
            raise EncryptionKeyError(f"cannot read the key file {path}: {exc.strerror}") from None
        _cache[cache_key] = _parse_keys(text, str(path))
    return _cache[cache_key]


def ensure_key_file(home: Path) -> Path:
    """`tidings dev`: a key of its own in the state folder, made once, so secrets can be stored with no setup."""
    path = home / KEY_FILE_NAME
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Fernet keys sealing stored channel secrets; the first one seals new values.\n"
                    f"{new_key()}\n")
    return path


# --------------------------------------------------------------------------- sealing and opening settings


def _refuse(channel: str, key: str, field: str, kind: str) -> NoEncryptionKey:
    return NoEncryptionKey(f"this deployment has no encryption key for channel secrets ({KEY_SOURCES}); "
                           f"{key!r} of {kind} {channel!r} was not stored, as it would be in plain text",
                           field=field)


def seal_value(channel: str, key: str, value: Any, field: str, *, kind: str = "channel") -> Any:
    """One secret as it is stored: sealed with the current key. Callers hand plain values only (a kept
    secret is opened first), so a value that merely looks sealed is sealed like any other."""
    if value is None or value == "":
        return value
    ring = keyring()
    if ring is None:
        raise _refuse(channel, key, field, kind)
    return ring.seal(value)


def seal_config(channel: str, secrets: Iterable[str], config: Mapping[str, Any], *,
                kind: str = "channel") -> dict[str, Any]:
    """``config`` with the values of the named secret settings sealed (``kind``: channel, event stream)."""
    out = dict(config)
    for key in secrets:
        if key in out:
            out[key] = seal_value(channel, key, out[key], f"config.{key}", kind=kind)
    return out


def open_value(channel: str, key: str, value: Any, workspace: str | None = None, *, kind: str = "channel") -> Any:
    if not is_sealed(value):
        return value  # stored before encryption existed: read as is until re-sealed
    ring = keyring()
    where = f"{kind} {channel!r}" + (f" of workspace {workspace!r}" if workspace else "")
    if ring is None:
        raise SecretUnreadable(f"{where}: secret setting {key!r} is encrypted and no encryption key is configured "
                               f"({KEY_SOURCES})")
    try:
        return ring.open(value)
    except InvalidToken:
        raise SecretUnreadable(f"{where}: secret setting {key!r} cannot be decrypted with the configured keys "
                               f"({ring.source}: {', '.join(ring.fingerprints)}); restore the key it was sealed "
                               "with, or store the setting again") from None


def open_config(channel: str, config: Mapping[str, Any], workspace: str | None = None, *,
                kind: str = "channel") -> dict[str, Any]:
    """``config`` with every sealed value opened (whatever the plugin declares: it may not be loaded)."""
    return {k: open_value(channel, k, v, workspace, kind=kind) if is_sealed(v) else v for k, v in config.items()}


# --------------------------------------------------------------------------- start-up and rotation


@dataclass
class ResealReport:
    sealed_plain: int = 0  # plain values (stored before encryption) now sealed
    resealed: int = 0  # values sealed with an older key, now with the current one
    unchanged: int = 0
    unreadable: list[str] | None = None  # "workspace/channel: error" for values no key opens
    unknown_plugin: list[str] | None = None  # channels whose plugin is not loaded: plain values left as they are


class Resealer:
    """Re-seals the stored values of one run of `reseal_all`, counting what it did in `report`."""

    def __init__(self, ring: Keyring, report: ResealReport, rotate: bool):
        self.ring, self.report, self.rotate = ring, report, rotate

    def value(self, owner: str, key: str, value: Any, workspace: str, kind: str = "channel") -> Any:
        """The value to store instead, or None to leave it."""
        if value is None or value == "":
            return None
        if not is_sealed(value):
            self.report.sealed_plain += 1
            return self.ring.seal(value)
        if self.rotate and not self.ring.sealed_with_current(value):
            self.report.resealed += 1
            return self.ring.seal(open_value(owner, key, value, workspace, kind=kind))
        self.report.unchanged += 1
        return None

    def config(self, owner: str, config: Mapping[str, Any], secrets: frozenset[str], workspace: str,
               kind: str = "channel") -> dict[str, Any] | None:
        """`config` with its secret (or already sealed) values re-sealed, or None when nothing changes.
        Raises SecretUnreadable for a value no key opens."""
        changed = {k: self.value(owner, k, v, workspace, kind) if k in secrets or is_sealed(v) else None
                   for k, v in config.items()}
        if not any(v is not None for v in changed.values()):
            return None
        return {k: config[k] if v is None else v for k, v in changed.items()}


# Other stored settings sealed the same way (an event stream's sink settings), each re-sealing its own rows.
SealedRows = Callable[[Engine, Any, Resealer], None]


def reseal_all(db: Engine, plugins: Any, *, rotate: bool, also: Iterable[SealedRows] = ()) -> ResealReport:
    """Seal plain stored secrets with the current key and, with ``rotate``, re-seal values sealed with an
    older key: channel settings here, then what each of ``also`` stores. A row no key opens is reported
    and left alone."""
    ring = keyring()
    if ring is None:
        raise EncryptionKeyError(f"no encryption key is configured ({KEY_SOURCES})")
    resealer = Resealer(ring, ResealReport(unreadable=[], unknown_plugin=[]), rotate)
    reseal_channels(db, plugins, resealer)
    for reseal_rows in also:
        reseal_rows(db, plugins, resealer)
    return resealer.report


def reseal_channels(db: Engine, plugins: Any, resealer: Resealer) -> None:
    """Channel settings and feedback secrets: one transaction per channel row, written only if no PUT
    changed the row meanwhile."""
    report = resealer.report
    with reading(db) as conn:
        rows = conn.execute(select(channel_configs.c.id, channel_configs.c.name, channel_configs.c.config,
                                   channel_configs.c.feedback_secret, channel_configs.c.updated_at,
                                   workspaces.c.name.label("workspace"))
                            .join(workspaces, workspaces.c.id == channel_configs.c.workspace_id)).all()
    for row in rows:
        channel = plugins.channels.get(row.name) if plugins is not None else None
        secrets = secret_keys(channel) if channel is not None else frozenset()
        if channel is None and any(not is_sealed(v) for v in row.config.values()):
            report.unknown_plugin.append(f"{row.ws}/{row.name}")  # which plain values are secret is unknown
        try:
            config = resealer.config(row.name, row.config, secrets, row.workspace)
            feedback_secret = resealer.value(row.name, "feedback_secret", row.feedback_secret, row.workspace)
        except SecretUnreadable as exc:
            report.unreadable.append(str(exc))
            continue
        if config is None and feedback_secret is None:
            continue
        with writing(db) as conn:
            conn.execute(update(channel_configs).where(
                channel_configs.c.id == row.id, channel_configs.c.updated_at == row.updated_at).values(
                config=row.config if config is None else config,
                feedback_secret=row.feedback_secret if feedback_secret is None else feedback_secret))


def announce(db: Engine | None = None, plugins: Any = None, also: Iterable[SealedRows] = ()) -> Keyring | None:
    """Start-up: say whether secrets can be stored, seal plain values left from before encryption, and name
    the channels whose secrets no configured key opens (they would fail at send time)."""
    ring = keyring()  # raises EncryptionKeyError for unusable keys: start-up stops with the reason
    if ring is None:
        log.warning("no encryption key for channel secrets (%s): storing a channel's secret settings will be "
                    "refused; `tidings secrets new-key` makes one", KEY_SOURCES)
        return None
    log.info("channel secrets are sealed with key %s from %s", ring.fingerprints[0], ring.source)
    if db is not None:
        report = reseal_all(db, plugins, rotate=False, also=also)
        if report.sealed_plain:
            log.info("sealed %d channel secret(s) stored in plain text before encryption", report.sealed_plain)
        for problem in report.unreadable or []:
            log.warning("%s", problem)
    return ring
