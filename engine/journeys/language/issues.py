"""Compile problems: collected, never raised one by one, so a user sees every mistake in a file at once."""
from __future__ import annotations

from typing import NamedTuple


class Pos(NamedTuple):
    """A place in a YAML file, 1-based like editors show it."""

    line: int
    column: int


class CompileIssue(NamedTuple):
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class JourneyCompileError(ValueError):
    """Raised with every problem found; ``.errors`` is sorted by file, line and column."""

    def __init__(self, errors: list[CompileIssue]):
        self.errors = sorted(errors, key=lambda e: (e.path, e.line, e.column, e.message))
        super().__init__("\n".join(str(e) for e in self.errors))


class Issues:
    """Collects problems for one file; `raise_if_any` turns them into one JourneyCompileError."""

    def __init__(self, path: str):
        self.path = path
        self.items: list[CompileIssue] = []

    def add(self, pos: Pos | None, message: str) -> None:
        pos = pos or Pos(1, 1)
        self.items.append(CompileIssue(self.path, pos.line, pos.column, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise JourneyCompileError(self.items)
