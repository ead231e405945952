"""The one place that hears about every customer write, inside the write's own transaction.

Whatever changes users, endpoints or events tells this module before it commits, and this module tells
the listeners the domains above customers registered at start-up (`tidings.engine.wiring.wire`): segment
memberships (read-your-writes), the message ledger and journey entries. It imports nothing above
customers; a process that writes customers without wiring fails loudly instead of leaving segments stale.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Protocol

from sqlalchemy import Connection

# A user and an endpoint as the write path holds them (and as segments' documents are built from): a write
# hands what it just wrote to the listeners, so they need not read it back.
UserRow = namedtuple("UserRow", ["id", "user_id", "attributes", "metrics", "timezone", "locale"])
EndpointRow = namedtuple("EndpointRow", ["id", "user_pk", "endpoint_id", "channel", "address", "opt_out",
                                         "effective_date", "attributes", "metrics", "demographic", "location"])
HeldUsers = Mapping[int, Any]  # user pk -> UserRow
HeldEndpoints = Mapping[int, list[Any]]  # user pk -> its EndpointRows in id order (only the users it covers)


class CustomersChanged(Protocol):
    """Returns, when it knows them, each user's segment ids after the change (None: ask memberships_of)."""

    def __call__(self, conn: Connection, workspace_id: int, user_pks: list[int],
                 fields: Collection[str] | None = None, users: HeldUsers | None = None,
                 endpoints: HeldEndpoints | None = None) -> dict[int, list[str]] | None: ...


CustomersErased = Callable[[Connection, int, list[int]], None]
EventsRecorded = Callable[[Connection, int, list[dict]], None]
Listens = Callable[[Connection, int, tuple[str, ...]], bool]


@dataclass(frozen=True)
class Listener:
    """What one domain does on a write, each part optional, all in the write's transaction."""

    name: str
    customers_changed: CustomersChanged | None = None
    customers_erased: CustomersErased | None = None
    events_recorded: EventsRecorded | None = None
    # Tidings' own events that a listener writes in reaction to a write (segment history): only these
    # listeners hear them, so segments never re-check segments on their own events.
    own_events_recorded: EventsRecorded | None = None
    listens: Listens | None = None  # whether own events with these names would be read at all


class NotWired(RuntimeError):
    """A customer write came before tidings.engine.wiring.wire() registered the listeners."""


_listeners: list[Listener] = []
_memberships: list[Callable[[Connection, int, int], list[str]]] = []


def register(listener: Listener) -> None:
    """Add a listener (a listener of the same name is replaced in place: wiring twice is harmless).
    Listeners hear a write in the order they were registered."""
    for i, known in enumerate(_listeners):
        if known.name == listener.name:
            _listeners[i] = listener
            return
    _listeners.append(listener)


def register_memberships(read: Callable[[Connection, int, int], list[str]]) -> None:
    """The reader of a customer's segment ids (segments own them; a user's page shows them)."""
    _memberships[:] = [read]


def _wired() -> list[Listener]:
    if not _listeners:
        raise NotWired("the customer write path is not wired: call tidings.engine.wiring.wire() at start-up")
    return _listeners


def customers_changed(conn: Connection, workspace_id: int, user_pks: list[int],
                      fields: Collection[str] | None = None, users: HeldUsers | None = None,
                      endpoints: HeldEndpoints | None = None) -> dict[int, list[str]] | None:
    """Users, their endpoints or their events changed; re-evaluate what depends on them.
    `fields`: the user-level paths written, when only those changed (None: anything may have). `users`: every
    one of these users as the write left them, when the write holds them; `endpoints`: the endpoints of the
    users it covers (a user it does not cover is read). Returns each user's segment ids after the change
    when the memberships listener knows them (it read them to re-check), else None."""
    memberships = None
    for listener in _wired():
        if listener.customers_changed is not None:
            known = listener.customers_changed(conn, workspace_id, user_pks, fields, users, endpoints)
            if known is not None:
                memberships = known
    return memberships


def customers_erased(conn: Connection, workspace_id: int, user_pks: list[int]) -> None:
    """Users are about to be deleted; drop what refers to them."""
    for listener in _wired():
        if listener.customers_erased is not None:
            listener.customers_erased(conn, workspace_id, user_pks)


def events_recorded(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    """New events were stored (only new ids; duplicates never arrive here)."""
    for listener in _wired():
        if listener.events_recorded is not None:
            listener.events_recorded(conn, workspace_id, rows)


def listened(conn: Connection, workspace_id: int, names: tuple[str, ...]) -> bool:
    """Whether a listener of own events reads events with these names (so their rows are worth building)."""
    return any(listener.listens is not None and listener.listens(conn, workspace_id, names)
               for listener in _wired())


def own_events_recorded(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    """Tidings' own events written by a listener (segment history), one dict per event."""
    for listener in _wired():
        if listener.own_events_recorded is not None:
            listener.own_events_recorded(conn, workspace_id, rows)


def memberships_of(conn: Connection, workspace_id: int, user_pk: int) -> list[str]:
    """The segment ids the user belongs to."""
    _wired()
    return _memberships[0](conn, workspace_id, user_pk) if _memberships else []
