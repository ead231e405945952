"""Query parameters several routes share, declared with the bounds and formats the engine enforces so that
the OpenAPI document states them (the engine's checks stay the ones that answer, naming the field)."""
from __future__ import annotations

from typing import Annotated, get_args

from litestar.params import Parameter

from tidings.engine.platform.pagination import MAX_LIMIT
from tidings.engine.customers.schemas import ChannelType
from tidings.engine.platform.limits import INT64_MAX, INT64_MIN

# ge/le keep a 2**64 out of the database driver (a 400 naming the field); the documented bounds are the
# engine's own, stated in the schema.
LIMIT = Parameter(default=100, description=f"page size, 1-{MAX_LIMIT}", ge=INT64_MIN, le=INT64_MAX,
                  schema_extra={"minimum": 1, "maximum": MAX_LIMIT})
CURSOR = Parameter(default=None, description="the `next_cursor` of the previous page, as returned")
SINCE = Parameter(default=None, description="ISO-8601 / RFC 3339 timestamp (UTC when it has no offset)",
                  schema_extra={"format": "date-time"})
UNTIL = SINCE
WITHIN = Parameter(default=None, description="a duration: seconds, or a number with s, m, h, d or w (`90m`, `7d`)",
                   schema_extra={"pattern": r"^\s*0*[1-9][0-9]{0,8}[smhdw]?\s*$"})
CHANNEL_TYPES = list(get_args(ChannelType))
CHANNEL = Parameter(default=None, description="a channel type (either case)",
                    schema_extra={"enum": CHANNEL_TYPES + [t.lower() for t in CHANNEL_TYPES]})

# Every integer in a query string is compared with a 64-bit column: a larger one is a 400 naming the
# parameter (it used to reach the database driver and overflow there: a 500).
Int64 = Annotated[int, Parameter(ge=INT64_MIN, le=INT64_MAX)]
# `Int64 | None` would lose the bounds (Litestar reads Parameter only from the outermost Annotated).
OptionalInt64 = Annotated[int | None, Parameter(ge=INT64_MIN, le=INT64_MAX)]
