"""Where Pinpoint import and export jobs read and write their files: `s3://bucket/key` on the S3-compatible
store at TIDINGS_S3_ENDPOINT_URL (AWS's S3 when unset; credentials from the usual AWS_* variables), or
`file://` paths inside the folder TIDINGS_IMPORT_ROOT names (none when it is unset)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from tidings.engine.platform.egress import DestinationRefused, check_url
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


def _client():
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ.get("TIDINGS_S3_ENDPOINT_URL") or None, region_name=region)


async def check_reachable(loc: Location) -> None:
    """The SSRF guard (tidings.engine.platform.egress) for an S3 endpoint the operator did not configure (AWS's,
    whose name resolves at run time); the configured TIDINGS_S3_ENDPOINT_URL is trusted as set."""
    if loc.bucket is None or os.environ.get("TIDINGS_S3_ENDPOINT_URL"):
        return
    try:
        await check_url(_client().meta.endpoint_url)
    except (DestinationRefused, OSError) as exc:
        raise InvalidInput(f"{loc.field}: the S3 endpoint is refused: {exc}", field=loc.field) from None


def _failed(loc: Location, exc: Exception) -> InvalidInput:
    if isinstance(exc, ClientError):
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
    except (ClientError, BotoCoreError) as exc:
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
    except (ClientError, BotoCoreError) as exc:
        raise _failed(loc, exc) from None
    return f"s3://{loc.bucket}/{key}"
