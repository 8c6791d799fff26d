"""Bench results: figures with targets and same-run baselines, a text table and a JSON file."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Op = Literal[">=", "<="]


@dataclass
class Figure:
    """One measured number, what it must reach, and (optionally) its same-run baseline."""

    name: str
    value: float | None
    unit: str
    op: Op | None = None
    target: float | None = None
    baseline: float | None = None
    ratio_target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def meets_target(self) -> bool | None:
        if self.value is None or self.op is None or self.target is None:
            return None
        return _holds(self.value, self.op, self.target)

    @property
    def meets_ratio(self) -> bool | None:
        ratio = self.ratio
        if ratio is None or self.ratio_target is None:
            return None
        return ratio >= self.ratio_target

    @property
    def status(self) -> str:
        checks = [c for c in (self.meets_target, self.meets_ratio) if c is not None]
        if self.value is None:
            return "n/a"
        if not checks:
            return "info"
        return "pass" if all(checks) else "FAIL"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, status=self.status)
        return out


def _holds(value: float, op: Op, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


@dataclass
class ScenarioResult:
    """What one scenario measured, or why it could not."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.skipped:
            return "skipped"
        statuses = {f.status for f in self.figures}
        return "FAIL" if "FAIL" in statuses else "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "status": self.status, "seconds": round(self.seconds, 1),
            "figures": [f.to_json() for f in self.figures], "details": self.details, "notes": self.notes,
            "skipped": self.skipped, "error": self.error,
        }


def fmt_number(value: float | None, unit: str = "") -> str:
    """Human figures: thousands separators, sensible precision, unit appended."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def fmt_target(figure: Figure) -> str:
    if figure.op is None or figure.target is None:
        return "-"
    return f"{figure.op} {fmt_number(figure.target, figure.unit)}"


def fmt_ratio(figure: Figure) -> str:
    ratio = figure.ratio
    if ratio is None:
        return "-"
    text = f"{ratio:.2f}"
    if figure.ratio_target is not None:
        text += f" (>= {figure.ratio_target:.2f})"
    return text


HEADERS = ("scenario", "figure", "value", "target", "baseline", "ratio (target)", "status")


def table_rows(results: list[ScenarioResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.error or result.skipped or not result.figures:
            reason = result.error or result.skipped or "no figures"
            rows.append((result.name, result.status.upper() + ": " + _one_line(reason), "", "", "", "", result.status))
            continue
        for figure in result.figures:
            rows.append((result.name, figure.name, fmt_number(figure.value, figure.unit), fmt_target(figure),
                         fmt_number(figure.baseline, figure.unit) if figure.baseline is not None else "-",
                         fmt_ratio(figure), figure.status))
    return rows


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def format_table(results: list[ScenarioResult]) -> str:
    """A fixed-width table of every figure, then each scenario's notes."""
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes: list[tuple[str, str]] = []
    for r in results:
        notes += [(r.name, f"error: {r.error}")] if r.error else []
        notes += [(r.name, f"{f.name}: {f.note}") for f in r.figures if f.note]
        notes += [(r.name, note) for note in r.notes]
    if notes:
        lines.append("")
        lines.extend(f"[{name}] {note}" for name, note in notes)
    return "\n".join(lines)


def write_json(path: Path, results: list[ScenarioResult], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "meta": {"python": platform.python_version(), "machine": platform.machine(), **meta},
        "scenarios": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation), None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
