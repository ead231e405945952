"""The one JsonLogic evaluator (datalogic-py) of Tidings: segment rules and journey filters share it."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import datalogic_py
import msgspec

ENGINE = datalogic_py.Engine()


@lru_cache(maxsize=512)
def _compiled(text: str) -> datalogic_py.Rule:
    return ENGINE.compile(msgspec.json.decode(text))


def compiled(rule: Any) -> datalogic_py.Rule:
    """`rule` compiled once (remembered by its JSON text: the same filter is evaluated for every member)."""
    return _compiled(msgspec.json.encode(rule).decode())
