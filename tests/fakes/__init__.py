"""Fakes of outside services (small aiohttp apps on loopback) and helpers to read what the local
gateways delivered."""

from __future__ import annotations

import asyncio
import re
import time
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiohttp import web

from api import notifications
from core import keys
from core.settings import Settings
from gateway_clients.delivery import LocalOutboxFile
from gateway_clients.messaging import Messengers, local_outbox_dir

CODE = re.compile(r"\b(\d{6})\b")


def local_messages(source: web.Application | Settings, channel: str) -> list[dict[str, Any]]:
    """Everything the local SMS or email gateway has delivered for these settings (or this app's)."""
    settings = source if isinstance(source, Settings) else source[keys.SETTINGS]
    return LocalOutboxFile(local_outbox_dir(settings), channel).read()


async def flush_outbox(app: web.Application) -> int:
    """Run one outbox pass now instead of waiting for the worker's next poll."""
    return await notifications.deliver_due(app[keys.DB], Messengers.from_settings(app[keys.SETTINGS]))


async def wait_for_message(app: web.Application, channel: str, to: str, *, after: int = 0,
                           timeout: float = 5.0) -> dict[str, Any]:
    """The first message to `to` beyond the first `after` ones, delivered by the local gateway."""
    deadline = time.monotonic() + timeout
    while True:
        await flush_outbox(app)
        found = [m for m in local_messages(app, channel) if m["to"] == to]
        if len(found) > after:
            return found[after]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {channel} message to {to} within {timeout} s")
        await asyncio.sleep(0.05)


async def latest_code(app: web.Application, channel: str, to: str, timeout: float = 5.0) -> str:
    """The sign-in code most recently delivered to `to` (tests read it where a user would)."""
    deadline = time.monotonic() + timeout
    while True:
        await flush_outbox(app)
        undelivered = await app[keys.DB].outbox.count_documents(
            {"to": to, "status": {"$in": ["pending", "sending"]}})
        messages = [m for m in local_messages(app, channel) if m["to"] == to]
        if not undelivered and messages:
            # Codes have their own lane: a notice queued earlier may be delivered after the code.
            codes = [m for m in (CODE.search(msg["body"]) for msg in messages) if m]
            assert codes, "no message to this address carries a 6-digit code"
            return codes[-1].group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {channel} code for {to} within {timeout} s")
        await asyncio.sleep(0.05)


class SmtpSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.port = port
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()  # recipients answered with 550
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = BytesParser(policy=default_policy).parsebytes(envelope.content)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


async def sign_in(client: Any, **destination: str) -> dict[str, Any]:
    """Sign in through the real endpoints (send-otp, read the delivered code, verify-otp)."""
    app = app_of(client)
    resp = await client.post("/api/auth/send-otp", json=destination)
    assert resp.status == 200, await resp.text()
    channel, to = ("sms", destination["phone"]) if "phone" in destination else ("email", destination["email"].lower())
    code = await latest_code(app, channel, to)
    resp = await client.post("/api/auth/verify-otp", json={**destination, "code": code})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def app_of(client: Any) -> web.Application:
    """The application behind a test client."""
    app = client.app
    assert isinstance(app, web.Application)
    return app
