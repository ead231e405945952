"""Pinpoint's limits and per-channel address checks, shared by the API, batch and import paths."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from tidings.engine.platform.errors import InvalidInput, LimitExceeded
from tidings.engine.platform.limits import is_int64
from tidings.engine.platform.timezones import is_timezone

MAX_NAME = 50
MAX_VALUE = 100
MAX_VALUES_PER_ATTRIBUTE = 50
MAX_ATTRIBUTE_NAMES = 250
MAX_ENDPOINTS_PER_USER = 15

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


def check_attributes(attrs: dict[str, Any], field: str) -> None:
    # The batch paths call this for every item: the valid case allocates nothing (the field path and the
    # message are built only for an error). Types are already checked by msgspec: str, number, bool or list[str].
    for name, value in attrs.items():
        if not name or len(name) > MAX_NAME:
            raise LimitExceeded(f"attribute name must be 1-{MAX_NAME} characters, got {len(name)}", field=f"{field}.{name}")
        if value.__class__ is str:
            if len(value) > MAX_VALUE:
                raise LimitExceeded(f"attribute values are at most {MAX_VALUE} characters, got {len(value)}",
                                    field=f"{field}.{name}")
        elif value.__class__ is list:
            if len(value) > MAX_VALUES_PER_ATTRIBUTE:
                raise LimitExceeded(f"at most {MAX_VALUES_PER_ATTRIBUTE} values per attribute, got {len(value)}",
                                    field=f"{field}.{name}")
            for v in value:
                if len(v) > MAX_VALUE:
                    raise LimitExceeded(f"attribute values are at most {MAX_VALUE} characters, got {len(v)}",
                                        field=f"{field}.{name}")


def check_metrics(metrics: dict[str, Any], field: str) -> None:
    for name, value in metrics.items():
        if not name or len(name) > MAX_NAME:
            raise LimitExceeded(f"metric name must be 1-{MAX_NAME} characters, got {len(name)}", field=f"{field}.{name}")
        if value is not None and value != value:  # NaN cannot be stored or compared
            raise InvalidInput("metric values must be numbers, got NaN", field=f"{field}.{name}")
        if value.__class__ is int and not is_int64(value):
            raise InvalidInput(f"integer metric values are 64-bit, got {value}", field=f"{field}.{name}")


def check_timezone(tz: str | None, field: str = "timezone") -> None:
    if tz is None:
        return
    if not is_timezone(tz):
        raise InvalidInput(f"unknown IANA time zone {tz!r}", field=field)


def check_locale(locale: str | None, field: str = "locale") -> None:
    if locale is not None and not _LOCALE.match(locale):
        raise InvalidInput(f"locale must look like 'en' or 'en-US', got {locale!r}", field=field)


def check_address(channel: str, address: str, field: str = "address") -> None:
    if not address or len(address) > 4096:
        raise InvalidInput("address must be 1-4096 characters", field=field)
    if channel == "EMAIL" and not _EMAIL.match(address):
        raise InvalidInput(f"not an email address: {address!r}", field=field)
    if channel in ("SMS", "VOICE") and not _E164.match(address):
        raise InvalidInput(f"{channel} addresses are E.164 phone numbers such as +14155550100, got {address!r}", field=field)
    if channel == "WEBHOOK":
        parts = urlsplit(address)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidInput(f"WEBHOOK addresses are https URLs, got {address!r}", field=field)


# Free-form JSON (segment rules, event attributes, message data, channel and sink settings, template
# defaults) nests at most this deep: {"a": [1]} is 2 levels. Deeper documents are refused with a 400 before
# anything walks them recursively (a 1,000-deep rule used to exhaust the interpreter's stack: a 500).
MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> list[Any] | None:
    """The path (keys and indexes) to the first container nested deeper than `limit`, else None.
    Iterative, so it is safe on any depth."""
    return _first_fault(value, limit, ints=False)[0]


def _first_fault(value: Any, limit: int, ints: bool) -> tuple[list[Any] | None, str]:
    """(path, what) of the first container deeper than `limit` ("deep") or, with `ints`, the first integer
    outside 64 bits ("int"); (None, "") when there is none."""
    stack: list[tuple[Any, int, tuple]] = [(value, 1, ())]
    children: Any
    while stack:
        node, depth, path = stack.pop()
        if ints and node.__class__ is int and not is_int64(node):
            return list(path), "int"
        if node.__class__ is dict or isinstance(node, dict):
            children = node.items()
        elif node.__class__ is list or isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        if depth > limit:
            return list(path), "deep"
        stack.extend((v, depth + 1, (*path, k)) for k, v in children)
    return None, ""


def check_depth(value: Any, field: str, limit: int = MAX_DEPTH) -> None:
    """InvalidInput naming `field` (and where inside it) when `value` nests deeper than `limit`."""
    if value.__class__ not in (dict, list) and not isinstance(value, (dict, list)):
        return
    path = too_deep(value, limit)
    if path is not None:
        where = "/" + "/".join(str(p) for p in path[:6]) + ("/..." if len(path) > 6 else "")
        raise LimitExceeded(f"nested more than {limit} levels deep (at {where})", field=field)


def check_values_depth(values: dict[str, Any], field: str, limit: int = MAX_DEPTH) -> None:
    """Free-form values of a mapping (event attributes, message data): nested at most `limit` levels and no
    integer past 64 bits (the rule evaluators and SQL take no more); names `field.key`. A string value costs
    one class check."""
    for name, value in values.items():
        cls = value.__class__
        if cls is str or cls is float or cls is bool or value is None:
            continue
        path, what = _first_fault(value, limit - 1, ints=True)
        if what == "deep":
            raise LimitExceeded(f"nested more than {limit} levels deep", field=f"{field}.{name}")
        if what == "int":
            raise InvalidInput("integers are at most 64-bit", field=".".join([f"{field}.{name}", *map(str, path)]))
