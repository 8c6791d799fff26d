"""SMS and email gateways: the real Twilio SDK against a fake on loopback, real SMTP against aiosmtpd,
the local outbox files, and the settings-driven choice between them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from gateway_clients.delivery import DeliveryError, LocalOutboxFile
from gateway_clients.email import LocalEmail, SmtpEmail
from gateway_clients.messaging import Messengers
from gateway_clients.sms import LocalSms, TwilioSms
from partypilot.localservices import free_port
from tests.fakes import SmtpSink
from tests.fakes.twilio import FakeTwilio

FROM = "+15005550006"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port()).start()
    yield sink
    sink.stop()


def twilio_sms(fake: FakeTwilio, token: str | None = None) -> TwilioSms:
    return TwilioSms(fake.account_sid, token or fake.auth_token, FROM, api_base=fake.base_url, timeout_s=5)


async def test_twilio_sms_goes_through_the_real_sdk(twilio: FakeTwilio) -> None:
    sms = twilio_sms(twilio)
    try:
        sid = await sms.send("+919876543210", "Your order is on the way")
    finally:
        await sms.aclose()
    assert sid.startswith("SM")
    assert twilio.messages == [{"sid": sid, "to": "+919876543210", "from": FROM, "body": "Your order is on the way"}]


async def test_twilio_failures_are_classified_for_retry(twilio: FakeTwilio) -> None:
    sms = twilio_sms(twilio)
    try:
        twilio.fail_next = 1
        with pytest.raises(DeliveryError) as outage:
            await sms.send("+919876543210", "hi")
        assert not outage.value.permanent
        twilio.invalid_numbers.add("+919999999999")
        with pytest.raises(DeliveryError) as invalid:
            await sms.send("+919999999999", "hi")
        assert invalid.value.permanent
    finally:
        await sms.aclose()
    wrong_key = twilio_sms(twilio, token="wrong-token")
    try:
        with pytest.raises(DeliveryError) as denied:
            await wrong_key.send("+919876543210", "hi")
        assert not denied.value.permanent  # a credentials problem gets fixed by an operator; keep the message
    finally:
        await wrong_key.aclose()
    assert twilio.messages == []


async def test_twilio_unreachable_is_a_transient_failure() -> None:
    sms = TwilioSms("AC" + "1" * 32, "token", FROM, api_base=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(DeliveryError) as info:
            await sms.send("+919876543210", "hi")
    finally:
        await sms.aclose()
    assert not info.value.permanent


async def test_smtp_email_reaches_a_real_smtp_server(smtp: SmtpSink) -> None:
    email = SmtpEmail("127.0.0.1", smtp.port, "PartyPilot <no-reply@partypilot.test>")
    message_id = await email.send("asha@example.com", "Order received", "Hello Asha", message_id="abc123")
    assert message_id == "<abc123@partypilot.test>"
    [received] = smtp.messages
    assert received["To"] == "asha@example.com" and received["Subject"] == "Order received"
    assert received["From"] == "PartyPilot <no-reply@partypilot.test>" and received["Message-ID"] == message_id
    assert received.get_content().strip() == "Hello Asha"


async def test_smtp_down_is_transient_and_refused_recipient_is_permanent(smtp: SmtpSink) -> None:
    down = SmtpEmail("127.0.0.1", free_port(), "no-reply@partypilot.test", timeout_s=2)
    with pytest.raises(DeliveryError) as outage:
        await down.send("a@example.com", "s", "b")
    assert not outage.value.permanent
    smtp.refuse.add("nobody@example.com")
    with pytest.raises(DeliveryError) as refused:
        await SmtpEmail("127.0.0.1", smtp.port, "no-reply@partypilot.test").send("nobody@example.com", "s", "b")
    assert refused.value.permanent
    assert smtp.messages == []


async def test_local_gateways_write_the_outbox_file_and_log_no_body(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level("INFO", logger="gateway_clients")
    await LocalSms(tmp_path).send("+919876543210", "secret body 123456")
    await LocalEmail(tmp_path, "no-reply@partypilot.test").send("a@example.com", "Subject", "secret body 654321")
    [sms] = LocalOutboxFile(tmp_path, "sms").read()
    [email] = LocalOutboxFile(tmp_path, "email").read()
    assert sms["to"] == "+919876543210" and sms["body"] == "secret body 123456"
    assert email["to"] == "a@example.com" and email["subject"] == "Subject"
    assert "secret body" not in caplog.text and "+919876543210" not in caplog.text
    assert "local outbox" in caplog.text


async def test_settings_choose_the_real_gateways_only_when_configured(make_settings: Callable[..., Settings]) -> None:
    local = Messengers.from_settings(make_settings())
    assert isinstance(local.sms, LocalSms) and isinstance(local.email, LocalEmail)
    real = Messengers.from_settings(make_settings(
        twilio_account_sid="AC" + "2" * 32, twilio_auth_token="t", twilio_from_number=FROM,
        twilio_api_base="http://127.0.0.1:9", smtp_host="127.0.0.1", smtp_port=2525))
    assert isinstance(real.sms, TwilioSms) and isinstance(real.email, SmtpEmail)
    await real.aclose()
    half = Messengers.from_settings(make_settings(twilio_account_sid="AC" + "2" * 32))  # no token: local
    assert isinstance(half.sms, LocalSms)
