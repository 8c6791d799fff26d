"""Choose the SMS and email gateways from settings: the real provider when configured, else local."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from gateway_clients.email import EmailGateway, LocalEmail, SmtpEmail
from gateway_clients.sms import LocalSms, SmsGateway, TwilioSms

logger = logging.getLogger(__name__)


def local_outbox_dir(settings: Settings) -> Path:
    """Where the local gateways write messages: `<data_dir>/outbox`."""
    return settings.data_dir / "outbox"


def make_sms(settings: Settings) -> SmsGateway:
    sid, token, number = settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from_number
    if sid and token and number:
        return TwilioSms(sid, token.get_secret_value(), number, api_base=settings.twilio_api_base)
    if settings.is_production:
        logger.warning("Twilio is not configured: SMS (including sign-in codes) go to the local outbox file")
    return LocalSms(local_outbox_dir(settings))


def make_email(settings: Settings) -> EmailGateway:
    if settings.smtp_host:
        return SmtpEmail(
            settings.smtp_host, settings.smtp_port, settings.email_from, username=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
        )
    if settings.is_production:
        logger.warning("SMTP is not configured: email (including sign-in codes) goes to the local outbox file")
    return LocalEmail(local_outbox_dir(settings), settings.email_from)


@dataclass
class Messengers:
    """The pair of gateways the notification outbox delivers through."""

    sms: SmsGateway
    email: EmailGateway

    @classmethod
    def from_settings(cls, settings: Settings) -> Messengers:
        return cls(sms=make_sms(settings), email=make_email(settings))

    async def aclose(self) -> None:
        await self.sms.aclose()
        await self.email.aclose()
