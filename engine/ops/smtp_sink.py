"""A local SMTP server for development: every mail it receives is kept as an .eml file."""
from __future__ import annotations

import email
import email.policy
import logging
from pathlib import Path

from aiosmtpd.controller import Controller

log = logging.getLogger("tidings.smtp")


class MailDrop:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = len(list(folder.glob("*.eml")))

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = self.folder / f"{self.count:06d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        log.info("mail to %s: %s", ", ".join(envelope.rcpt_tos), msg.get("Subject", ""))
        return "250 OK"


def start_sink(folder: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    controller = Controller(MailDrop(folder), hostname=host, port=port)
    controller.start()
    return controller
