"""One typed settings object, built once by the composition root from the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - refused in production
DEV_SIMULATOR_SECRET = "whsec_dev-simulator-0123456789abcdef"  # noqa: S105 - signs simulated webhooks only

# Settings read under a well-known name; every other field is read as PARTYPILOT_<FIELD>.
_PLAIN_NAMES = {
    "host", "port", "mongodb_uri", "redis_url", "jwt_secret",
    "stripe_secret_key", "stripe_publishable_key", "stripe_webhook_secret", "stripe_api_base",
    "razorpay_key_id", "razorpay_key_secret", "razorpay_webhook_secret", "razorpay_api_base",
    "twilio_account_sid", "twilio_auth_token", "twilio_from_number", "twilio_api_base",
    "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_starttls", "email_from",
    "cloudinary_url", "cloudinary_api_base", "google_maps_api_key", "google_maps_api_base",
}


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return field.upper() if field in _PLAIN_NAMES else f"PARTYPILOT_{field.upper()}"


class SettingsError(Exception):
    """The configuration is unusable; the message names the setting to fix."""


# Where a container orchestrator mounts secret files (docker compose `secrets:`, Kubernetes).
SECRETS_DIR = Path("/run/secrets")


class Settings(BaseSettings):
    """Everything the product can be configured with. Secrets are `SecretStr` so they never print.

    Built from the environment only by `from_env`; `Settings(...)` and `model_validate` read
    nothing but their arguments, so tests and tools build settings without the process leaking in.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        # Every field is read under its variable name (PARTYPILOT_<FIELD> or a plain one), exactly,
        # as docker compose passes it; code still names fields by attribute.
        alias_generator=AliasGenerator(validation_alias=lambda field: env_name(field)),
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=True,
        env_ignore_empty=True,  # `NAME=` in .env or compose means "not configured", as before
        # A .env is shared with docker compose, whose own variables are not settings: ignore them.
        dotenv_filtering="only_existing",
    )

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    mongodb_uri: str = "mongodb://127.0.0.1:27117/?directConnection=true"
    mongodb_db: str = "partypilot"
    redis_url: str = "redis://127.0.0.1:6391/0"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    log_level: str = "INFO"
    # text: one readable line per record; json: one JSON object per line for log shippers.
    # Unset: json in production, text otherwise (see `log_json`).
    log_format: Literal["text", "json"] | None = None
    data_dir: Path = Path(".data")
    frontend_dir: Path = Path(__file__).resolve().parent.parent / "frontend"
    public_url: str = "http://127.0.0.1:8080"
    # Socket.IO and CORS: an explicit allow-list. '*' would allow every site and an empty list
    # switches python-socketio's origin check off, so neither is accepted.
    # Comma-separated in the environment (NoDecode: not JSON, which pydantic-settings would expect).
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ("http://127.0.0.1:8080", "http://localhost:8080")
    trust_proxy: bool = False
    max_body_bytes: int = 256 * 1024
    # Development mode hands out sign-in codes in responses and signs with a public secret, so it
    # serves on loopback only unless this is set (a trusted LAN demo, knowingly).
    allow_dev_on_network: bool = False
    # Production refuses to start when sign-in codes would go to the local outbox file instead of
    # SMS (Twilio) or email (SMTP), unless the matching setting says that is intended.
    allow_local_sms: bool = False
    allow_local_email: bool = False

    # accounts
    dev_admin_email: str = "admin@partypilot.local"
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    otp_ttl_s: int = 300
    otp_max_attempts: int = 5
    otp_resend_cooldown_s: int = 30
    otp_per_destination_per_hour: int = 5
    otp_per_ip_per_hour: int = 20
    # A refresh token replaced this many seconds ago is accepted once more and answers with the
    # same successor (two tabs refreshing together, RFC 9700 §4.14.2); 0 switches that off.
    refresh_reuse_grace_s: float = Field(10.0, ge=0, le=60)
    # Anti-automation: orders and tracking links one customer may create per hour.
    orders_per_customer_per_hour: int = Field(20, ge=1)
    tracking_links_per_customer_per_hour: int = Field(30, ge=1)
    commission_rate_bp: int = Field(2000, ge=0, le=10000)  # platform share, basis points
    currency: str = "INR"
    deposit_rate_bp: int = Field(3000, ge=0, le=10000)
    service_areas_file: Path | None = None

    # dispatch
    ping_interval_s: float = 30.0
    offer_timeout_s: float = 30.0
    dispatch_radius_m: int = 5000
    dispatch_max_radius_m: int = 20000
    # sequential: one partner at a time; top_k: the best `dispatch_top_k` at once; broadcast: every
    # candidate within the radius at once (capped; see dispatch/offers.py). First accept wins.
    dispatch_strategy: Literal["sequential", "top_k", "broadcast"] = "sequential"
    dispatch_top_k: int = 3
    # Fairness: candidates whose ETA is within this many seconds of the best one count as equally
    # close, and the one idle longest is offered first (0: nearest first, ties by idle time).
    dispatch_fair_eta_s: int = Field(300, ge=0, le=3600)
    # An order nobody took waits for a partner and is retried after this, doubling up to the max
    # (and at once when a partner comes on duty or frees up within the maximum radius).
    dispatch_retry_s: float = Field(30.0, gt=0)
    dispatch_retry_max_s: float = Field(300.0, gt=0)
    # A partner whose last socket closed keeps a held offer this long (a reconnect within it keeps
    # the offer), then it is released and the cascade moves on.
    offer_disconnect_grace_s: float = Field(10.0, ge=0)
    # A partner without a live socket counts as reachable this long after a REST poll (open offers
    # or a location report).
    partner_poll_window_s: float = Field(45.0, gt=0)
    fleet_tick_s: float = 1.0
    # The venue's geofence: a fresh fix within this many metres of it (plus
    # the fix's own accuracy, up to this much again: GPS in a built-up street is often ±50-100 m)
    # offers the partner "I've arrived" as one tap; farther away it needs a reason and is flagged.
    arrival_radius_m: int = Field(150, ge=25, le=5000)
    simulate_partners: int = 12

    # Map tiles for every page's map ({z}/{x}/{y} template, handed to pages by GET /config.json).
    # OpenStreetMap's public tiles are for light use only: production sets its own provider, and
    # adds the provider's host to img-src in nginx.conf's Content-Security-Policy. The attribution
    # is plain text (shown escaped), as the provider's terms word it.
    map_tile_url: str = Field("https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                              pattern=r"^https?://[^/\s]+/\S*\{z\}\S*\{x\}\S*\{y\}\S*$")
    map_attribution: str = Field("© OpenStreetMap contributors", min_length=1, max_length=300)
    # How customer, partner and public pages write dates, times and money (a BCP 47 tag, handed to
    # pages by GET /config.json): en-IN writes "3 Dec 2026, 7:21 pm" and "₹1,23,456.00".
    locale: str = Field("en-IN", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)

    # outside services: empty means "use the local implementation"
    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    razorpay_api_base: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_api_base: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    email_from: str = "PartyPilot <no-reply@partypilot.local>"
    cloudinary_url: SecretStr | None = None
    cloudinary_api_base: str | None = None
    google_maps_api_key: SecretStr | None = None
    google_maps_api_base: str | None = None

    # arrival windows (api/windows.py): today's orders are "as soon as possible" within this many
    # minutes; later ones default to this local slot; dispatch starts the lead time before a window
    # opens, plus this share of the package's set-up time.
    asap_window_min: int = Field(90, ge=30, le=720)
    default_arrival_window: str = Field("10:00-13:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")
    # the slots the order form offers (local time, comma-separated); any window may still be sent
    arrival_slots: str = Field("08:00-10:00,10:00-13:00,13:00-16:00,16:00-19:00,19:00-22:00",
                               pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}(,\d{2}:\d{2}-\d{2}:\d{2})*$")
    dispatch_lead_min: int = Field(60, ge=0, le=24 * 60)
    setup_buffer_bp: int = Field(2500, ge=0, le=10000)

    # payments (docs/payments.md)
    # None: the simulator runs when no real provider is configured. Production runs it only when
    # this is set to true explicitly (a demo deployment); false switches it off.
    payments_simulator: bool | None = None
    payments_simulator_secret: SecretStr = SecretStr(DEV_SIMULATOR_SECRET)
    # Where the simulator POSTs its webhooks; default: this process's own /api/payments/webhooks/simulated.
    payments_simulator_webhook_url: str | None = None
    payment_timeout_s: float = Field(20.0, gt=0, le=120)
    # An order left unpaid this long is cancelled (and its customer told).
    payment_expiry_s: int = Field(30 * 60, ge=60)
    # Share of the paid amount refunded when an order is cancelled after a partner was assigned
    # (before that: everything; from en_route on: nothing unless an admin refunds).
    refund_after_assign_bp: int = Field(5000, ge=0, le=10000)
    # Stripe signs webhooks with a timestamp: older than this is refused, and so is a timestamp
    # this far in the future (clock skew beyond it means a forged or replayed header).
    webhook_tolerance_s: int = Field(300, ge=10, le=3600)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _no_wildcard(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or "*" in value:
            raise ValueError("list the allowed origins explicitly; '*' and an empty list are refused")
        return value

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def log_json(self) -> bool:
        """Whether logs are JSON lines: as configured, else in production only."""
        return self.log_format == "json" if self.log_format else self.is_production

    def secret_values(self) -> list[str]:
        """The configured secret values (for the log redactor: none of them is ever printed)."""
        values = (getattr(self, field) for field in type(self).model_fields)
        return [value.get_secret_value() for value in values if isinstance(value, SecretStr)]

    def check_exposure(self) -> None:
        """Refuse a development or test server on a non-loopback address (see allow_dev_on_network)."""
        if self.is_production or self.allow_dev_on_network or _is_loopback(self.host):
            return
        raise SettingsError(
            f"{env_name('host')}={self.host} would expose a {self.env} server (it returns sign-in codes and "
            f"signs with a public secret) to the network: serve on 127.0.0.1, set {env_name('env')}=production, "
            f"or set {env_name('allow_dev_on_network')}=true to accept that on a trusted network"
        )

    def check_production(self) -> None:
        """Refuse production settings that would be unsafe, naming the setting to fix."""
        if not self.is_production:
            return
        secret = self.jwt_secret.get_secret_value()
        if secret == DEV_JWT_SECRET or len(secret) < 32:
            raise SettingsError(
                f"{env_name('jwt_secret')} must be set to a random secret of at least 32 characters "
                "in production (the development default is refused)"
            )
        for origin in self.allowed_origins:
            if origin.startswith("http://127.0.0.1") or origin.startswith("http://localhost"):
                raise SettingsError(
                    f"{env_name('allowed_origins')} must list the public origins in production, "
                    f"not {origin}"
                )
            if not origin.startswith("https://"):
                raise SettingsError(
                    f"{env_name('allowed_origins')} must list https:// origins in production, not {origin}: "
                    "the refresh cookie is Secure and sign-in codes must not cross the network in clear"
                )
        if not self.public_url.startswith("https://"):
            raise SettingsError(
                f"{env_name('public_url')} must be an https:// URL in production, not {self.public_url}"
            )
        sms = bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from_number)
        if not sms and not self.allow_local_sms:
            raise SettingsError(
                f"no SMS provider is configured, so sign-in codes would go to a local file: set "
                f"{env_name('twilio_account_sid')}, {env_name('twilio_auth_token')} and "
                f"{env_name('twilio_from_number')}, or set {env_name('allow_local_sms')}=true if that is intended"
            )
        if not self.smtp_host and not self.allow_local_email:
            raise SettingsError(
                f"no SMTP server is configured, so sign-in codes would go to a local file: set "
                f"{env_name('smtp_host')}, or set {env_name('allow_local_email')}=true if that is intended"
            )
        real_payments = bool(self.stripe_secret_key) or bool(self.razorpay_key_id and self.razorpay_key_secret)
        if not real_payments and self.payments_simulator is not True:
            raise SettingsError(
                f"no payment provider is configured: set {env_name('stripe_secret_key')} or "
                f"{env_name('razorpay_key_id')} and {env_name('razorpay_key_secret')}, or set "
                f"{env_name('payments_simulator')}=true to run a demo with simulated payments"
            )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No os.environ source: the environment arrives as an argument of `from_env` (the
        # composition root passes os.environ, tests a dict), so nothing else reads it. The .env
        # file and the secrets directory are read only when `from_env` names them.
        return init_settings, dotenv_settings, file_secret_settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str], env_file: Path | None = None,
                 secrets_dir: Path | None = None, **overrides: Any) -> Settings:
        """Build settings and check them; a value comes from the first of, in order:

        `overrides`, `environ`, the `env_file` (parsed by python-dotenv as docker compose reads a
        .env: inline ` #` comments, single quotes literal, double quotes with escapes), and a file
        named like the variable in `secrets_dir` (e.g. /run/secrets/JWT_SECRET), when that exists.
        An empty value anywhere counts as unset.
        """
        given: dict[str, Any] = {field: environ[name] for field in cls.model_fields
                 if (name := env_name(field)) in environ and environ[name] != ""}
        given.update(overrides)
        secrets = secrets_dir if secrets_dir is not None and secrets_dir.is_dir() else None
        try:
            settings = cls(_env_file=env_file, _secrets_dir=secrets, **given)
        except ValidationError as exc:
            problems = "; ".join(f"{_loc_name(err['loc'])}: {err['msg']}" for err in exc.errors())
            raise SettingsError(f"invalid configuration: {problems}") from None
        except SourceError as exc:  # a secrets or .env entry the library could not read
            raise SettingsError(f"invalid configuration: {exc}") from None
        settings.check_exposure()
        settings.check_production()
        return settings


def _loc_name(loc: tuple[int | str, ...]) -> str:
    """The variable an error location refers to (errors name fields by alias, the variable)."""
    if not loc:
        return "?"
    first = str(loc[0])
    return env_name(first) if first in Settings.model_fields else first


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

