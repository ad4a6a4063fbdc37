"""Summary statistics of an ablation: mean and spread over seeds, paired differences with a 95% interval, and the
rank correlation of the Figure-2 analogue. scipy supplies the t quantile and Spearman's rho."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def paired_delta(a: Sequence[float], b: Sequence[float]) -> dict[str, float | list[float] | int]:
    """Mean of a - b over paired seeds with a Student-t 95% interval (NaN bounds with one seed), and the seeds a
    paired test would need to exclude zero at this effect and spread (`seeds_to_resolve`, NaN when unknown)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean, sd = mean_std(d)
    if n < 2:
        return {"delta": mean, "ci95": [math.nan, math.nan], "sd": math.nan, "n": n, "seeds_to_resolve": math.nan}
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    # The smallest n with t(0.975, n-1) * sd / sqrt(n) < |mean| (the left side falls as n grows: bisection).
    need = math.nan
    if mean != 0:
        def resolved(k: int) -> bool:
            return float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k) < abs(mean)

        lo, hi = 2, 2
        while not resolved(hi) and hi < 10**7:
            lo, hi = hi, hi * 2
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if resolved(mid) else (mid + 1, hi)
        need = float(hi)
    return {"delta": mean, "ci95": [mean - half, mean + half], "sd": sd, "n": n, "seeds_to_resolve": need}


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Spearman's rank correlation and its two-sided p-value (NaN with fewer than 3 points)."""
    from scipy import stats

    if len(x) < 3:
        return {"rho": math.nan, "p_value": math.nan, "n": len(x)}
    res = stats.spearmanr(x, y)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": len(x)}
