"""Where Pinpoint import and export jobs read and write their files: `s3://bucket/key` on the S3-compatible
store at TIDINGS_S3_ENDPOINT_URL (AWS's S3 when unset; credentials from the usual AWS_* variables), or
`file://` paths inside the folder TIDINGS_IMPORT_ROOT names (none when it is unset)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import botocore.session
from botocore.awsrequest import AWSHTTPConnection, AWSHTTPConnectionPool, AWSHTTPSConnection, AWSHTTPSConnectionPool
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.httpsession import URLLib3Session
from urllib3.exceptions import NewConnectionError
from urllib3.util import connection as urllib3_connection

from tidings.engine.platform.egress import DestinationRefused, check_url, checked_addresses_sync
from tidings.engine.platform.errors import InvalidInput

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Location:
    field: str  # the request member it came from, named in refusals
    url: str
    bucket: str | None = None  # s3://
    key: str = ""
    path: Path | None = None  # file://


def parse_location(url: str, field: str) -> Location:
    """The s3:// or file:// location `url` names; anything else, or a file outside TIDINGS_IMPORT_ROOT,
    refused naming `field`."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise InvalidInput(f"{field}: {url!r} names no bucket (s3://bucket/key)", field=field)
        return Location(field, url, bucket=parts.netloc, key=unquote(parts.path.lstrip("/")))
    if parts.scheme == "file":
        root = os.environ.get("TIDINGS_IMPORT_ROOT")
        if not root:
            raise InvalidInput(f"{field}: file:// URLs are refused: this server allows none "
                               "(TIDINGS_IMPORT_ROOT is not set)", field=field)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"{field}: a file:// URL names no host", field=field)
        path = Path(unquote(parts.path)).resolve()
        if not path.is_relative_to(Path(root).resolve()):
            raise InvalidInput(f"{field}: {url!r} is outside the folder this server allows file:// URLs in "
                               "(TIDINGS_IMPORT_ROOT)", field=field)
        return Location(field, url, path=path)
    raise InvalidInput(f"{field}: an s3://bucket/key or file:// URL, got {url!r}", field=field)


class _GuardedConnection(AWSHTTPConnection):
    """botocore's HTTP connection, connected only to addresses the destination guard
    (tidings.engine.platform.egress) checked when the connection is made: the name is resolved here, once, and
    the socket goes to a checked address (a name that resolves elsewhere later, DNS rebinding, is checked
    again at the next connection). TLS still uses the host name (SNI, certificate)."""

    def _new_conn(self) -> socket.socket:
        last: OSError | None = None
        for address in checked_addresses_sync(self._dns_host, self.port):  # DestinationRefused, OSError
            try:
                return urllib3_connection.create_connection((address, self.port), self.timeout,
                                                            source_address=self.source_address,
                                                            socket_options=self.socket_options)
            except OSError as exc:
                last = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")


class _GuardedTLSConnection(_GuardedConnection, AWSHTTPSConnection):
    pass


class _GuardedPool(AWSHTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedTLSPool(AWSHTTPSConnectionPool):
    ConnectionCls = _GuardedTLSConnection


class _GuardedSession(URLLib3Session):
    """botocore's HTTP session over the guarded connections, and no proxy (a proxy would connect on its own,
    past the guard)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(proxies={}, **options)
        self._pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedTLSPool}
        self._manager.pool_classes_by_scheme = self._pool_classes_by_scheme


def _client():
    """An S3 client of the store (TIDINGS_S3_ENDPOINT_URL, else botocore's own settings: AWS's S3 or
    AWS_ENDPOINT_URL_S3) whose every connection goes through the destination guard. The configured
    TIDINGS_S3_ENDPOINT_URL is the operator's and allowed (egress.current_policy); any other address that
    is not public needs TIDINGS_ALLOW_PRIVATE_DESTINATIONS."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ.get("TIDINGS_S3_ENDPOINT_URL") or None, region_name=region)
    endpoint = client._endpoint  # botocore keeps its HTTP session here; tests fail if an upgrade moves it
    config = client.meta.config
    endpoint.http_session = _GuardedSession(timeout=(config.connect_timeout, config.read_timeout),
                                            max_pool_connections=config.max_pool_connections)
    return client


async def check_reachable(loc: Location) -> None:
    """An early, clear refusal of an S3 endpoint the guard refuses now (the job's connections are checked again
    when they are made)."""
    if loc.bucket is None:
        return
    try:
        await check_url(_client().meta.endpoint_url)
    except (DestinationRefused, OSError) as exc:
        raise InvalidInput(f"{loc.field}: the S3 endpoint is refused: {exc}", field=loc.field) from None


def _failed(loc: Location, exc: Exception) -> InvalidInput:
    if isinstance(exc, HTTPClientError) and isinstance(exc.kwargs.get("error"), DestinationRefused):
        exc = exc.kwargs["error"]  # botocore wraps what a connection raised
    if isinstance(exc, DestinationRefused):
        reason = f"the S3 endpoint is refused: {exc}"
    elif isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        reason = f"{error.get('Code')}: {error.get('Message') or ''}".rstrip(": ")
    else:
        reason = str(exc)
    return InvalidInput(f"{loc.field}: {loc.url}: {reason}", field=loc.field)


def read_into(loc: Location, out: IO[bytes]) -> None:
    """Copy the object or file at `loc` into `out`, in chunks."""
    if loc.path is not None:
        if not loc.path.is_file():
            raise InvalidInput(f"{loc.field}: {loc.url}: no such file", field=loc.field)
        with open(loc.path, "rb") as f:
            while chunk := f.read(CHUNK):
                out.write(chunk)
        return
    try:
        body = _client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
        for chunk in body.iter_chunks(CHUNK):
            out.write(chunk)
    except (ClientError, BotoCoreError, DestinationRefused) as exc:
        raise _failed(loc, exc) from None


def write_under(loc: Location, name: str, data: IO[bytes]) -> str:
    """Write `data` as `name` under the prefix or folder `loc`; returns the URL written."""
    if loc.path is not None:
        loc.path.mkdir(parents=True, exist_ok=True)
        target = loc.path / name
        with open(target, "wb") as f:
            while chunk := data.read(CHUNK):
                f.write(chunk)
        return target.as_uri()
    key = f"{loc.key.rstrip('/')}/{name}" if loc.key else name
    try:
        _client().put_object(Bucket=loc.bucket, Key=key, Body=data)
    except (ClientError, BotoCoreError, DestinationRefused) as exc:
        raise _failed(loc, exc) from None
    return f"s3://{loc.bucket}/{key}"
