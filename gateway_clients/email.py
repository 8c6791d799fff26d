"""Email: the `EmailGateway` interface, SMTP through aiosmtplib, and a local outbox."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gateway_clients.delivery import DeliveryError, LocalOutboxFile, mask_email

logger = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 15.0


class EmailGateway(Protocol):
    """Sends one plain-text email; raises DeliveryError when it cannot."""

    name: str

    async def send(self, to: str, subject: str, body: str, *, message_id: str | None = None) -> str:
        """Deliver the message; return its Message-ID. A stable `message_id` lets mail clients
        fold a rare duplicate delivery into one message."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def build_message(sender: str, to: str, subject: str, body: str, message_id: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    domain = sender.rpartition("@")[2].rstrip(">") or "partypilot.local"
    message["Message-ID"] = f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
    message.set_content(body)
    return message


class SmtpEmail:
    """Email through an SMTP relay (one connection per message; the outbox worker sends serially)."""

    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 password: str | None = None, starttls: bool = False, timeout_s: float = SMTP_TIMEOUT_S) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_s = timeout_s

    async def send(self, to: str, subject: str, body: str, *, message_id: str | None = None) -> str:
        message = build_message(self._sender, to, subject, body, message_id)
        try:
            await aiosmtplib.send(
                message, hostname=self._host, port=self._port, username=self._username,
                password=self._password, start_tls=self._starttls, timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError("the SMTP server refused the recipient", permanent=all(
                err.code >= 500 for err in exc.recipients)) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is a permanent refusal of this message; 4xx and everything else are transient.
            raise DeliveryError(f"SMTP answered {exc.code}", permanent=exc.code >= 500 and not isinstance(
                exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPConnectResponseError)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"SMTP server unreachable: {type(exc).__name__}") from None
        logger.info("email to %s handed to %s:%s", mask_email(to), self._host, self._port)
        return str(message["Message-ID"])

    async def aclose(self) -> None:
        return None


class LocalEmail:
    """Offline email: appends each message to `<folder>/email.jsonl`; the log gets no body."""

    name = "local"

    def __init__(self, folder: Path, sender: str) -> None:
        self.outbox = LocalOutboxFile(folder, "email")
        self._sender = sender

    async def send(self, to: str, subject: str, body: str, *, message_id: str | None = None) -> str:
        record_id = await self.outbox.append({"from": self._sender, "to": to, "subject": subject, "body": body,
                                              "message_id": message_id})
        logger.info("email to %s written to the local outbox %s", mask_email(to), self.outbox.path)
        return record_id

    async def aclose(self) -> None:
        return None
