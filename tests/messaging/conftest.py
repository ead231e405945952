"""Real parts for messaging tests: an aiosmtpd server on loopback and helpers to seed customers."""
from __future__ import annotations

import email
import email.policy
import time
from collections import Counter

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from tidings.engine.customers.tables import users
from tidings.engine.ops.devstack import free_port  # noqa: F401  (tests import it from here)



class Inbox:
    """Every mail the sink accepted, with its arrival time (for rate checks)."""

    def __init__(self):
        self.mails: list[tuple[float, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((time.monotonic(), list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self, i: int = -1):
        return email.message_from_bytes(self.mails[i][2], policy=email.policy.default)

    def to(self, address: str):
        return [email.message_from_bytes(c, policy=email.policy.default) for _, r, c in self.mails if address in r]

    def per_recipient(self) -> Counter:
        """recipient -> how many mails reached it."""
        return Counter(r for _, rcpts, _ in self.mails for r in rcpts)

    def per_recipient_and_subject(self) -> Counter:
        """(recipient, subject) -> how many mails reached it."""
        return Counter((r, email.message_from_bytes(c, policy=email.policy.default)["Subject"])
                       for _, rcpts, c in self.mails for r in rcpts)


@pytest.fixture
def smtp_sink(monkeypatch):
    """An SMTP server on 127.0.0.1 made the environment's default EMAIL channel."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("TIDINGS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(port))
    monkeypatch.setenv("TIDINGS_SMTP_SECURITY", "none")
    monkeypatch.setenv("TIDINGS_SMTP_FROM", "Acme <news@acme.example>")
    monkeypatch.setenv("TIDINGS_SMTP_RATE_LIMIT", "1000")
    monkeypatch.setenv("TIDINGS_PUBLIC_URL", "https://tidings.acme.example")
    inbox.port = port
    yield inbox
    controller.stop()


def seed(api, user_id: str, *, attributes=None, endpoints=(), locale=None) -> None:
    """A user and its endpoints through the public API: endpoints are (id, channel, address[, opt_out])."""
    body = {"attributes": attributes or {}}
    if locale:
        body["locale"] = locale
    assert api.put(f"/v1/users/{user_id}", json=body).status_code == 200
    for ep in endpoints:
        eid, channel, address, *rest = ep
        r = api.put(f"/v1/endpoints/{eid}", json={"channel": channel, "address": address, "user_id": user_id,
                                                 "opt_out": bool(rest and rest[0])})
        assert r.status_code == 200, r.text


def user_pk(db, user_id: str) -> int:
    with db.connect() as conn:
        return conn.execute(select(users.c.id).where(users.c.user_id == user_id)).scalar_one()
