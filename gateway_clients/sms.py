"""Text messages: the `SmsGateway` interface, Twilio through its official SDK, and a local outbox."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from gateway_clients.delivery import DeliveryError, LocalOutboxFile, mask_phone

logger = logging.getLogger(__name__)

TWILIO_TIMEOUT_S = 15.0
# Twilio answers 4xx for requests that can never succeed (bad number, unverified recipient...),
# except these, which a later attempt may get through: throttling and credential trouble.
_RETRYABLE_4XX = frozenset({401, 403, 408, 409, 429})
# The SDK reads TWILIO_* variables from os.environ unless handed a mapping; an empty one would
# count as "none given", so it gets one harmless entry. Our settings are the only configuration.
_NO_ENVIRONMENT = {"PARTYPILOT": "settings"}


class SmsGateway(Protocol):
    """Sends one text message; raises DeliveryError when it cannot."""

    name: str

    async def send(self, to: str, body: str) -> str:
        """Deliver `body` to the E.164 number `to`; return the provider's message id."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class TwilioSms:
    """SMS through Twilio's Python SDK and its asyncio HTTP client.

    `api_base` replaces https://api.twilio.com (tests point it at a fake on loopback).
    """

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, from_number: str, *, api_base: str | None = None,
                 timeout_s: float = TWILIO_TIMEOUT_S) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from = from_number
        self._api_base = api_base.rstrip("/") if api_base else None
        self._timeout_s = timeout_s
        self._client: Any = None
        self._http: Any = None

    def _ensure_client(self) -> Any:
        # Built on first use: the SDK's HTTP client opens an aiohttp session, which must happen
        # inside the running event loop.
        if self._client is None:
            from twilio.http.async_http_client import AsyncTwilioHttpClient
            from twilio.rest import Client

            self._http = AsyncTwilioHttpClient(timeout=self._timeout_s)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http,
                                  environment=dict(_NO_ENVIRONMENT))
            if self._api_base:
                self._client.api.base_url = self._api_base
        return self._client

    async def send(self, to: str, body: str) -> str:
        from twilio.base.exceptions import TwilioException, TwilioRestException

        client = self._ensure_client()
        try:
            async with asyncio.timeout(self._timeout_s):
                message = await client.messages.create_async(to=to, from_=self._from, body=body)
        except TwilioRestException as exc:
            permanent = 400 <= exc.status < 500 and exc.status not in _RETRYABLE_4XX
            raise DeliveryError(f"twilio answered {exc.status} (code {exc.code})", permanent=permanent) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"twilio unreachable: {type(exc).__name__}") from None
        except TwilioException as exc:
            raise DeliveryError(f"twilio client error: {type(exc).__name__}") from None
        logger.info("sms to %s accepted by twilio as %s", mask_phone(to), message.sid)
        return str(message.sid)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None


class LocalSms:
    """Offline SMS: appends each message to `<folder>/sms.jsonl`; the log gets no body."""

    name = "local"

    def __init__(self, folder: Path) -> None:
        self.outbox = LocalOutboxFile(folder, "sms")

    async def send(self, to: str, body: str) -> str:
        message_id = await self.outbox.append({"to": to, "body": body})
        logger.info("sms to %s written to the local outbox %s", mask_phone(to), self.outbox.path)
        return message_id

    async def aclose(self) -> None:
        return None
