"""Query-parameter types shared by the routes."""
from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from engine.validation import INT64_MAX, INT64_MIN

# Every integer in a query string is compared with a 64-bit column: a larger one is a 400 naming the
# parameter (it used to reach the database driver and overflow there: a 500).
Int64 = Annotated[int, Parameter(ge=INT64_MIN, le=INT64_MAX)]
# `Int64 | None` would lose the bounds (Litestar reads Parameter only from the outermost Annotated).
OptionalInt64 = Annotated[int | None, Parameter(ge=INT64_MIN, le=INT64_MAX)]
