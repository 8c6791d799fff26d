"""The simulator's report: REPORT.md with the strategies side by side, PNG plots, results.json."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtests.quality_metrics import Goal, StrategyMetrics, goals
from loadtests.quality_scenario import Scenario

Row = tuple[str, Callable[[StrategyMetrics], str]]


def _num(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{format(value, spec)}{unit}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _minutes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s ({value / 60:.1f} min)"


def _real_ms(m: StrategyMetrics, sim_s: float | None) -> float | None:
    return None if sim_s is None else 1000 * sim_s / m.scale


def _replies(m: StrategyMetrics, *names: str) -> str:
    return str(sum(m.replies.get(n, 0) for n in names))


def _late(m: StrategyMetrics) -> str:
    return str(sum(v for k, v in m.replies.items() if k.startswith("revoked_")))


SECTIONS: list[tuple[str, list[Row]]] = [
    ("Order → assignment (simulated time; in offer timeouts)", [
        ("p50", lambda m: f"{_num(m.assign_p50_s)} s = {_num(m.assign_p50_timeouts, '.2f')} timeouts"),
        ("p95", lambda m: f"{_num(m.assign_p95_s)} s = {_num(m.assign_p95_timeouts, '.2f')} timeouts"),
        ("max", lambda m: _minutes(m.assign_max_s)),
        ("placed → first offer p50 / p95 (the server's own latency, scaled)",
         lambda m: f"{_num(m.first_offer_p50_s)} / {_num(m.first_offer_p95_s)} s (real "
                   f"{_num(_real_ms(m, m.first_offer_p50_s))} / {_num(_real_ms(m, m.first_offer_p95_s))} ms)"),
    ]),
    ("Orders assigned without an admin", [
        ("share of orders placed", lambda m: _pct(m.assigned_share)),
        ("assigned by dispatch / placed", lambda m: f"{m.assigned} / {m.orders}"),
        ("assigned by an admin", lambda m: str(m.assigned_by_admin)),
        ("still without a partner at the end", lambda m: str(m.unassigned)),
        ("waited for a partner (a pass within the maximum radius found nobody)", lambda m: str(m.alerted)),
    ]),
    ("Offers", [
        ("offers per assignment", lambda m: _num(m.offers_per_assignment, ".2f")),
        ("partner-offers received by the phones", lambda m: str(m.offers_sent)),
        ("audit sample: orders / offers in the trail / offers the phones got",
         lambda m: f"{m.audit_sample} / {m.audit_offers_sent} / {m.audit_offers_seen}"),
        ("audit sample: offers sent to a partner without a socket", lambda m: str(m.offers_to_offline)),
        ("audit sample: accepts refused, by code",
         lambda m: ", ".join(f"{k} {v}" for k, v in sorted(m.refused_accepts.items())) or "none"),
        ("replies: accepted and won", lambda m: _replies(m, "assigned")),
        ("replies: declined", lambda m: _replies(m, "declined")),
        ("left to time out (ignored)", lambda m: _replies(m, "ignore")),
        ("accept refused (offer_closed: taken by another, or reached the server after expiry)",
         lambda m: _replies(m, "offer_closed")),
        ("withdrawn before the phone answered", _late),
        ("arrived while on a job / offline or no ack", lambda m: f"{_replies(m, 'busy', 'partner_busy')} / "
                                                                 f"{_replies(m, 'offline', 'no_ack')}"),
    ]),
    ("Partner idle-to-job distance (straight line, at acceptance)", [
        ("p50", lambda m: _num(m.idle_to_job_p50_m, ".0f", " m")),
        ("p95", lambda m: _num(m.idle_to_job_p95_m, ".0f", " m")),
        ("mean", lambda m: _num(m.idle_to_job_mean_m, ".0f", " m")),
    ]),
    ("Fairness (jobs assigned per partner)", [
        ("Gini within a shift (equally available)", lambda m: _num(m.gini_within_shift, ".3f")),
        ("Gini over all partners", lambda m: _num(m.gini_all, ".3f")),
        ("jobs per partner, mean", lambda m: _num(m.jobs_per_partner_mean, ".2f")),
        ("partners without a job", lambda m: str(m.partners_without_job)),
    ]),
    ("On-time arrival (window: placed .. placed + window)", [
        ("share of all orders", lambda m: _pct(m.on_time_share)),
        ("share of assigned orders", lambda m: _pct(m.on_time_share_assigned)),
    ]),
    ("Run", [
        ("partner disconnects", lambda m: str(m.disconnects)),
        ("orders refused by the API", lambda m: str(m.place_failures)),
        ("fixes refused by the server", lambda m: str(sum(m.ping_rejects.values()))),
        ("real time of the run", lambda m: f"{m.real_seconds:.0f} s"),
    ]),
]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_tables(results: Sequence[StrategyMetrics]) -> str:
    """One table per metric group, strategies side by side (a strategy that did not run says why)."""
    ran = [m for m in results if m.available]
    out: list[str] = []
    missing = [m for m in results if not m.available]
    for m in missing:
        out.append(f"**{m.strategy}: {m.note}**\n")
    for title, rows in SECTIONS:
        out.append(f"### {title}\n")
        out.append(_table(["", *(m.strategy for m in ran)], [[label, *(fn(m) for m in ran)] for label, fn in rows]))
        out.append("")
    return "\n".join(out)


def summary_table(results: Sequence[StrategyMetrics]) -> str:
    """The headline figures as one plain-text table (stdout)."""
    rows: list[tuple[str, Callable[[StrategyMetrics], str]]] = [
        ("assigned w/o admin", lambda m: _pct(m.assigned_share)),
        ("assign p50 (timeouts)", lambda m: _num(m.assign_p50_timeouts, ".2f")),
        ("assign p95 (timeouts)", lambda m: _num(m.assign_p95_timeouts, ".2f")),
        ("assign p50 / p95 (sim s)", lambda m: f"{_num(m.assign_p50_s)} / {_num(m.assign_p95_s)}"),
        ("offers per assignment", lambda m: _num(m.offers_per_assignment, ".2f")),
        ("idle-to-job p50 (m)", lambda m: _num(m.idle_to_job_p50_m)),
        ("Gini within shift", lambda m: _num(m.gini_within_shift, ".3f")),
        ("on-time share", lambda m: _pct(m.on_time_share)),
        ("orders / assigned", lambda m: f"{m.orders} / {m.assigned}"),
        ("accepts refused (offer_closed)", lambda m: _replies(m, "offer_closed")),
    ]
    header = ["metric", *(m.strategy for m in results)]
    body = [[label, *(fn(m) if m.available else "not available" for m in results)] for label, fn in rows]
    chaos = [m for m in results if m.available and m.chaos_open is not None]
    if chaos:
        body.append(["after FLUSHALL: open / reassigned",
                     *(f"{m.chaos_open} / {m.chaos_reassigned}" if m.chaos_open is not None else "-" for m in results)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _goal_table(results: Sequence[StrategyMetrics]) -> str:
    broadcast = next((m for m in results if m.strategy == "broadcast"), None)
    per: dict[str, list[Goal]] = {m.strategy: goals(m, broadcast) for m in results if m.available}
    names: list[tuple[str, str]] = []
    for gl in per.values():
        for g in gl:
            if (g.name, g.target) not in names:
                names.append((g.name, g.target))

    def cell(strategy: str, name: str) -> str:
        g = next((g for g in per[strategy] if g.name == name), None)
        if g is None:
            return "-"
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[g.met]
        return f"{verdict} ({g.value})"

    rows = [[name, target, *(cell(s, name) for s in per)] for name, target in names]
    return _table(["goal", "target", *per], rows)


def scenario_summary(scenario: Scenario, source: str, area_name: str) -> str:
    s = scenario
    b = s.behaviour
    shifts = ", ".join(f"{sh.label} ({sh.share:.0%})" for sh in s.partners.shifts)
    lines = [
        f"- scenario **{s.name}** (`{source}`), seed {s.seed}",
        f"- area: {area_name}",
        f"- day: {s.day.start} + {s.day.hours:g} h simulated in {s.day.real_minutes:g} real min "
        f"(time scale {s.scale:.1f}x), then up to {s.day.drain_min:g} min of drain",
        f"- partners: {s.partners.count}, shifts {shifts}, {s.partners.speed_kmh:g} km/h, road factor "
        f"{s.partners.road_factor:g}",
        f"- orders: {s.orders.count} from {s.orders.customers} customers, rate by hour {s.orders.by_hour}, "
        f"on-time window {s.orders.window_min:g} min, set-up {s.orders.setup_min:g} min, payment `cash`",
        f"- partners accept {b.accept_probability:.0%} of offers; of the rest {b.ignore_share:.0%} are left to time "
        f"out, the others declined; reply delay lognormal median {b.reply_delay.median_s:g} s, sigma "
        f"{b.reply_delay.sigma:g}, within [{b.reply_delay.min_s:g}, {b.reply_delay.max_s:g}] s",
        f"- disconnects: {b.disconnects.per_partner_hour:g} per on-duty partner-hour, offline "
        f"{b.disconnects.offline_min[0]:g}-{b.disconnects.offline_min[1]:g} min",
        f"- dispatch: offer timeout {s.dispatch.offer_timeout_s:g} s (real {s.offer_timeout_real_s:.3f} s), "
        f"ping interval {s.dispatch.ping_interval_s:g} s (real {s.ping_real_s:.2f} s, so staleness after "
        f"{3 * s.ping_real_s * s.scale:.0f} simulated s), top-k {s.dispatch.top_k}, radius "
        f"{s.dispatch.radius_m} → {s.dispatch.max_radius_m} m, retry {s.dispatch.retry_s:g}-"
        f"{s.dispatch.retry_max_s:g} s, disconnect grace {s.dispatch.disconnect_grace_s:g} s",
    ]
    return "\n".join(lines)


def plot_assignment_cdf(results: Sequence[StrategyMetrics], offer_timeout_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loadtests.quality_metrics import cdf

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    shortest, longest = 0.1, 10.0
    for m in results:
        if not m.available or not m.assign_times_s:
            continue
        # A log axis: a strategy that strands orders for hours must not squash the others into a line.
        xs, ys = cdf([max(t / offer_timeout_s, 0.01) for t in m.assign_times_s])
        shortest, longest = min(shortest, xs[0]), max(longest, xs[-1])
        ax.step(xs, ys, where="post", label=f"{m.strategy} (n={len(xs)})")
    for goal, label in ((1, "p50 goal"), (4, "p95 goal")):
        ax.axvline(goal, color="grey", linestyle=":", linewidth=1)
        ax.text(goal, 0.02, f" {label}", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(shortest * 0.8, longest * 1.25)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"order → assignment, in offer timeouts ({offer_timeout_s:g} simulated s each; log scale)")
    ax.set_ylabel("share of assigned orders")
    ax.set_title("Time to assign, per strategy")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_jobs_per_partner(results: Sequence[StrategyMetrics], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [m for m in results if m.available]
    top = max((max(m.jobs_per_partner, default=0) for m in ran), default=0)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.8 / max(1, len(ran))
    for k, m in enumerate(ran):
        counts = [m.jobs_per_partner.count(j) for j in range(top + 1)]
        ax.bar([j - 0.4 + width * (k + 0.5) for j in range(top + 1)], counts, width=width,
               label=f"{m.strategy} (Gini within shift {_num(m.gini_within_shift, '.2f')})")
    ax.set_xlabel("jobs assigned to a partner in the day")
    ax.set_ylabel("partners")
    ax.set_title("Jobs per partner, per strategy")
    ax.set_xticks(range(top + 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out: Path, scenario: Scenario, source: str, area_name: str,
                 results: Sequence[StrategyMetrics], notes: Sequence[str], started: str) -> Path:
    """REPORT.md, the two plots and results.json in `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    cdf_png, jobs_png = out / "assignment_cdf.png", out / "jobs_per_partner.png"
    plot_assignment_cdf(results, scenario.dispatch.offer_timeout_s, cdf_png)
    plot_jobs_per_partner(results, jobs_png)
    chaos = [m for m in results if m.available and m.chaos_open is not None]
    parts = [
        "# Dispatch-quality simulation report\n",
        f"Run started {started}; written by `python -m partypilot simulate --scenario` (docs/quality.md).\n",
        "## Scenario\n",
        scenario_summary(scenario, source, area_name) + "\n",
        "## Goals (issue 9)\n",
        _goal_table(results) + "\n",
        "“Clearly better” than broadcast means at least 20 % lower. On-time counts every order placed "
        "(an order never assigned is late).\n",
        "## Figures, strategies side by side\n",
        metric_tables(results),
    ]
    if chaos:
        parts += ["## Redis FLUSHALL mid-run\n",
                  _table(["strategy", "flushed at (simulated)", "orders without a partner then",
                          "assigned later by dispatch", "still open at the end"],
                         [[m.strategy, m.chaos_at or "-", str(m.chaos_open), str(m.chaos_reassigned),
                           str((m.chaos_open or 0) - (m.chaos_reassigned or 0))] for m in chaos]) + "\n"]
    parts += ["## Plots\n", f"![assignment time CDF]({cdf_png.name})\n", f"![jobs per partner]({jobs_png.name})\n"]
    if notes:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    report = out / "REPORT.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "scenario": scenario.model_dump(mode="json"), "source": source, "started": started,
        "strategies": [_jsonable(m) for m in results]}, indent=1) + "\n", encoding="utf-8")
    return report


def _jsonable(m: StrategyMetrics) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    data["ping_rejects"] = dict(m.ping_rejects)
    return data
