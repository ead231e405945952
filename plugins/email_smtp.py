"""Built-in channel ``smtp``: email through any SMTP server (aiosmtplib).

One connection per batch (connect, optionally STARTTLS/TLS and AUTH once,
then one transaction per message). Classification:

* connection / TLS / authentication failures: transient for every message
  of the batch (authentication failures too, since they are usually fixed by
  the operator without changing the messages);
* a recipient, sender or content refused with a 5xx reply: permanent for
  that message only; a 4xx reply (greylisting, mailbox busy): transient for
  that message only;
* the server dropping the connection mid-batch: the current and remaining
  messages fail transiently.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from engine.channels import (
    Channel,
    ChannelConfigError,
    ChannelType,
    ConfigField,
    OutgoingMessage,
    SendResult,
)
from engine.hookspecs import hookimpl

# Headers computed by the channel; a message may not override them.
_RESERVED_HEADERS = {
    "from",
    "to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-tidings-message-id",
}

_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]")


class SmtpChannel(Channel):
    name = "smtp"
    channel_type = ChannelType.EMAIL
    description = "Email through an SMTP server (STARTTLS, implicit TLS or plain)."
    default_rate_limit = 10.0
    config_fields = (
        ConfigField(name="host", required=True, description="SMTP server host name"),
        ConfigField(
            name="port",
            type="int",
            description="Server port; default 587 for starttls, 465 for tls, 25 for none",
        ),
        ConfigField(name="username", description="AUTH user name (no AUTH when empty)"),
        ConfigField(name="password", secret=True, description="AUTH password"),
        ConfigField(
            name="security",
            default="starttls",
            choices=("none", "starttls", "tls"),
            description="none: plain text; starttls: upgrade (required); tls: implicit TLS",
        ),
        ConfigField(name="from_address", required=True, description='e.g. "Acme <news@acme.io>"'),
        ConfigField(name="reply_to", description="Reply-To address"),
        ConfigField(
            name="message_id_domain",
            description="Domain part of Message-ID headers (default: domain of from_address)",
        ),
        ConfigField(name="validate_certs", type="bool", default=True),
        ConfigField(name="ca_file", description="PEM bundle to trust instead of system CAs"),
        ConfigField(name="timeout", type="float", default=30.0, description="Seconds per command"),
    )

    # -- message construction -----------------------------------------------
    def build_email(self, msg: OutgoingMessage, cfg: Mapping[str, Any]) -> EmailMessage:
        """Build the MIME message (exposed so previews show exactly what is sent)."""
        em = EmailMessage(policy=email.policy.SMTP)
        em["From"] = cfg["from_address"]
        em["To"] = msg.to
        if cfg.get("reply_to"):
            em["Reply-To"] = cfg["reply_to"]
        em["Subject"] = msg.subject or ""
        em["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        em["Message-ID"] = message_id_header(msg.message_id, _msgid_domain(cfg))
        em["X-Tidings-Message-Id"] = msg.message_id
        if msg.unsubscribe_url:
            em["List-Unsubscribe"] = f"<{msg.unsubscribe_url}>"
            em["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for key, value in msg.headers.items():
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by the channel and cannot be overridden")
            em[key] = value
        text, html = msg.text, msg.html
        if text is None and html is None:
            raise ValueError("email has neither a text nor an HTML part")
        if text is not None:
            em.set_content(text, subtype="plain", charset="utf-8")
            if html is not None:
                em.add_alternative(html, subtype="html", charset="utf-8")
        else:
            em.set_content(html, subtype="html", charset="utf-8")
        return em

    # -- sending ------------------------------------------------------------
    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)
        if not messages:
            return []
        try:
            sender = _bare_address(cfg["from_address"])
        except ValueError as exc:
            raise ChannelConfigError(f"from_address: {exc}") from None
        results: list[SendResult | None] = [None] * len(messages)

        # Build every message first: a bad message fails alone, permanently.
        built: list[tuple[int, EmailMessage]] = []
        for i, m in enumerate(messages):
            try:
                built.append((i, self.build_email(m, cfg)))
            except (ValueError, TypeError) as exc:
                results[i] = SendResult.failed(m.message_id, f"invalid message: {exc}", permanent=True)

        if built:
            client = self._client(cfg)
            try:
                await client.connect()
                if cfg.get("username"):
                    await client.login(cfg["username"], cfg.get("password") or "")
            except Exception as exc:  # connection, TLS, auth
                err = f"SMTP connection to {cfg['host']} failed: {_describe(exc)}"
                for i, _ in built:
                    results[i] = SendResult.failed(messages[i].message_id, err, permanent=False)
                await _close(client)
                return results  # type: ignore[return-value]

            dead: str | None = None
            for i, em in built:
                mid = messages[i].message_id
                if dead is not None:
                    results[i] = SendResult.failed(mid, dead, permanent=False)
                    continue
                try:
                    _, _ = await client.send_message(
                        em, sender=sender, recipients=[_bare_address(messages[i].to)]
                    )
                    results[i] = SendResult.sent(mid, em["Message-ID"])
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    codes = [r.code for r in exc.recipients]
                    text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
                    results[i] = SendResult.failed(
                        mid, f"recipient refused: {text}", permanent=all(c >= 500 for c in codes)
                    )
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code in (-1, 421) or isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                        dead = f"SMTP connection lost: {_describe(exc)}"
                        results[i] = SendResult.failed(mid, dead, permanent=False)
                    else:
                        results[i] = SendResult.failed(
                            mid, f"refused: {exc.code} {exc.message}", permanent=exc.code >= 500
                        )
                except ValueError as exc:  # unusable address
                    results[i] = SendResult.failed(mid, f"invalid address: {exc}", permanent=True)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    dead = f"SMTP connection lost: {_describe(exc)}"
                    results[i] = SendResult.failed(mid, dead, permanent=False)
            await _close(client)
        return results  # type: ignore[return-value]

    def _client(self, cfg: Mapping[str, Any]) -> aiosmtplib.SMTP:
        security = cfg["security"]
        port = cfg.get("port") or {"none": 25, "starttls": 587, "tls": 465}[security]
        tls_context = None
        if security != "none":
            tls_context = ssl.create_default_context(cafile=cfg.get("ca_file") or None)
            if not cfg["validate_certs"]:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        return aiosmtplib.SMTP(
            hostname=cfg["host"],
            port=port,
            use_tls=security == "tls",
            start_tls=True if security == "starttls" else False,
            validate_certs=cfg["validate_certs"],
            tls_context=tls_context,
            timeout=cfg["timeout"],
        )


def message_id_header(message_id: str, domain: str) -> str:
    """Stable RFC 5322 Message-ID derived from our message id."""
    local = _MSGID_UNSAFE.sub("-", message_id).strip(".") or "message"
    return f"<{local}@{domain}>"


def _msgid_domain(cfg: Mapping[str, Any]) -> str:
    if cfg.get("message_id_domain"):
        return cfg["message_id_domain"]
    addr = _bare_address(cfg["from_address"])
    return addr.rpartition("@")[2] or "tidings.local"


def _bare_address(value: str) -> str:
    _, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"not an email address: {value!r}")
    return addr


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except Exception:
        client.close()


__all__ = ["SmtpChannel", "message_id_header"]


@hookimpl
def register_channels() -> list[Channel]:
    return [SmtpChannel()]
