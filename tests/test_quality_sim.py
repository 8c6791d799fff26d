"""The dispatch-quality simulator: its figures on hand-made data, its scenario format (and the page
that documents it), and one small day end to end through the real app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.fixtures import Area
from loadtests.quality_metrics import (
    JobRecord,
    OrderOutcome,
    PartnerRecord,
    gini,
    goals,
    grouped_gini,
    on_time_share,
    percentile,
    summarize,
)
from loadtests.quality_scenario import (
    DEFAULT_SCENARIO,
    TINY_SCENARIO,
    ScenarioError,
    field_paths,
    load_scenario,
    parse_scenario,
)
from loadtests.quality_sim import make_plan

ROOT = Path(__file__).resolve().parent.parent


# --- figures ---------------------------------------------------------------------------------------


def test_gini_is_zero_when_every_partner_has_the_same_number_of_jobs() -> None:
    assert gini([4, 4, 4, 4, 4]) == 0.0
    assert gini([]) == 0.0
    assert gini([0, 0, 0]) == 0.0


def test_gini_is_close_to_one_when_one_partner_takes_every_job() -> None:
    assert gini([0] * 99 + [50]) == pytest.approx(0.99)
    assert gini([0, 0, 0, 7]) == pytest.approx(0.75)  # (n - 1) / n


def test_gini_matches_the_textbook_value() -> None:
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert gini([3, 1, 4, 2]) == pytest.approx(0.25)  # order does not matter


def test_fairness_compares_partners_only_with_those_on_the_same_shift() -> None:
    # Long shifts do more jobs than short ones; within each shift the split is even.
    groups = {"09-21": [6.0, 6.0, 6.0], "09-12": [2.0, 2.0]}
    assert grouped_gini(groups) == 0.0
    assert gini([6, 6, 6, 2, 2]) > 0.2
    assert grouped_gini({"a": [0.0, 4.0], "b": [3.0, 3.0, 3.0, 3.0]}) == pytest.approx(2 / 6 * 0.5)
    assert grouped_gini({"alone": [5.0]}) is None


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be"):
        percentile(values, 101)


def test_on_time_share_counts_unassigned_orders_as_late_and_the_window_end_as_on_time() -> None:
    window = 90 * 60.0
    orders = [
        OrderOutcome("early", placed_sim=0, assigned_sim=60, travel_sim_s=600),
        OrderOutcome("edge", placed_sim=100, assigned_sim=200, travel_sim_s=window - 100),
        OrderOutcome("late", placed_sim=0, assigned_sim=3000, travel_sim_s=3000),
        OrderOutcome("never", placed_sim=0),
    ]
    assert on_time_share(orders, window) == pytest.approx(0.5)
    assert on_time_share([], window) is None


def test_summary_counts_assignments_by_dispatch_and_offers_per_assignment() -> None:
    orders = [
        OrderOutcome("a", placed_sim=0, assigned_sim=30, assigned_by="partner", offers_sent=1, travel_sim_s=300,
                     first_offer_sim=3, alerted=False),
        OrderOutcome("b", placed_sim=100, assigned_sim=190, assigned_by="partner", offers_sent=3, travel_sim_s=300),
        OrderOutcome("c", placed_sim=0, assigned_sim=900, assigned_by="admin", offers_sent=2, travel_sim_s=300),
        OrderOutcome("d", placed_sim=0, offers_sent=2, alerted=True),
    ]
    jobs = [JobRecord("a", "p1", 30, 800, 300), JobRecord("b", "p2", 190, 1200, 300)]
    partners = [PartnerRecord("p1", "morning", jobs=1), PartnerRecord("p2", "morning", jobs=1),
                PartnerRecord("p3", "evening", jobs=0)]
    m = summarize("sequential", orders, jobs, partners, window_s=5400, offer_timeout_s=30,
                  replies={"assigned": 2})
    assert (m.orders, m.assigned, m.assigned_by_admin, m.unassigned) == (4, 2, 1, 1)
    assert m.assigned_share == pytest.approx(0.5)  # an admin's assignment does not count
    assert m.assign_times_s == [30.0, 90.0]
    assert m.assign_p50_s == pytest.approx(60.0)
    assert m.assign_p50_timeouts == pytest.approx(2.0)
    assert m.offers_sent == 8
    assert m.offers_per_assignment == pytest.approx(4.0)
    assert m.idle_to_job_p50_m == pytest.approx(1000.0)
    assert m.gini_within_shift == 0.0  # the evening shift has one partner: nothing to compare
    assert m.partners_without_job == 1
    assert m.on_time_share == pytest.approx(0.75)
    assert m.first_offer_p50_s == pytest.approx(3.0)
    assert m.alerted == 1


def test_goals_are_judged_against_the_issue_and_the_broadcast_baseline() -> None:
    base = [OrderOutcome(str(i), placed_sim=0, assigned_sim=10, assigned_by="partner", offers_sent=1,
                         travel_sim_s=100) for i in range(10)]
    even = [PartnerRecord(f"p{i}", "all", jobs=2) for i in range(5)]
    skewed = [PartnerRecord(f"p{i}", "all", jobs=j) for i, j in enumerate([0, 0, 0, 2, 8])]
    seq = summarize("sequential", base, [], even, window_s=5400, offer_timeout_s=30)
    wide = [OrderOutcome(o.order_id, 0, 10, "partner", offers_sent=20, travel_sim_s=100) for o in base]
    broadcast = summarize("broadcast", wide, [], skewed, window_s=5400, offer_timeout_s=30)
    verdicts = {g.name: g.met for g in goals(seq, broadcast)}
    assert verdicts["orders assigned without an admin"] is True
    assert verdicts["order -> assignment p95"] is True
    assert verdicts["fairness (Gini of jobs within a shift)"] is True
    assert verdicts["fairness vs broadcast"] is True
    assert verdicts["offers per assignment vs broadcast"] is True
    assert verdicts["assignment time vs broadcast"] is True
    assert {g.name: g.met for g in goals(broadcast, None)}["fairness (Gini of jobs within a shift)"] is False
    missing = {g.name: g.met for g in goals(seq, None)}
    assert missing["fairness vs broadcast"] is None  # not measured, not "met"


# --- the scenario format -----------------------------------------------------------------------


def test_the_bundled_scenarios_parse_with_the_issues_default_day() -> None:
    day = load_scenario(DEFAULT_SCENARIO)
    assert (day.partners.count, day.orders.count, day.behaviour.accept_probability) == (300, 1200, 0.8)
    assert day.behaviour.disconnects.per_partner_hour == 0.05
    assert day.scale == pytest.approx(50.0)
    env = day.app_env("top_k")
    assert env["PARTYPILOT_DISPATCH_STRATEGY"] == "top_k"
    assert float(env["PARTYPILOT_OFFER_TIMEOUT_S"]) == pytest.approx(0.6)
    assert float(env["PARTYPILOT_PING_INTERVAL_S"]) >= 1.25  # never faster than the server's 1 fix/s
    tiny = load_scenario(TINY_SCENARIO)
    assert tiny.partners.count == 12 and tiny.orders.count == 20
    assert tiny.day.real_minutes * 60 <= 30


def test_a_scenario_can_be_json(tmp_path: Path) -> None:
    data = yaml_to_dict(TINY_SCENARIO)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    assert load_scenario(path).name == "tiny"


def yaml_to_dict(path: Path) -> dict[str, object]:
    import yaml

    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["partners"].pop("count"), r"partners\.count: Field required"),
    (lambda d: d["partners"]["shifts"][0].update(share=0.5), "shift shares must add up to 1"),
    (lambda d: d["orders"].update(by_hour=[1, 2]), "one weight per simulated hour: 1, not 2"),
    (lambda d: d["behaviour"].update(accept_probability=1.5), r"behaviour\.accept_probability"),
    (lambda d: d["day"].update(start="9am"), r"day\.start: String should match"),
    (lambda d: d["partners"]["shifts"][0].update(end="11:00"), "lies outside the day"),
    (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
    (lambda d: d["day"].update(real_minutes=60), None),  # a slower clock is fine
    (lambda d: d["day"].update(real_minutes=0.01), "below 0.15 s"),
])
def test_a_bad_scenario_names_the_field_to_fix(change: object, message: str | None) -> None:
    data = yaml_to_dict(TINY_SCENARIO)
    change(data)  # type: ignore[operator]
    if message is None:
        parse_scenario(data)
        return
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data, "tiny.yaml")


def test_an_unreadable_scenario_file_says_which_file_and_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: not valid YAML"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load_scenario(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="must be a mapping"):
        load_scenario(listed)


def test_docs_quality_names_every_scenario_field() -> None:
    page = (ROOT / "docs" / "quality.md").read_text()
    missing = [path for path in field_paths() if f"`{path}`" not in page]
    assert not missing, f"docs/quality.md does not describe: {missing}"


def test_every_strategy_plays_the_same_day_from_the_seed() -> None:
    scenario = load_scenario(DEFAULT_SCENARIO)
    area = Area("test", 12.97, 77.59, 8000.0)
    one, two = make_plan(scenario, area), make_plan(scenario, area)
    assert [o.due_sim for o in one.orders] == [o.due_sim for o in two.orders]
    assert one.partner_homes == two.partner_homes
    assert len(one.orders) == 1200 and len(one.partner_shifts) == 300
    sizes = {s.label: sum(1 for p in one.partner_shifts if p is s) for s in scenario.partners.shifts}
    assert sizes == {"10:00-15:00": 90, "12:30-17:30": 90, "15:00-20:00": 120}
    assert all(0 <= o.due_sim < scenario.day_s for o in one.orders)


# --- the command ---------------------------------------------------------------------------------


def test_simulate_refuses_a_bad_scenario_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    done = subprocess.run([sys.executable, "-m", "partypilot", "simulate", "--scenario", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert "bad.yaml: invalid scenario" in done.stderr and "day: Field required" in done.stderr


def test_a_tiny_day_runs_end_to_end_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    done = subprocess.run([sys.executable, "-m", "partypilot", "simulate", "--scenario", str(TINY_SCENARIO),
                           "--strategies", "sequential", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "assigned w/o admin" in done.stdout and "sequential" in done.stdout
    report = (out / "REPORT.md").read_text()
    for heading in ("## Scenario", "## Goals (issue 9)", "Order → assignment", "offers per assignment",
                    "idle-to-job distance", "Gini within a shift", "On-time arrival", "| sequential |"):
        assert heading in report
    assert (out / "assignment_cdf.png").stat().st_size > 1000
    assert (out / "jobs_per_partner.png").stat().st_size > 1000
    result = json.loads((out / "results.json").read_text())["strategies"][0]
    assert result["strategy"] == "sequential" and result["available"] is True
    assert result["orders"] == 20
    assert result["assigned"] >= 1
    assert result["offers_sent"] >= result["assigned"]
    assert result["assign_p50_s"] is not None
