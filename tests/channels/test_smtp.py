"""Email over SMTP against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tidings.engine.channels.contract import ChannelType, OutgoingMessage, redact_config
from tidings.plugins.email_smtp import SmtpChannel
from .conftest import free_port


class Recorder:
    def __init__(self, refuse: set[str] = frozenset()):
        self.refuse = refuse
        self.messages: list[tuple[object, object]] = []  # (envelope, peer)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.peer))
        return "250 Message accepted"

    def parsed(self, i: int):
        return email.message_from_bytes(self.messages[i][0].content, policy=email.policy.default)


@pytest.fixture
def smtp_server():
    controllers = []

    def start(handler, **kwargs):
        c = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        c.start()
        controllers.append(c)
        return c

    yield start
    for c in controllers:
        c.stop()


def msg(i: int, to: str = None, **kw) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=f"msg-{i}",
        to=to or f"user{i}@example.com",
        channel_type=ChannelType.EMAIL,
        subject=kw.pop("subject", f"Hello {i}"),
        text=kw.pop("text", f"Plain text {i}"),
        html=kw.pop("html", f"<p>HTML {i}</p>"),
        **kw,
    )


def base_config(port: int, **kw) -> dict:
    return {"host": "127.0.0.1", "port": port, "security": "none",
            "from_address": "Acme <news@acme.example>", **kw}


async def test_batch_uses_one_connection_and_builds_proper_mime(smtp_server):
    rec = Recorder()
    c = smtp_server(rec)
    messages = [msg(1, unsubscribe_url="https://acme.example/u/1"), msg(2), msg(3)]
    results = await SmtpChannel().send_batch(messages, base_config(c.port, reply_to="help@acme.example"))

    assert [r.status for r in results] == ["sent"] * 3
    assert len(rec.messages) == 3
    assert len({peer for _, peer in rec.messages}) == 1, "all messages over one connection"

    env, _ = rec.messages[0]
    assert env.mail_from == "news@acme.example"
    assert env.rcpt_tos == ["user1@example.com"]
    m = rec.parsed(0)
    assert m.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in m.iter_parts()}
    assert parts["text/plain"].strip() == "Plain text 1"
    assert parts["text/html"].strip() == "<p>HTML 1</p>"
    assert m["Subject"] == "Hello 1"
    assert m["Reply-To"] == "help@acme.example"
    assert m["Message-ID"] == "<msg-1@acme.example>"
    assert results[0].provider_message_id == "<msg-1@acme.example>"
    assert m["List-Unsubscribe"] == "<https://acme.example/u/1>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert rec.parsed(1)["List-Unsubscribe"] is None


async def test_message_id_is_stable_across_retries(smtp_server):
    rec = Recorder()
    c = smtp_server(rec)
    ch = SmtpChannel()
    await ch.send_batch([msg(7)], base_config(c.port))
    await ch.send_batch([msg(7)], base_config(c.port))
    assert rec.parsed(0)["Message-ID"] == rec.parsed(1)["Message-ID"] == "<msg-7@acme.example>"


async def test_refused_recipient_fails_only_that_message_permanently(smtp_server):
    rec = Recorder(refuse={"nobody@example.com"})
    c = smtp_server(rec)
    results = await SmtpChannel().send_batch(
        [msg(1), msg(2, to="nobody@example.com"), msg(3)], base_config(c.port)
    )
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].permanent is True
    assert "550" in results[1].error
    assert [e.rcpt_tos for e, _ in rec.messages] == [["user1@example.com"], ["user3@example.com"]]


async def test_connection_failure_is_transient_for_all(closed_port):
    results = await SmtpChannel().send_batch([msg(1), msg(2)], base_config(closed_port, timeout=2))
    assert all(r.status == "failed" and r.permanent is False for r in results)
    assert "connection" in results[0].error.lower()


async def test_text_only_email_is_single_part(smtp_server):
    rec = Recorder()
    c = smtp_server(rec)
    m = OutgoingMessage(message_id="t", to="a@example.com", channel_type=ChannelType.EMAIL,
                        subject="S", text="only text")
    [r] = await SmtpChannel().send_batch([m], base_config(c.port))
    assert r.status == "sent"
    assert rec.parsed(0).get_content_type() == "text/plain"


def _server_tls(cert, key) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"mailer" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


async def test_starttls_with_auth(smtp_server, tls_cert):
    cert, key = tls_cert
    rec = Recorder()
    c = smtp_server(rec, tls_context=_server_tls(cert, key), require_starttls=True,
                    authenticator=_authenticator, auth_required=True)
    cfg = base_config(c.port, security="starttls", username="mailer", password="s3cret", ca_file=str(cert))
    results = await SmtpChannel().send_batch([msg(1), msg(2)], cfg)
    assert [r.status for r in results] == ["sent", "sent"], results
    assert len(rec.messages) == 2


async def test_wrong_password_fails_without_leaking_it(smtp_server, tls_cert):
    cert, key = tls_cert
    rec = Recorder()
    c = smtp_server(rec, tls_context=_server_tls(cert, key), require_starttls=True,
                    authenticator=_authenticator, auth_required=True)
    cfg = base_config(c.port, security="starttls", username="mailer", password="wrong-pw", ca_file=str(cert))
    results = await SmtpChannel().send_batch([msg(1)], cfg)
    assert results[0].status == "failed" and results[0].permanent is False
    assert "wrong-pw" not in results[0].error
    assert rec.messages == []
    assert redact_config(SmtpChannel(), cfg)["password"] == "***"


async def test_starttls_refuses_untrusted_certificate(smtp_server, tls_cert):
    cert, key = tls_cert
    rec = Recorder()
    c = smtp_server(rec, tls_context=_server_tls(cert, key), require_starttls=True)
    results = await SmtpChannel().send_batch([msg(1)], base_config(c.port, security="starttls"))
    assert results[0].status == "failed" and not results[0].permanent
    assert rec.messages == []


async def test_implicit_tls(smtp_server, tls_cert):
    cert, key = tls_cert
    rec = Recorder()
    c = smtp_server(rec, ssl_context=_server_tls(cert, key))
    cfg = base_config(c.port, security="tls", ca_file=str(cert))
    results = await SmtpChannel().send_batch([msg(1)], cfg)
    assert results[0].status == "sent", results
    assert rec.parsed(0)["Subject"] == "Hello 1"


async def test_header_injection_is_a_permanent_failure_of_that_message(smtp_server):
    rec = Recorder()
    c = smtp_server(rec)
    bad = msg(2, headers={"X-Campaign": "a\r\nBcc: victim@example.com"})
    results = await SmtpChannel().send_batch([msg(1), bad], base_config(c.port))
    assert results[0].status == "sent"
    assert results[1].status == "failed" and results[1].permanent
    assert len(rec.messages) == 1


# -- the composed MIME, read back by the stdlib parser; the connection pool ------------------------------


def test_composed_mime_survives_the_stdlib_parser():
    from tidings.plugins.email_smtp import compose

    long_subject = "Votre commande n°1042 est expédiée — suivez-la ici avant vendredi, et merci d'avoir choisi Acme"
    text = "Bonjour Zoé,\nvotre colis arrive.\n.\nA line starting with a dot, and a long one: " + "x" * 1200
    html = "<p>Bonjour <b>Zoé</b></p>\r\n<p>" + "é" * 300 + "</p>"
    m = msg(5, subject=long_subject, text=text, html=html, unsubscribe_url="https://t.example/t/u/" + "A" * 180,
            headers={"X-Campaign": "spring — été"})
    cfg = {"from_address": "Équipe Acme <news@acme.example>", "reply_to": "help@acme.example"}
    raw = compose(m, cfg)
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == long_subject
    assert parsed["From"].addresses[0].display_name == "Équipe Acme"
    assert parsed["From"].addresses[0].addr_spec == "news@acme.example"
    assert parsed["To"] == "user5@example.com" and parsed["Reply-To"] == "help@acme.example"
    assert parsed["Message-ID"] == "<msg-5@acme.example>" and parsed["X-Tidings-Message-Id"] == "msg-5"
    assert parsed["X-Campaign"] == "spring — été"
    assert parsed["List-Unsubscribe"] == "<https://t.example/t/u/" + "A" * 180 + ">"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Date"].datetime is not None and parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
    assert plain.get_content_charset() == rich.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"] == rich["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == text
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html.replace("\r\n", "\n")
    assert not parsed.defects and not plain.defects and not rich.defects

    ascii_only = email.message_from_bytes(compose(msg(6), cfg), policy=email.policy.default)
    assert [p["Content-Transfer-Encoding"] for p in ascii_only.iter_parts()] == ["7bit", "7bit"]
    assert ascii_only.get_body(("plain",)).get_content().strip() == "Plain text 6"
    single = email.message_from_bytes(compose(msg(7, text=None), cfg), policy=email.policy.default)
    assert single.get_content_type() == "text/html" and single.get_content().strip() == "<p>HTML 7</p>"
    # addresses that are not ASCII need SMTPUTF8: the stdlib path builds those
    assert compose(msg(8, to="zoé@exemple.fr"), cfg) is None
    assert SmtpChannel().build_email(msg(8, to="zoé@exemple.fr"), cfg)["To"] == "zoé@exemple.fr"


async def test_connections_are_pooled_across_batches_and_replaced_when_dropped():
    rec = Recorder()
    c = Controller(rec, hostname="127.0.0.1", port=free_port())
    c.start()
    cfg = base_config(c.port)
    channel = SmtpChannel()
    assert [r.status for r in await channel.send_batch([msg(1)], cfg)] == ["sent"]
    assert [r.status for r in await channel.send_batch([msg(2), msg(3)], cfg)] == ["sent", "sent"]
    assert len({peer for _, peer in rec.messages}) == 1, "the second batch reused the first one's connection"

    port = c.port
    c.stop()  # the server goes away (and closes our pooled connection); a new one listens on the same port
    rec2 = Recorder()
    c2 = Controller(rec2, hostname="127.0.0.1", port=port)
    c2.start()
    try:
        results = await channel.send_batch([msg(4), msg(5)], cfg)
        assert [r.status for r in results] == ["sent", "sent"], results
        assert [e.rcpt_tos for e, _ in rec2.messages] == [["user4@example.com"], ["user5@example.com"]]
    finally:
        c2.stop()


async def test_a_big_batch_goes_out_over_several_connections_each_message_once(smtp_server):
    rec = Recorder()
    c = smtp_server(rec)
    messages = [msg(i) for i in range(100)]
    results = await SmtpChannel().send_batch(messages, base_config(c.port, connections=4))

    assert [r.message_id for r in results] == [m.message_id for m in messages], "one result per message, in order"
    assert [r.status for r in results] == ["sent"] * 100
    received = sorted(e.rcpt_tos[0] for e, _ in rec.messages)
    assert received == sorted(f"user{i}@example.com" for i in range(100)), "each message exactly once"
    assert len({peer for _, peer in rec.messages}) == 4, "the batch used the pool's four connections"


class DropsAfter(Recorder):
    """Accepts `n` messages, then answers 421 (the server is closing the connection)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    async def handle_DATA(self, server, session, envelope):
        if len(self.messages) >= self.n:
            return "421 4.3.2 Service shutting down"
        return await super().handle_DATA(server, session, envelope)


async def test_a_server_closing_mid_batch_fails_the_rest_transiently_and_reports_every_message(smtp_server):
    rec = DropsAfter(30)
    c = smtp_server(rec)
    messages = [msg(i) for i in range(100)]
    results = await SmtpChannel().send_batch(messages, base_config(c.port, connections=4))

    assert [r.message_id for r in results] == [m.message_id for m in messages]
    sent = [r for r in results if r.status == "sent"]
    failed = [r for r in results if r.status == "failed"]
    assert len(sent) == len(rec.messages) >= 30, "what the server accepted is reported sent"
    assert len(sent) + len(failed) == 100
    assert failed and all(not r.permanent for r in failed), "the rest may be retried"
