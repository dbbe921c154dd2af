"""Agreement metrics on hand-worked examples."""

import math

import pytest

from annotator.agreement import (
    agreement_with_consensus,
    consensus,
    kendall_tau,
    krippendorff_alpha,
    pairwise_agreement,
    ranking_units,
)


def test_pairwise_agreement_by_hand() -> None:
    # Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3). a: 1<2<3<4. b swaps the last two: disagrees on (2,3) only.
    assert pairwise_agreement([1, 2, 3, 4], [1, 2, 4, 3]) == 5 / 6
    # A tie against a strict order is a disagreement; a tie against a tie agrees.
    assert pairwise_agreement([1, 1, 2], [1, 2, 3]) == 2 / 3
    assert pairwise_agreement([1, 1, 2], [2, 2, 1]) == 1 / 3  # agree only that 0 and 1 tie
    assert pairwise_agreement([1, 2], [1, 2]) == 1.0
    with pytest.raises(ValueError):
        pairwise_agreement([1, 2], [1, 2, 3])


def test_kendall_tau_by_hand() -> None:
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # 6 pairs, 5 concordant, 1 discordant: tau = (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # With a tie: tau-b = (C - D) / sqrt((n0 - t1)(n0 - t2)) = (2 - 0) / sqrt(3 * 2).
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_krippendorff_published_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's Alpha-Reliability': 4 observers, 12 units,
    missing values; the paper gives nominal 0.743, ordinal 0.815, interval 0.849."""
    n = None
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3]
    c = [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]
    units = list(zip(a, b, c, d, strict=True))
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_small_case_by_hand() -> None:
    # Two coders, units (1,1), (2,2), (1,2). Coincidences: o11 = 2, o22 = 2, o12 = o21 = 1; n1 = n2 = 3, n = 6.
    # Nominal: D_o = (1 + 1) / 6; D_e = (3*3 + 3*3) / (6 * 5) = 18 / 30; alpha = 1 - (2/6) / (18/30) = 4/9.
    units = [(1, 1), (2, 2), (1, 2)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(4 / 9)
    # Ordinal with two values: delta^2(1,2) = (n1 + n2 - (n1 + n2)/2)^2 = 9, same ratio: 4/9 again.
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(4 / 9)
    assert krippendorff_alpha([(1, 1), (2, 2)], "ordinal") == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([(1, None)], "ordinal"))


def test_ranking_units_and_consensus() -> None:
    # Task 1 ranked by two annotators, task 2 by one (and a missing slot).
    units = ranking_units([[[1, 2, 3], [1, 3, 2]], [[2, 1], None]])
    assert units == [[1, 1], [2, 3], [3, 2], [2, None], [1, None]]
    assert consensus([[1, 2, 3], [1, 3, 2]]) == [1.0, 2.5, 2.5]
    # Leave-one-out: [1,2,3] against the others' mean [1, 3, 2] agrees on (0,1), (0,2), not (1,2).
    assert agreement_with_consensus([1, 2, 3], [[1, 3, 2]]) == pytest.approx(2 / 3)
