"""P-values and sample-size floor against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from models.conformal import (
    binomial_tail_p_value,
    clopper_pearson_upper,
    hoeffding_bentkus_p_value,
    min_calibration_size,
)


def _exact_cdf(k: int, n: int, alpha: float) -> float:
    a = Fraction(alpha)
    return float(sum(math.comb(n, j) * a**j * (1 - a) ** (n - j) for j in range(k + 1)))


@pytest.mark.parametrize("n", [1, 7, 29, 60])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3])
def test_binomial_tail_matches_exact_sum(n: int, alpha: float) -> None:
    for k in range(n + 1):
        assert binomial_tail_p_value(k, n, alpha) == pytest.approx(
            _exact_cdf(k, n, alpha), rel=1e-9, abs=1e-300
        )


def test_binomial_tail_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        binomial_tail_p_value(5, 4, 0.1)
    with pytest.raises(ValueError):
        binomial_tail_p_value(0, 10, 1.0)


def test_hoeffding_bentkus_formula_and_dominance() -> None:
    n, alpha = 50, 0.1
    for k in range(n + 1):
        r = k / n
        a = min(r, alpha)
        h1 = (a * math.log(a / alpha) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - alpha))
        expected = min(math.exp(-n * h1), math.e * _exact_cdf(k, n, alpha), 1.0)
        hb = hoeffding_bentkus_p_value(r, n, alpha)
        assert hb == pytest.approx(expected, rel=1e-9)
        # For a 0/1 loss HB is never tighter than the exact binomial p-value.
        assert hb >= binomial_tail_p_value(k, n, alpha) * (1 - 1e-12)


def test_clopper_pearson_inverts_the_binomial_test() -> None:
    n, delta = 120, 0.05
    for k in (0, 3, 17, 119):
        upper = clopper_pearson_upper(k, n, delta)
        assert binomial_tail_p_value(k, n, upper) == pytest.approx(delta, rel=1e-8)
    assert clopper_pearson_upper(n, n, delta) == 1.0


@pytest.mark.parametrize(
    ("alpha", "delta", "expected"), [(0.1, 0.05, 29), (0.5, 0.25, 2), (0.05, 0.1, 45)]
)
def test_min_calibration_size(alpha: float, delta: float, expected: int) -> None:
    needed = min_calibration_size(alpha, delta)
    assert needed == expected
    assert needed >= math.log(delta) / math.log(1 - alpha) - 1e-12
    assert binomial_tail_p_value(0, needed, alpha) <= delta
    assert binomial_tail_p_value(0, needed - 1, alpha) > delta


def test_vectorised_forms_agree_with_scalars() -> None:
    from models.conformal import binomial_tail_p_values, hoeffding_bentkus_p_values

    ks = np.arange(0, 31)
    vec = binomial_tail_p_values(ks, 30, 0.2)
    assert [binomial_tail_p_value(int(k), 30, 0.2) for k in ks] == pytest.approx(list(vec))
    vec_hb = hoeffding_bentkus_p_values(ks / 30, 30, 0.2)
    assert [hoeffding_bentkus_p_value(k / 30, 30, 0.2) for k in ks] == pytest.approx(list(vec_hb))
