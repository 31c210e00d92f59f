"""A funnel answered from a sample of users (`sample=`): scaled counts and the sampling error.

Which users are in the sample is the SQL's (`funnels.analytics.sql.sampled_tables`: a user, person or group
is in when its 64-bit hash is under `sample × 2^64`). Every user in the sample is counted whole, so the
funnel is exact over the sample; this module turns the sample's counts into the response's estimates
(docs/semantics.md, "Sampling"):

- counts (`users`, `total`, `dropped_off_users`) are the sample's divided by the rate, rounded; the sample's
  own count is `users_sampled`. Each user is in the sample with probability `p` (the rate) independently
  of the others (a hash is as good as a coin for that), so the sample's count X of a step's N users is
  Binomial(N, p). `users_interval` is the score interval for N: the N with (X − Np)² ≤ z²·Np(1 − p),
  N = (2X + c ± √(4Xc + c²)) / 2p with c = z²(1 − p), the lower end at least X (those are certain).
- conversion rates are the sample's own ratios (not of the rounded scaled counts); each has a Wilson score
  interval with the finite-population correction: of a population's M users at the previous step, the
  sample holds a share p, so the variance of the sample's rate is r(1 − r)/n · (1 − p), which is Wilson's
  interval with z² replaced by z²(1 − p). At p = 1 every interval is one point: the exact answer.
"""

from __future__ import annotations

import math
from typing import Any, Final

CONFIDENCE: Final = 0.95
Z: Final = 1.959963984540054  # scipy.stats.norm.ppf(0.975), a literal: scipy takes ~1 s to import


def wilson(successes: int, trials: int, rate: float = 0.0, z: float = Z) -> tuple[float, float] | None:
    """The Wilson score interval of successes/trials at confidence `z`, corrected for sampling a share
    `rate` of a finite population: statsmodels' `wilson` at the z that gives z² · (1 − rate), that is at
    alpha = 2·(1 − Φ(z·√(1 − rate))); None without trials."""
    if trials <= 0:
        return None
    from scipy.stats import norm  # imported here: ~1 s, only a sampled funnel needs them
    from statsmodels.stats.proportion import proportion_confint

    alpha = 2 * float(norm.sf(z * math.sqrt(1 - rate)))
    low, high = proportion_confint(successes, trials, alpha=alpha, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def count_interval(sampled: int, rate: float, z: float = Z) -> tuple[int, int]:
    """The score interval for N, the users of which `sampled` were in a sample of share `rate`
    (X ~ Binomial(N, rate)): lower end at least `sampled`, both rounded outwards to whole users."""
    c = z * z * (1 - rate)
    root = math.sqrt(4 * sampled * c + c * c)
    low = (2 * sampled + c - root) / (2 * rate)
    high = (2 * sampled + c + root) / (2 * rate)
    return max(sampled, math.floor(low + 1e-9)), max(sampled, math.ceil(high - 1e-9))


def scaled(count: int, rate: float) -> int:
    """A sample's count as an estimate of the whole: count / rate, rounded to whole users."""
    return round(count / rate)


def _interval(bounds: tuple[float, float] | None) -> list[float] | None:
    return None if bounds is None else [round(bounds[0], 4), round(bounds[1], 4)]


def sample_row(row: dict[str, Any], sampled: int, previous: int | None, first: int, rate: float) -> None:
    """Turn a response row computed over the sample into its estimate (in place): `users` scaled, the
    sample's own count `users_sampled` and the intervals added; `total` is the caller's to scale."""
    row["users"] = scaled(sampled, rate)
    row["users_sampled"] = sampled
    row["users_interval"] = list(count_interval(sampled, rate))
    row["conversion_from_start_interval"] = _interval(wilson(sampled, first, rate))
    row["conversion_from_previous_interval"] = (
        None if previous is None else _interval(wilson(sampled, previous, rate))
    )
    if row.get("dropped_off_users") is not None:
        row["dropped_off_users"] = scaled(row["dropped_off_users"], rate)


def sample_summary(rate: float, entered: int, unit: str) -> dict[str, Any]:
    """The response's `sample`: the rate, what was sampled, the step-1 users in the sample, how counts
    were scaled and the intervals' confidence."""
    return {
        "rate": rate,
        "unit": unit,
        "users_sampled": entered,
        "scale": round(1 / rate, 6),
        "confidence": CONFIDENCE,
        "method": "score intervals with finite-population correction (docs/semantics.md, Sampling)",
    }
