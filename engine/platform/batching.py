"""Helpers for all-or-nothing batches: collect every item's error first, write only when none."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from tidings.engine.platform.errors import BatchRejected, TidingsError
from tidings.engine.platform.limits import check_batch_size

T = TypeVar("T")
# SQLite allows 32,766 bound parameters; stay well under it for IN (...) lookups.
CHUNK = 900


def chunks(seq: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def validate_all(items: Iterable[T], check: Callable[[int, T], None], id_of: Callable[[T], str], id_name: str) -> None:
    """Run `check` on every item; raise one BatchRejected naming each bad item, or nothing."""
    errors: list[dict[str, Any]] = []
    originals: list[TidingsError] = []
    total = 0
    for index, item in enumerate(items):
        total += 1
        try:
            check(index, item)
        except TidingsError as exc:
            errors.append({"index": index, id_name: id_of(item), "field": exc.field, "message": exc.message})
            originals.append(exc)
    if errors:
        raise BatchRejected(errors, total, originals)


def single(fn: Callable[[], T]) -> T:
    """Run a one-item batch and surface its error as a plain field error, not a batch report."""
    try:
        return fn()
    except BatchRejected as exc:
        if not exc.originals:
            raise
        raise exc.originals[0] from None


def validate_batch(items: Sequence[T], check: Callable[[int, T], None], id_name: str) -> None:
    """A batch's size limit, then every item's own checks (items name themselves by `id_name`)."""
    check_batch_size(len(items))
    validate_all(items, check, lambda i: getattr(i, id_name), id_name)
