"""A small stand-in for Twilio's Messages API on loopback, spoken to by the real twilio SDK."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import BasicAuth, web


class FakeTwilio:
    """POST /2010-04-01/Accounts/{sid}/Messages.json with Basic auth, as api.twilio.com answers it.

    `fail_next` makes the next N requests answer 503; numbers in `invalid_numbers` get Twilio's
    400 / error 21211. Accepted messages are kept in `messages`.
    """

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "fake-auth-token") -> None:  # noqa: S107 - a fake
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, str]] = []
        self.requests = 0
        self.fail_next = 0
        self.invalid_numbers: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "more_info": "", "status": status},
                                 status=status)

    async def _create_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        header = request.headers.get("Authorization", "")
        try:
            auth = BasicAuth.decode(header)
        except ValueError:
            return self._error(401, 20003, "Authenticate")
        if (auth.login, auth.password) != (self.account_sid, self.auth_token) or \
                request.match_info["sid"] != self.account_sid:
            return self._error(401, 20003, "Authenticate")
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._error(503, 20500, "Service unavailable")
        form = await request.post()
        to, sender, body = str(form.get("To", "")), str(form.get("From", "")), str(form.get("Body", ""))
        if to in self.invalid_numbers:
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = "SM" + uuid.uuid4().hex
        self.messages.append({"sid": sid, "to": to, "from": sender, "body": body})
        answer: dict[str, Any] = {"sid": sid, "account_sid": self.account_sid, "to": to, "from": sender,
                                  "body": body, "status": "queued", "num_segments": "1", "direction": "outbound-api",
                                  "api_version": "2010-04-01", "uri": f"/2010-04-01/Accounts/{self.account_sid}"
                                  f"/Messages/{sid}.json"}
        return web.json_response(answer, status=201)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
