"""P-values for the null "the miss rate exceeds α", and the sample-size floor they imply.

Every function here answers one question about a count of misses among n labelled leaking
responses. They are vectorised over thresholds because calibration tests a whole grid at once.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

# n·r̂ is rebuilt from a float ratio k/n and can land an ulp above the integer k; taking its
# ceiling would then count one miss too many. Snap values this close to an integer first.
_INTEGER_SNAP = 1e-9


def check_level(name: str, value: float) -> None:
    """Reject levels outside (0, 1): at 0 or 1 the guarantees are empty or impossible."""
    if not (isinstance(value, int | float) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def binomial_tail_p_values(misses: ArrayLike, n: int, alpha: float) -> NDArray[np.float64]:
    """P(Binomial(n, α) ≤ k) for each miss count k (vectorised form of the scalar below)."""
    check_level("alpha", alpha)
    _check_n(n)
    k = np.asarray(misses, dtype=np.int64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("miss counts must lie in [0, n]")
    if n == 0:
        # No data: nothing can be rejected.
        return np.ones(k.shape, dtype=np.float64)
    return np.asarray(special.bdtr(k, n, alpha), dtype=np.float64)


def binomial_tail_p_value(misses: int, n: int, alpha: float) -> float:
    """Exact p-value for H0: miss rate > α, given `misses` misses among n positives.

    Under H0 the miss count is stochastically larger than Binomial(n, α), so
    P(Binomial(n, α) ≤ misses) is a valid (super-uniform) p-value; it is also the smallest one
    that is valid for every miss rate above α, which is why it is the default.
    """
    return float(binomial_tail_p_values(np.asarray([misses]), n, alpha)[0])


def _h1(a: NDArray[np.float64], b: float) -> NDArray[np.float64]:
    """Bernoulli relative entropy KL(a ‖ b), with the 0·log 0 = 0 convention."""
    safe_a = np.where(a > 0.0, a, 1.0)
    first = np.where(a > 0.0, a * np.log(safe_a / b), 0.0)
    return np.asarray(first + (1.0 - a) * (np.log1p(-a) - math.log1p(-b)), dtype=np.float64)


def hoeffding_bentkus_p_values(risk_hat: ArrayLike, n: int, alpha: float) -> NDArray[np.float64]:
    """Vectorised Hoeffding–Bentkus p-values (see the scalar version)."""
    check_level("alpha", alpha)
    _check_n(n)
    r = np.asarray(risk_hat, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r < 0.0) or np.any(r > 1.0):
        raise ValueError("empirical risks must lie in [0, 1]")
    if n == 0:
        return np.ones(r.shape, dtype=np.float64)
    hoeffding = np.exp(-n * _h1(np.minimum(r, alpha), alpha))
    scaled = n * r
    nearest = np.round(scaled)
    k = np.where(np.abs(scaled - nearest) <= _INTEGER_SNAP, nearest, np.ceil(scaled))
    bentkus = math.e * np.asarray(special.bdtr(k.astype(np.int64), n, alpha), dtype=np.float64)
    return np.asarray(np.minimum(np.minimum(hoeffding, bentkus), 1.0), dtype=np.float64)


def hoeffding_bentkus_p_value(risk_hat: float, n: int, alpha: float) -> float:
    """Hoeffding–Bentkus p-value for H0: risk > α (Learn-then-Test, Angelopoulos et al. 2021).

    p = min(exp(−n·h1(min(r̂, α), α)), e·P(Binomial(n, α) ≤ ⌈n·r̂⌉)). It is valid for any loss in
    [0, 1]; for a 0/1 loss such as a miss it is never smaller than the exact binomial p-value,
    so it certifies less often. It is kept to match the paper and for non-binary losses.
    """
    return float(hoeffding_bentkus_p_values(np.asarray([risk_hat]), n, alpha)[0])


def clopper_pearson_upper(misses: int, n: int, delta: float) -> float:
    """Exact one-sided (1 − δ) upper confidence bound on a miss rate from `misses` of n.

    It is the p with P(Binomial(n, p) ≤ misses) = δ, so it is ≤ α exactly when the binomial
    p-value at α is ≤ δ: the bound and the test agree by construction.
    """
    check_level("delta", delta)
    _check_n(n)
    if not 0 <= misses <= n:
        raise ValueError("misses must lie in [0, n]")
    if misses == n:
        return 1.0
    return float(special.bdtri(misses, n, delta))


def min_calibration_size(alpha: float, delta: float) -> int:
    """Smallest n for which zero misses can certify (α, δ): n ≥ ln δ / ln(1 − α).

    With fewer positives even a perfect verifier cannot reject "miss rate > α" at level δ.
    The closed form is only a starting point: the answer is settled with the same p-value the
    calibration uses, so the boundary here and there can never disagree by a rounding error.
    """
    check_level("alpha", alpha)
    check_level("delta", delta)
    n = max(1, math.ceil(math.log(delta) / math.log1p(-alpha)))
    while n > 1 and binomial_tail_p_value(0, n - 1, alpha) <= delta:
        n -= 1
    while binomial_tail_p_value(0, n, alpha) > delta:
        n += 1
    return n
