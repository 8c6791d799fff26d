"""The dispatch-quality simulator's scenario: a small YAML or JSON file, validated into typed models.

Every field is described in docs/quality.md (a test checks that the page names each one). Times of
day are "HH:MM" on the simulated day; durations are simulated unless the name says `real`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_SCENARIO = DATA_DIR / "city_day.yaml"
TINY_SCENARIO = DATA_DIR / "tiny.yaml"
# The server accepts one fix a second per partner (dispatch/ingest.py MIN_INTERVAL_MS): partners
# never ping faster than this in real time, whatever the time scale, with room for +-10 % jitter.
MIN_PING_REAL_S = 1.25
# Below this, the app's 0.1 s offer-timer poll (dispatch.engine.Tuning) would dominate an offer's
# real lifetime and the measured figures would describe the poll, not the strategy.
MIN_OFFER_TIMEOUT_REAL_S = 0.15
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class ScenarioError(ValueError):
    """The scenario file is unusable; the message names the file and the field to fix."""


def minutes_of(hhmm: str) -> int:
    """"09:30" -> 570."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AreaSpec(_Strict):
    """Where partners and orders are: the first bundled service area, or a circle of our own."""

    bundled: bool = True
    center: tuple[float, float] | None = Field(None, description="[lat, lng] of a custom circular area")
    radius_m: float | None = Field(None, ge=500, le=50_000)
    timezone: str = "Asia/Kolkata"

    @model_validator(mode="after")
    def _one_kind(self) -> AreaSpec:
        custom = self.center is not None or self.radius_m is not None
        if self.bundled and custom:
            raise ValueError("give either bundled: true or center + radius_m (with bundled: false), not both")
        if not self.bundled and (self.center is None or self.radius_m is None):
            raise ValueError("a custom area needs both center [lat, lng] and radius_m")
        if self.center is not None and not (-80 <= self.center[0] <= 80 and -180 <= self.center[1] <= 180):
            raise ValueError("center must be [lat, lng] with lat in [-80, 80] and lng in [-180, 180]")
        return self


class DaySpec(_Strict):
    start: str = Field("09:00", pattern=_HHMM)
    hours: float = Field(gt=0, le=24)
    real_minutes: float = Field(gt=0, le=24 * 60, description="real minutes one simulated day takes")
    drain_min: float = Field(60, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _same_day(self) -> DaySpec:
        if minutes_of(self.start) + self.hours * 60 > 24 * 60:
            raise ValueError("the simulated day must end by 24:00 (start + hours)")
        return self


class ShiftSpec(_Strict):
    start: str = Field(pattern=_HHMM)
    end: str = Field(pattern=_HHMM)
    share: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ShiftSpec:
        if minutes_of(self.end) <= minutes_of(self.start):
            raise ValueError(f"shift {self.start}-{self.end} must end after it starts")
        return self

    @property
    def label(self) -> str:
        return f"{self.start}-{self.end}"


class PartnerSpec(_Strict):
    count: int = Field(ge=1, le=5000)
    speed_kmh: float = Field(22, gt=0, le=120)
    road_factor: float = Field(1.3, ge=1, le=3)
    shift_jitter_min: float = Field(10, ge=0, le=120)
    shifts: list[ShiftSpec] = Field(min_length=1)

    @field_validator("shifts")
    @classmethod
    def _shares(cls, shifts: list[ShiftSpec]) -> list[ShiftSpec]:
        total = sum(s.share for s in shifts)
        if abs(total - 1.0) > 0.01:
            raise ValueError(f"shift shares must add up to 1 (they add up to {total:.3f})")
        return shifts


class OrderSpec(_Strict):
    count: int = Field(ge=0, le=100_000)
    customers: int = Field(100, ge=1, le=10_000)
    by_hour: list[float] = Field(min_length=1, description="relative order rate per simulated hour of the day")
    window_min: float = Field(90, gt=0, le=24 * 60)
    setup_min: float = Field(30, ge=0, le=24 * 60)

    @field_validator("by_hour")
    @classmethod
    def _weights(cls, weights: list[float]) -> list[float]:
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError("by_hour weights must be finite, not negative, and not all zero")
        return weights


class ReplyDelaySpec(_Strict):
    """Lognormal: median `median_s`, shape `sigma`, clipped to [min_s, max_s] (simulated seconds)."""

    median_s: float = Field(gt=0, le=3600)
    sigma: float = Field(0.6, ge=0, le=3)
    min_s: float = Field(1, ge=0)
    max_s: float = Field(60, gt=0, le=3600)

    @model_validator(mode="after")
    def _bounds(self) -> ReplyDelaySpec:
        if self.min_s > self.max_s:
            raise ValueError("min_s must not exceed max_s")
        return self


class DisconnectSpec(_Strict):
    per_partner_hour: float = Field(0.05, ge=0, le=10)
    offline_min: tuple[float, float] = (1.0, 10.0)

    @field_validator("offline_min")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("offline_min is [shortest, longest] minutes, both positive, shortest first")
        return value


class BehaviourSpec(_Strict):
    accept_probability: float = Field(ge=0, le=1)
    ignore_share: float = Field(0.4, ge=0, le=1)
    reply_delay: ReplyDelaySpec
    disconnects: DisconnectSpec = DisconnectSpec()


class DispatchSpec(_Strict):
    """Product settings in simulated seconds; the runner divides the timers by the time scale."""

    offer_timeout_s: float = Field(30, gt=0)
    ping_interval_s: float = Field(30, gt=0)
    top_k: int = Field(3, ge=1, le=50)
    fair_eta_s: int = Field(300, ge=0, le=3600)
    radius_m: int = Field(5000, ge=100)
    max_radius_m: int = Field(20_000, ge=100)
    retry_s: float = Field(30, gt=0)
    retry_max_s: float = Field(300, gt=0)
    disconnect_grace_s: float = Field(10, ge=0)

    @model_validator(mode="after")
    def _radii(self) -> DispatchSpec:
        if self.max_radius_m < self.radius_m:
            raise ValueError("max_radius_m must be at least radius_m")
        return self


class Scenario(_Strict):
    """One simulated day: who works when, what customers order, how partners answer."""

    name: str = Field(min_length=1, max_length=80)
    seed: int = 1
    area: AreaSpec = AreaSpec()
    day: DaySpec
    partners: PartnerSpec
    orders: OrderSpec
    behaviour: BehaviourSpec
    dispatch: DispatchSpec = DispatchSpec()

    @model_validator(mode="after")
    def _fits_the_day(self) -> Scenario:
        day_start, day_end = minutes_of(self.day.start), minutes_of(self.day.start) + self.day.hours * 60
        for shift in self.partners.shifts:
            if minutes_of(shift.start) < day_start or minutes_of(shift.end) > day_end:
                raise ValueError(f"shift {shift.label} lies outside the day ({self.day.start} + {self.day.hours:g} h)")
        hours = math.ceil(self.day.hours)
        if len(self.orders.by_hour) != hours:
            raise ValueError(f"orders.by_hour needs one weight per simulated hour: {hours}, "
                             f"not {len(self.orders.by_hour)}")
        if self.offer_timeout_real_s < MIN_OFFER_TIMEOUT_REAL_S:
            raise ValueError(f"dispatch.offer_timeout_s / time scale is {self.offer_timeout_real_s:.3f} real s, below "
                             f"{MIN_OFFER_TIMEOUT_REAL_S} s: raise day.real_minutes or dispatch.offer_timeout_s")
        return self

    # --- the accelerated clock ---------------------------------------------------------------

    @property
    def scale(self) -> float:
        """Simulated seconds per real second."""
        return self.day.hours * 60 / self.day.real_minutes

    @property
    def day_s(self) -> float:
        return self.day.hours * 3600

    @property
    def offer_timeout_real_s(self) -> float:
        return self.dispatch.offer_timeout_s / self.scale

    @property
    def ping_real_s(self) -> float:
        return max(self.dispatch.ping_interval_s / self.scale, MIN_PING_REAL_S)

    def at(self, hhmm: str) -> float:
        """Simulated seconds from the day's start to `hhmm`."""
        return (minutes_of(hhmm) - minutes_of(self.day.start)) * 60.0

    def clock_label(self, sim_s: float) -> str:
        minutes = int(minutes_of(self.day.start) + sim_s // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    def app_env(self, strategy: str) -> dict[str, str]:
        """The product settings (environment) of one strategy's app process, timers scaled."""
        d, scale = self.dispatch, self.scale
        return {
            "PARTYPILOT_DISPATCH_STRATEGY": strategy,
            "PARTYPILOT_OFFER_TIMEOUT_S": f"{d.offer_timeout_s / scale:.4f}",
            "PARTYPILOT_PING_INTERVAL_S": f"{self.ping_real_s:.4f}",
            "PARTYPILOT_DISPATCH_TOP_K": str(d.top_k),
            "PARTYPILOT_DISPATCH_FAIR_ETA_S": str(d.fair_eta_s),
            "PARTYPILOT_DISPATCH_RADIUS_M": str(d.radius_m),
            "PARTYPILOT_DISPATCH_MAX_RADIUS_M": str(d.max_radius_m),
            "PARTYPILOT_DISPATCH_RETRY_S": f"{d.retry_s / scale:.4f}",
            "PARTYPILOT_DISPATCH_RETRY_MAX_S": f"{d.retry_max_s / scale:.4f}",
            "PARTYPILOT_OFFER_DISCONNECT_GRACE_S": f"{d.disconnect_grace_s / scale:.4f}",
            "PARTYPILOT_PAYMENTS_SIMULATOR": "true",
        }


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate already-parsed data; ScenarioError lists every problem with its field path."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the scenario must be a mapping of fields, not {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ScenarioError(f"{source}: invalid scenario: {problems}") from None


def load_scenario(path: Path) -> Scenario:
    """Read a .yaml/.yml or .json scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                            f"{exc}") from None
    return parse_scenario(data, str(path))


def field_paths(model: type[BaseModel] = Scenario, prefix: str = "") -> list[str]:
    """Every field of the scenario format as a dotted path (docs/quality.md must name each)."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        inner = info.annotation
        if inner is not None:
            args = getattr(inner, "__args__", ())
            for candidate in (inner, *args):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    out.extend(field_paths(candidate, path + "."))
    return out
