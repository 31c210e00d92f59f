"""Lift (`GET /v0/lift`, automation/lift.py): the statistics against published and library values, the
interval's coverage on simulated data with a known true lift (drawn directly, and replayed through the
engine on the virtual clock: ~30 s here), and a history through the real server parts (a real HTTP
receiver, a moved clock): goals, windows, pending jobs and the two groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats import proportion  # (its test_… function is no test of ours: not imported by name)
from statsmodels.stats.power import NormalIndPower

from funnels.automation.lift import compare
from funnels.automation.replay import replay
from funnels.automation.steprule import held_out, job_key
from funnels.store.outbox import GoalCounts
from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, HttpReceiver

HOUR_MS = 3_600_000


def test_the_interval_is_newcombes_published_example() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873–890, table II, example (a): 56/70 against 48/80,
    method 10 (the hybrid score interval): 0.0524 to 0.3339."""
    lift = compare(GoalCounts(70, 56, 0), GoalCounts(80, 48, 0))
    assert lift["absolute"] == pytest.approx(56 / 70 - 48 / 80)
    assert lift["absolute_ci"] == pytest.approx([0.0524, 0.3339], abs=5e-5)
    assert lift["relative"] == pytest.approx((56 / 70) / (48 / 80) - 1)
    low, high = lift["relative_ci"]
    assert low < lift["relative"] < high and low > 0  # significant: the ratio's interval excludes 1 too
    expected = proportion.test_proportions_2indep(56, 70, 48, 80, method="score", compare="diff").pvalue
    assert lift["p_value"] == pytest.approx(float(expected))
    assert lift["significant"] and lift["p_value"] < 0.05
    assert lift["needed_per_group"] is None  # nothing more to wait for


def test_an_inconclusive_lift_says_how_many_jobs_each_group_needs() -> None:
    treated, holdout = GoalCounts(900, 108, 3), GoalCounts(100, 10, 1)  # 12% against 10%
    lift = compare(treated, holdout)
    assert not lift["significant"] and lift["p_value"] > 0.05
    low, high = lift["absolute_ci"]
    assert low < 0 < high
    effect = proportion.proportion_effectsize(0.12, 0.10)
    n_treated = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, ratio=100 / 900)
    assert lift["needed_per_group"] == {
        "treated": int(np.ceil(n_treated)),
        "holdout": int(np.ceil(n_treated / 9)),
    }
    assert lift["needed_per_group"]["treated"] > 900  # more than it has


def test_no_decided_job_in_a_group_gives_no_comparison() -> None:
    lift = compare(GoalCounts(10, 3, 0), GoalCounts(0, 0, 4))
    assert lift["absolute"] is None and lift["p_value"] is None and lift["significant"] is False


def test_a_holdout_without_conversions_still_has_a_finite_relative_interval() -> None:
    lift = compare(GoalCounts(200, 30, 0), GoalCounts(20, 0, 0))
    assert lift["relative"] is None  # no rate to divide by
    low, high = lift["relative_ci"]
    assert np.isfinite(low) and np.isfinite(high)


def test_the_interval_covers_the_true_lift_about_95_percent_of_the_time() -> None:
    """400 simulated experiments with a known true lift (a 10% holdout, 30% against 25%): the 95% interval
    should miss the true difference in about 5% of them. Coverage of 400 runs has a standard deviation of
    ~1.1 points, so 91–99% leaves ~3.5 of them either side; a badly calibrated interval fails."""
    rng = np.random.default_rng(20261207)
    true_treated, true_holdout, n_treated, n_holdout = 0.30, 0.25, 900, 100
    covered = 0
    runs = 400
    for _ in range(runs):
        treated = GoalCounts(n_treated, int(rng.binomial(n_treated, true_treated)), 0)
        holdout = GoalCounts(n_holdout, int(rng.binomial(n_holdout, true_holdout)), 0)
        low, high = compare(treated, holdout)["absolute_ci"]
        covered += low <= true_treated - true_holdout <= high
    assert 0.91 <= covered / runs <= 0.99, covered / runs


@pytest.fixture
def automation_config(http_receiver: HttpReceiver) -> Config:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "funnels": [
            {
                "id": "trial",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": [
                            # The default goal: the next step (activate) within 14 days.
                            {"type": "webhook", "args": {"url": f"{http_receiver.url}/a"}, "holdout": "50%"},
                            {
                                "type": "webhook",
                                "args": {"url": f"{http_receiver.url}/b"},
                                "holdout": "50%",
                                "goal": {"event": "pay", "within": "1d"},
                            },
                            {"type": "webhook", "args": {"url": f"{http_receiver.url}/c"}},  # no holdout
                        ],
                    },
                    {"event": "activate"},
                    {
                        "event": "pay",
                        "actions": {
                            "type": "webhook",
                            "args": {"url": f"{http_receiver.url}/d"},
                            "holdout": "10%",
                        },
                    },
                ],
            }
        ],
    }


def test_a_history_measured_on_each_actions_goal(world: World) -> None:
    """40 customers sign up (every job due at once); those with index % 4 in (0, 1) activate 2 h later
    and pay 3 h later (0) or 30 h later (1, after the 1-day window of action 2's goal); the rest never do.
    Before the windows close only converted jobs are decided; after, every job is."""
    customers = [f"c{index}" for index in range(40)]
    for name in customers:
        world.identify([name])
        world.event("sign_up", [name])
    world.run()
    world.clock.advance(2 * HOUR_MS)
    for index, name in enumerate(customers):
        if index % 4 in (0, 1):
            world.event("activate", [name])
    world.clock.advance(HOUR_MS)
    for index, name in enumerate(customers):
        if index % 4 == 0:
            world.event("pay", [name])
    world.run()

    def group(action: int, predicate: object) -> list[int]:
        """Indices of the customers in the held-out (`True`) or treated (`False`) group of an action."""
        return [
            index
            for index, name in enumerate(customers)
            if held_out(job_key("trial", "customer", name, 0, action - 1), 5_000) is predicate
        ]

    early = {row["action"]: row for row in world.get("/v0/lift")["data"] if row["step"] == 1}
    assert set(early) == {1, 2}  # action 3 has no holdout
    first = early[1]
    assert first["goal"] == {"step": 2, "event": "activate", "within_seconds": 14 * 86_400}
    assert first["holdout_percent"] == 50.0
    for name, predicate in (("treated", False), ("holdout", True)):
        indices = group(1, predicate)
        activated = [index for index in indices if index % 4 in (0, 1)]
        assert first[name] == {
            "jobs": len(activated),  # the windows are open: only the converted are decided
            "converted": len(activated),
            "rate": 1.0 if activated else None,
            "pending": len(indices) - len(activated),
        }

    world.clock.advance(27 * HOUR_MS)  # 30 h after the sign-ups: action 2's 1-day windows have closed
    for index, name in enumerate(customers):
        if index % 4 == 1:
            world.event("pay", [name])  # too late for action 2's goal
    later = {row["action"]: row for row in world.get("/v0/lift", funnel="trial")["data"] if row["step"] == 1}
    second = later[2]
    assert second["goal"] == {"step": 3, "event": "pay", "within_seconds": 86_400}
    for name, predicate in (("treated", False), ("holdout", True)):
        indices = group(2, predicate)
        paid = [index for index in indices if index % 4 == 0]
        assert second[name] == {
            "jobs": len(indices),
            "converted": len(paid),
            "rate": len(paid) / len(indices),
            "pending": 0,
        }
    treated, holdout = (
        GoalCounts(second[name]["jobs"], second[name]["converted"], 0) for name in ("treated", "holdout")
    )
    assert second["lift"] == compare(treated, holdout)
    # The last step's action has no later step: no default goal.
    (last,) = [row for row in world.get("/v0/lift")["data"] if row["step"] == 3]
    assert last["goal"] is None and last["lift"] is None


def test_an_unknown_funnel_is_404(world: World) -> None:
    answer = world.get("/v0/lift", expect=404, funnel="nope")
    assert answer["error"]["code"] == "NOT_FOUND"


@pytest.mark.slow
def test_replayed_histories_with_a_known_lift_are_counted_exactly_and_covered_about_95_percent(
    tmp_path: Path,
) -> None:
    """The coverage simulation through the engine: 100 experiments (a funnel each, `start<k>` → `goal<k>`,
    a webhook with a 50% holdout and the goal within a day) on one synthetic history of 40 customers, where
    a treated customer reaches the goal an hour after the job with probability 50% and a held-out one 35%
    (the draw is the documented pure function of the job's key, so the history knows each group). It is
    replayed on the virtual clock (`funnels replay`'s function, to two days after the last window closed).
    Each experiment's groups and conversions must be exactly the history's, and the 95% interval must cover
    the true difference, 15 points, in about 95 of the 100: 88–100 (a standard deviation of ~2.2 runs)."""
    experiments, customers, rates = 100, 40, {"treated": 0.50, "holdout": 0.35}
    rng = np.random.default_rng(20261207)
    t0_ms = 1_775_034_000_000
    config = {
        "models": [{"name": "customer"}],
        "funnels": [
            {
                "id": f"x{k}",
                "forModels": "customer",
                "steps": [
                    {
                        "event": f"start{k}",
                        "actions": {
                            "type": "webhook",
                            "args": {"url": "http://127.0.0.1:9/x"},  # nothing is sent by a replay
                            "holdout": "50%",
                            "goal": {"event": f"goal{k}", "within": "1d"},
                        },
                    },
                    {"event": f"goal{k}"},
                ],
            }
            for k in range(experiments)
        ],
    }
    lines: list[dict[str, object]] = [
        {"type": "identify", "model": "customer", "ids": [f"c{i}"], "timestamp": t0_ms}
        for i in range(customers)
    ]
    expected = []
    for k in range(experiments):
        counts = {"treated": [0, 0], "holdout": [0, 0]}  # jobs, converted
        for i in range(customers):
            at = t0_ms + 60_000 + k * 1_000
            lines.append({"name": f"start{k}", "ids": [f"c{i}"], "timestamp": at})
            group = "holdout" if held_out(job_key(f"x{k}", "customer", f"c{i}", 0, 0), 5_000) else "treated"
            counts[group][0] += 1
            if rng.random() < rates[group]:
                counts[group][1] += 1
                lines.append({"name": f"goal{k}", "ids": [f"c{i}"], "timestamp": at + HOUR_MS})
        expected.append(counts)
    events = tmp_path / "history.ndjson"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config_path = tmp_path / "funnels.json"
    config_path.write_text(json.dumps(config))

    report = replay(events, config_path, None, t0_ms + 3 * 24 * HOUR_MS)
    assert not report.errors
    assert [row["funnel"] for row in report.lifts] == [f"x{k}" for k in range(experiments)]
    covered = 0
    for row, counts in zip(report.lifts, expected, strict=True):
        for group in ("treated", "holdout"):
            assert [row[group]["jobs"], row[group]["converted"], row[group]["pending"]] == [*counts[group], 0]
        low, high = row["lift"]["absolute_ci"]
        covered += low <= rates["treated"] - rates["holdout"] <= high
    assert 88 <= covered <= 100, covered
