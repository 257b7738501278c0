"""What counts as a collapse: one definition for the measurements and the verdicts (numpy only, no torch).

An edit *collapses* the model when ME-PPL perplexity after it is over ``COLLAPSE_FACTOR`` times the perplexity
before it; a perplexity that is NaN or infinite (non-finite weights) counts as collapsed. :func:`upper_bound` and
:func:`lower_bound` bound a collapse rate measured on a sample (one-sided Clopper–Pearson).
"""
from __future__ import annotations

import numpy as np

COLLAPSE_FACTOR = 10.0
# A request is at risk when its pre-flight ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) is below this (scan, rome.collapse_risk).
RISK_THRESHOLD = 0.1


def collapsed(ppl_ratio, factor: float = COLLAPSE_FACTOR):
    """Perplexity after / before (a number or an array of them) over ``factor``; NaN or inf count as collapsed.
    A number gives a bool, an array (or a pandas Series) a boolean array."""
    over = ~(np.asarray(ppl_ratio, dtype=float) <= factor)
    return bool(over) if over.ndim == 0 else over


def _checked(k: int, n: int, confidence: float) -> None:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"collapses k={k!r} and edits n={n!r} must be whole numbers")
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson upper bound on a collapse rate, ``k`` collapses in ``n`` edits: the largest rate
    under which seeing ``k`` or fewer still has chance ``1 - confidence`` (exact, no normal approximation; 0 in
    200 gives 0.0149, "under 1.5%"). 1.0 when every edit collapsed."""
    from scipy.stats import beta

    _checked(k, n, confidence)
    return 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))


def lower_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson lower bound on a collapse rate (0.0 when no edit collapsed)."""
    from scipy.stats import beta

    _checked(k, n, confidence)
    return 0.0 if k == 0 else float(beta.ppf(1 - confidence, k, n - k + 1))
