"""Paired bootstrap intervals of accuracy differences. Runs on: CPU, seconds."""

import pytest

from selfexplore.stats import paired_difference


def test_a_consistent_gain_is_outside_the_noise_and_a_tie_is_not():
    n = 2000
    a = [i % 4 == 0 for i in range(n)]  # 25% solved
    b = [x or i % 20 == 1 for i, x in enumerate(a)]  # b solves those and 5% more: +5 points, never worse
    gain = paired_difference([a], [b], resamples=2000)
    assert gain["mean"] == pytest.approx(0.05) and (gain["only_a"], gain["only_b"]) == (0, 100)
    assert 0.04 < gain["ci95"][0] < 0.05 < gain["ci95"][1] < 0.06
    swapped = [x != (i % 2 == 0) if i % 50 == 0 else x for i, x in enumerate(a)]  # 40 flips each way
    tie = paired_difference([a], [swapped], resamples=2000)
    assert tie["ci95"][0] < 0 < tie["ci95"][1]


def test_groups_pool_and_the_interval_is_reproducible():
    a = [[True, False, False, True], [False, False]]
    b = [[True, True, False, True], [True, False]]
    result = paired_difference(a, b, resamples=500)
    assert result["mean"] == pytest.approx(2 / 6) and result["n"] == 6
    assert result == paired_difference(a, b, resamples=500)
    with pytest.raises(ValueError, match="same non-empty problems"):
        paired_difference([[True]], [[True, False]])
