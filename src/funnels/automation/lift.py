"""What an action does: its treated group against its holdout, on the action's goal (`GET /v0/lift`).

How it works: an action with `holdout: N%` ends that share of its due jobs `held_out` (never sent;
`steprule.held_out`). Its goal is a later step of its funnel (`goal: {event, within}`; by default the
next step within 14 days), reached within `within` of the job's due time: the clock starts at the same
moment for both groups, before any quiet-hours wait. A job counts once its outcome is known: it reached
the goal (converted), or its window closed without (not converted); jobs whose window is still open and
that have not converted are `pending` and left out of the rates, so a recent burst does not pull a rate
down. Treated are the jobs that were due and not held out, whatever their delivery did (sent, failed for
good, unknown): an intention-to-treat comparison, as the assignment is what is random; cancelled jobs are
in neither group (`unless` cancels both groups alike).

The statistics are statsmodels' (docs/automation.md says why these): the difference of the two rates with
Newcombe's hybrid score interval (good coverage with small groups and rates near 0 or 1, where the Wald
interval is not), the relative lift from the ratio of the rates with the log interval adjusted by adding
0.5 to each count (finite when a group has no conversions), a two-sided score test of equal rates for the
p-value, and, while the difference is not significant at 5%, how many jobs each group would need to
detect the observed difference with 80% power (normal approximation on Cohen's h, the groups in their
current proportion).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from funnels.config import Action, Config, Funnel
from funnels.store import outbox
from funnels.store.state import StateStore

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Goal:
    step_index: int  # 0-based step of the action's funnel
    event: str
    within_ms: int


def goal_of(funnel: Funnel, step_index: int, action: Action) -> Goal | None:
    """The action's goal: its `goal.event` (the first later step of that event), else the next step; None
    for an action of a funnel's last step without a goal."""
    later = list(enumerate(funnel.steps))[step_index + 1 :]
    wanted = action.goal_event
    found = next(((index, step.event) for index, step in later if wanted in (None, step.event)), None)
    if found is None:
        return None
    return Goal(found[0], found[1], int(action.goal_within.total_seconds() * 1000))


def compare(treated: outbox.GoalCounts, holdout: outbox.GoalCounts) -> dict[str, Any]:
    """The lift of the treated over the holdout, with its interval, p-value and (while inconclusive) the
    jobs needed; nulls where a group has no decided jobs yet."""
    from statsmodels.stats.power import NormalIndPower  # imported here: ~1 s, only lift needs it
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        proportion_effectsize,
        test_proportions_2indep,
    )

    empty = {
        "absolute": None,
        "absolute_ci": None,
        "relative": None,
        "relative_ci": None,
        "p_value": None,
        "significant": False,
        "needed_per_group": None,
    }
    if not treated.decided or not holdout.decided:
        return empty
    counts = (treated.converted, treated.decided, holdout.converted, holdout.decided)
    rate_t, rate_h = treated.converted / treated.decided, holdout.converted / holdout.decided
    with warnings.catch_warnings():  # rates of 0 or 1 make statsmodels divide by zero on the way (odds)
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = confint_proportions_2indep(*counts, method="newcomb", compare="diff", alpha=ALPHA)
        ratio_low, ratio_high = confint_proportions_2indep(
            *counts, method="log-adjusted", compare="ratio", alpha=ALPHA
        )
        p_value = float(test_proportions_2indep(*counts, method="score", compare="diff").pvalue)
    if not math.isfinite(p_value):  # both rates 0, or both 1: nothing tells the groups apart
        p_value = 1.0
    needed = None
    if p_value >= ALPHA and rate_t != rate_h:
        ratio = holdout.decided / treated.decided
        effect = abs(float(proportion_effectsize(rate_t, rate_h)))
        n_treated = float(
            NormalIndPower().solve_power(effect_size=effect, alpha=ALPHA, power=POWER, ratio=ratio)
        )
        needed = {"treated": _ceil(n_treated), "holdout": _ceil(n_treated * ratio)}
    return {
        "absolute": rate_t - rate_h,
        "absolute_ci": [float(low), float(high)],
        "relative": rate_t / rate_h - 1 if rate_h else None,
        "relative_ci": [float(ratio_low) - 1, float(ratio_high) - 1],
        "p_value": p_value,
        "significant": p_value < ALPHA,
        "needed_per_group": needed,
    }


def _ceil(value: float) -> int:
    return int(-(-value // 1))


def _group(counts: outbox.GoalCounts) -> dict[str, Any]:
    return {
        "jobs": counts.decided,
        "converted": counts.converted,
        "rate": counts.converted / counts.decided if counts.decided else None,
        "pending": counts.pending,
    }


def action_lifts(
    state: StateStore, config: Config, now_ms: int, funnel: str | None = None
) -> list[dict[str, Any]]:
    """Every action with a holdout (of `funnel`, when given), in config order, with its goal, both groups
    and their comparison. An action without a goal (the last step's, none declared) says so."""
    found = []
    with state.read() as connection:
        for each in config.funnels:
            if funnel is not None and each.id != funnel:
                continue
            for step_index, step in enumerate(each.steps):
                for action_index, action in enumerate(step.actions):
                    if not action.holdout_bp:
                        continue
                    goal = goal_of(each, step_index, action)
                    row: dict[str, Any] = {
                        "funnel": each.id,
                        "step": step_index + 1,
                        "event": step.event,
                        "action": action_index + 1,
                        "type": action.type,
                        "holdout_percent": action.holdout_bp / 100,
                        "goal": None,
                    }
                    if goal is None:
                        found.append(row | {"treated": None, "holdout": None, "lift": None})
                        continue
                    treated, held = outbox.goal_counts(
                        connection, each.id, step_index, action_index, goal.step_index, goal.within_ms, now_ms
                    )
                    row["goal"] = {
                        "step": goal.step_index + 1,
                        "event": goal.event,
                        "within_seconds": goal.within_ms // 1000,
                    }
                    groups = {"treated": _group(treated), "holdout": _group(held)}
                    found.append(row | groups | {"lift": compare(treated, held)})
    return found
