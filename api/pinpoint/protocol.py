"""Pinpoint's REST-JSON protocol, read from botocore's own service model (not copied by hand): each
operation's method, path (with its labels), query string, payload member and success status.

`route` finds the operation of a request; `parse_input` turns the request into the operation's input
parameters (botocore's member names), the body decoded and checked by msgspec Structs made from the model's
shapes (types, required and unknown members), so a body the SDK would refuse to send is refused here too,
naming the member.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import msgspec
from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel, Shape

from tidings.api.pinpoint.errors import (
    BadRequestException,
    MethodNotAllowedException,
    NotFoundException,
)

SERVICE = "pinpoint"
API_VERSION = "2016-12-01"
_LABEL = re.compile(r"\{([^}+]+)(\+?)\}")


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    pattern: re.Pattern
    model: OperationModel

    @property
    def status(self) -> int:
        return self.model.http.get("responseCode", 200)


@functools.cache
def service_model() -> ServiceModel:
    return ServiceModel(Loader().load_service_model(SERVICE, "service-2", API_VERSION), SERVICE)


def _pattern(request_uri: str) -> re.Pattern:
    path = request_uri.split("?", 1)[0]
    parts, last = [], 0
    for m in _LABEL.finditer(path):
        parts.append(re.escape(path[last:m.start()]))
        parts.append(f"(?P<{_group(m.group(1))}>{'.+' if m.group(2) else '[^/]+'})")
        last = m.end()
    parts.append(re.escape(path[last:]))
    return re.compile("".join(parts) + "/?")


def _group(label: str) -> str:
    return "p_" + re.sub(r"\W", "_", label)


@functools.cache
def operations() -> tuple[Operation, ...]:
    model = service_model()
    ops = [Operation(name, model.operation_model(name).http["method"],
                     _pattern(model.operation_model(name).http["requestUri"]), model.operation_model(name))
           for name in model.operation_names]
    # A literal segment beats a label where two paths could both match (more literal characters first).
    return tuple(sorted(ops, key=lambda op: -len(_LABEL.sub("", op.model.http["requestUri"]))))


def route(method: str, path: str) -> tuple[Operation, dict[str, str]]:
    """The operation serving `method path` (the path after /pinpoint, still percent-encoded) and its labels."""
    allowed = []
    for op in operations():
        m = op.pattern.fullmatch(path)
        if m is None:
            continue
        if op.method != method:
            allowed.append(op.method)
            continue
        return op, {k: unquote(v) for k, v in m.groupdict().items()}
    if allowed:
        raise MethodNotAllowedException(f"{method} is not allowed on {path}; allowed: {', '.join(sorted(set(allowed)))}")
    raise NotFoundException(f"no Pinpoint operation is served at {method} {path}")


def parse_input(op: Operation, labels: dict[str, str], query: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    shape = op.model.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    for member, member_shape in shape.members.items():
        where, name = member_shape.serialization.get("location"), member_shape.serialization.get("name", member)
        if where == "uri":
            params[member] = labels[_group(name)]
        elif where == "querystring":
            values = [v for k, v in query if k == name]
            if values:
                params[member] = _query_value(member, member_shape, values)
            elif member in shape.required_members:
                raise BadRequestException(f"{name}: a required query parameter")
    payload = shape.serialization.get("payload")
    if payload:
        if body.strip():
            params[payload] = decode(shape.members[payload], body)
        elif payload in shape.required_members:
            raise BadRequestException(f"{payload}: a request body is required")
    return params


def decode(shape: Shape, body: bytes) -> Any:
    """The body as the model's shape, checked by msgspec (types, required members, no unknown member), as
    plain dicts and lists; an error names the member by its path (`Item[3].Address`)."""
    try:
        return msgspec.to_builtins(msgspec.json.decode(body, type=_type(shape)))
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        field = path.rstrip("`").lstrip(".")
        raise BadRequestException(f"{shape.name}{'.' if field and field[0] != '[' else ''}{field}: {message}"
                                  if field else f"{shape.name}: {message}") from None
    except msgspec.DecodeError as exc:
        raise BadRequestException(f"the body is not JSON: {exc}") from None


_SCALARS: dict[str, Any] = {"string": str, "boolean": bool, "integer": int, "long": int, "double": float,
                            "float": float, "blob": str, "timestamp": str | float}


def _type(shape: Shape) -> Any:
    if shape.type_name == "structure":
        return _struct(shape.name)
    if shape.type_name == "list":
        return list[_type(shape.member)]  # type: ignore[misc]
    if shape.type_name == "map":
        return dict[str, _type(shape.value)]  # type: ignore[misc]
    return _SCALARS[shape.type_name]


@functools.cache
def _struct(name: str) -> type[msgspec.Struct]:
    """A msgspec Struct per structure of the model, made once: decoding 10,000 PutEvents events this way costs
    a small fraction of walking them with botocore's Python validator."""
    shape = service_model().shape_for(name)
    required = set(shape.required_members)
    fields = [(member, _type(member_shape)) if member in required else (member, _type(member_shape) | None, None)
              for member, member_shape in shape.members.items()]
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, omit_defaults=True)


def _query_value(member: str, shape: Shape, values: list[str]) -> Any:
    if shape.type_name == "list":
        return values
    value = values[-1]
    if shape.type_name == "boolean":
        if value not in ("true", "false"):
            raise BadRequestException(f"{member} must be true or false, got {value!r}")
        return value == "true"
    if shape.type_name == "integer":
        try:
            return int(value)
        except ValueError:
            raise BadRequestException(f"{member} must be an integer, got {value!r}") from None
    return value


def payload_of(op: Operation, output: dict[str, Any] | None) -> Any:
    """The response body: the output's payload member alone when the model names one."""
    shape = op.model.output_shape
    if shape is None or output is None:
        return {}
    payload = shape.serialization.get("payload")
    return output.get(payload, {}) if payload else output
