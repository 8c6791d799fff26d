"""Payments: the `PaymentProvider` interface every gateway implements, and the choice among them.

Three implementations:
- `gateway_clients.stripe_payments.StripePayments`: Stripe PaymentIntents through the official SDK;
- `gateway_clients.razorpay_payments.RazorpayPayments`: Razorpay Orders through the official SDK;
- `gateway_clients.simulated_payments.SimulatedPayments`: the offline stand-in, with its own
  checkout step and webhooks signed with a local secret.

Amounts are integer minor units (paise, cents) with an ISO currency code, everywhere. Every call
that reaches a provider has a timeout; a provider that times out or answers 5xx raises
`PaymentError(retryable=True)`, a refusal that a retry cannot fix raises it with `retryable=False`.
The SDKs block: their calls run in a worker thread, never on the event loop.

    PaymentError          the provider failed or refused (retryable tells which)
    SignatureError        a webhook or checkout signature does not verify
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from core.settings import Settings

logger = logging.getLogger(__name__)

ProviderName = Literal["stripe", "razorpay", "simulated"]
# What a provider says about a payment, in our words.
ProviderStatus = Literal["pending", "succeeded", "failed"]
RefundStatus = Literal["pending", "succeeded", "failed"]
EventKind = Literal["payment_succeeded", "payment_failed", "refund_succeeded", "refund_failed", "ignored"]

PROVIDER_TIMEOUT_S = 20.0
T = TypeVar("T")


class PaymentError(Exception):
    """The provider could not do what was asked. `retryable`: a later identical call may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class SignatureError(Exception):
    """A webhook or checkout signature did not verify (tampered, wrong secret, too old or too new)."""


@dataclass(frozen=True)
class CheckoutRequest:
    """Ask the provider to collect `amount` for our payment row `payment_id` of `order_id`."""

    payment_id: str
    order_id: str
    customer_id: str
    kind: str  # deposit | full | balance
    amount: int
    currency: str
    # Sent as the provider's idempotency key (Stripe) or receipt (Razorpay): the same key never
    # creates a second intent or order.
    idempotency_key: str
    description: str = ""


@dataclass(frozen=True)
class ProviderCheckout:
    """What the customer's page needs to pay, and the provider's id for the payment."""

    provider_payment_id: str  # Stripe pi_..., Razorpay order_..., simulated sim_pi_...
    amount: int
    currency: str
    client_secret: str | None = None  # Stripe and the simulator; Razorpay has none


@dataclass(frozen=True)
class ProviderPayment:
    """The provider's current view of one payment (a re-read, the truth when order matters)."""

    provider_payment_id: str
    status: ProviderStatus
    amount: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The captured charge the refunds go against: Stripe's latest_charge, Razorpay's pay_...
    charge_id: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class ProviderRefund:
    provider_refund_id: str
    amount: int
    status: RefundStatus


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook, normalised. `kind` is "ignored" for event types we do not act on."""

    event_id: str
    type: str  # the provider's own name, e.g. payment_intent.succeeded, payment.captured
    kind: EventKind
    provider_payment_id: str | None = None
    charge_id: str | None = None
    provider_refund_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    failure_message: str | None = None


class PaymentProvider(Protocol):
    """One payment gateway. Implementations hold no per-order state of ours."""

    name: ProviderName
    # What the browser needs to open the provider's checkout: Stripe's publishable key,
    # Razorpay's key id, None for the simulator.
    public_key: str | None

    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        """Create (or, for the same idempotency key, return again) the provider's payment object."""
        ...

    async def fetch(self, provider_payment_id: str) -> ProviderPayment:
        """Re-read a payment from the provider."""
        ...

    async def refund(self, provider_payment_id: str, *, charge_id: str | None, amount: int,
                     idempotency_key: str, reason: str) -> ProviderRefund:
        """Refund `amount` of a captured payment; the same key never refunds twice."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify the raw body's signature and parse it; raises SignatureError."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


async def call_blocking(fn: Callable[[], T], *, timeout_s: float, what: str) -> T:
    """Run a blocking SDK call in a worker thread with a deadline.

    A call that overruns raises a retryable PaymentError; the thread finishes in the background
    (threads cannot be cancelled), and the idempotency key makes the retry safe.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(fn)
    except TimeoutError:
        raise PaymentError(f"{what}: the provider did not answer within {timeout_s:.0f} s", retryable=True) from None


def configured_providers(settings: Settings) -> tuple[ProviderName, ...]:
    """Which providers these settings enable: the real ones with keys, else the simulator."""
    names: list[ProviderName] = []
    if settings.stripe_secret_key:
        names.append("stripe")
    if settings.razorpay_key_id and settings.razorpay_key_secret:
        names.append("razorpay")
    simulator = settings.payments_simulator
    if simulator is True or (simulator is None and not names):
        names.append("simulated")
    return tuple(names)


def make_payment_providers(settings: Settings, *, simulator_db: Any = None) -> dict[str, PaymentProvider]:
    """Build every configured provider. `simulator_db` is the MongoDB database the simulator keeps its
    own records in (it plays a provider with state of its own)."""
    providers: dict[str, PaymentProvider] = {}
    for name in configured_providers(settings):
        if name == "stripe":
            from gateway_clients.stripe_payments import StripePayments

            providers[name] = StripePayments.from_settings(settings)
        elif name == "razorpay":
            from gateway_clients.razorpay_payments import RazorpayPayments

            providers[name] = RazorpayPayments.from_settings(settings)
        else:
            from gateway_clients.simulated_payments import SimulatedPayments

            if simulator_db is None:
                raise ValueError("the payment simulator needs a database")
            providers[name] = SimulatedPayments.from_settings(settings, simulator_db)
    return providers
