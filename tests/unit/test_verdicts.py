"""Is the difference real? The ratio of two measured points' throughputs with Fieller's
95 % interval, checked by hand, against scipy and by simulation."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

from mnist_jobs.lib import stats
from mnist_operator.core import verdicts as v
from mnist_operator.core.verdicts import Measured


# --------------------------------------------------------------------------- Student's t
@pytest.mark.parametrize("p", [0.975, 0.995, 0.9, 0.6, 0.025])
def test_t_quantile_matches_scipy_for_df_1_to_300(p):
    worst = max(abs(v.t_quantile(p, df) - scipy.stats.t.ppf(p, df)) / abs(scipy.stats.t.ppf(p, df))
                for df in range(1, 301))
    assert worst < 1e-9


@pytest.mark.parametrize("df", [0.5, 1.3, 2.5, 3.7, 17.25, 123.4, 1e4])
def test_t_quantile_for_real_df_as_welch_gives(df):
    assert v.t_quantile(0.975, df) == pytest.approx(scipy.stats.t.ppf(0.975, df), rel=1e-9)
    assert v.t_sf(1.7, df) == pytest.approx(scipy.stats.t.sf(1.7, df), rel=1e-10)


def test_incomplete_beta_matches_scipy():
    for a in (0.5, 1.0, 2.5, 40.0, 150.0):
        for b in (0.5, 1.0, 3.0):
            for x in (0.001, 0.1, 0.5, 0.9, 0.999):
                assert v.betainc(a, b, x) == pytest.approx(scipy.special.betainc(a, b, x),
                                                           rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("n", range(2, stats.MAX_REPEATS + 1))
def test_s_is_recovered_with_the_factor_the_bench_spread_with(n):
    assert v.t_975_of_repeats(n) == stats.T_975[n - 1]


# --------------------------------------------------------------------------- the points
def test_measured_from_status_strings():
    m = Measured.from_point({"inferPerSec": "6484.7", "repeats": 3, "low": "6400.0", "high": "6600.0"})
    assert m == Measured(6484.7, 6400.0, 6600.0, 3)
    assert m.mean == 6500.0
    assert m.var_of_mean == pytest.approx((100.0 / 4.303) ** 2)
    one = Measured.from_point({"inferPerSec": "6484.7"})
    assert one == Measured(6484.7) and not one.has_interval and one.mean == 6484.7
    for bad in ({"inferPerSec": "fast"}, {"inferPerSec": "nan"},
                {"inferPerSec": "1", "low": "1", "high": "2"},                 # no repeats
                {"inferPerSec": "1", "repeats": 3, "low": "2", "high": "1"},   # low > high
                {"inferPerSec": "1", "repeats": 1, "low": "1", "high": "2"}):  # n = 1 with interval
        with pytest.raises(ValueError):
            Measured.from_point(bad)
    with pytest.raises(ValueError):
        Measured(1.0, low=0.5)                                   # low without high


# --------------------------------------------------------------------------- ratio and verdict
def point_of(values: list[float]) -> Measured:
    s = stats.spread(values)
    return Measured(s.median, s.low, s.high, s.n)


def test_each_verdict_is_reached():
    base = Measured(1000.0, 990.0, 1010.0, 5)
    assert v.ratio(Measured(1200.0, 1190.0, 1210.0, 5), base).verdict == v.BETTER
    assert v.ratio(Measured(800.0, 790.0, 810.0, 5), base).verdict == v.WORSE
    assert v.ratio(Measured(1005.0, 995.0, 1015.0, 5), base).verdict == v.NO_DIFFERENCE
    assert v.ratio(Measured(1200.0), base).verdict == v.NO_INTERVAL
    assert v.ratio(base, Measured(900.0)).verdict == v.NO_INTERVAL
    # b's interval reaches 0: its mean is not significantly > 0, no bounded interval
    assert v.ratio(base, Measured(5.0, -1.0, 11.0, 3)).verdict == v.UNBOUNDED
    words = {v.BETTER, v.WORSE, v.NO_DIFFERENCE, v.NO_INTERVAL, v.UNBOUNDED}
    assert set(v.VERDICTS) == words and len(words) == 5


def test_no_interval_with_one_repeat_is_the_ratio_of_the_values_and_no_guess():
    r = v.ratio(Measured(1300.0), Measured(1000.0))
    assert (r.value, r.low, r.high, r.df, r.verdict) == (1.3, None, None, None, v.NO_INTERVAL)
    assert r.as_status() == {"ratio": "1.30", "verdict": "no interval"}
    # even an enormous difference gets no verdict without repeats
    assert v.ratio(Measured(9000.0), Measured(1000.0, 999.0, 1001.0, 10)).verdict == v.NO_INTERVAL
    assert v.ratio(Measured(5.0), Measured(0.0)).as_status() == {"ratio": "-", "verdict": "no interval"}


def test_by_hand_and_as_status():
    # a: mean 1200, se 20/4.303 ; b: mean 1000, se 20/4.303 (n = 3 each)
    a, b = Measured(1195.0, 1180.0, 1220.0, 3), Measured(1001.0, 980.0, 1020.0, 3)
    r = v.ratio(a, b)
    se = 20.0 / 4.303
    df = (se**2 + 1.2**2 * se**2) ** 2 / ((se**4 + 1.2**4 * se**4) / 2)
    assert r.value == pytest.approx(1.2) and r.df == pytest.approx(df)
    assert r.low < 1.2 < r.high and r.verdict == v.BETTER
    assert r.as_status() == {"ratio": "1.20", "low": f"{r.low:.2f}", "high": f"{r.high:.2f}",
                             "verdict": "better"}
    assert all(isinstance(x, str) for x in r.as_status().values())
    same = v.ratio(Measured(1000.0, 1000.0, 1000.0, 2), Measured(800.0, 800.0, 800.0, 2))
    assert (same.low, same.high, same.verdict) == (1.25, 1.25, v.BETTER)


def test_swapping_the_points_inverts_the_interval():
    a, b = point_of([1210.0, 1185.0, 1232.0, 1190.0]), point_of([1000.0, 1040.0, 970.0])
    ab, ba = v.ratio(a, b), v.ratio(b, a)
    # Fieller's set for b/a is exactly the reciprocal of a/b's only with the same df;
    # Welch's df at the estimate is the same both ways, so it is
    assert ab.df == pytest.approx(ba.df)
    assert (ab.low, ab.high) == pytest.approx((1 / ba.high, 1 / ba.low), rel=1e-9)
    assert ab.verdict == v.BETTER and ba.verdict == v.WORSE


def scipy_fieller(xa: np.ndarray, xb: np.ndarray) -> tuple[float, float]:
    """Fieller's interval from the raw repeats, independently: the roots of
    (ma - θ mb)² = t² (va + θ² vb) found numerically, t from scipy at Welch's df."""
    ma, mb = xa.mean(), xb.mean()
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    theta = ma / mb
    df = (va + theta**2 * vb) ** 2 / (va**2 / (len(xa) - 1) + theta**4 * vb**2 / (len(xb) - 1))
    t = scipy.stats.t.ppf(0.975, df)
    g = lambda th: (ma - th * mb) ** 2 - t**2 * (va + th**2 * vb)   # noqa: E731
    return (scipy.optimize.brentq(g, theta - 10 * theta, theta, xtol=1e-14),
            scipy.optimize.brentq(g, theta, theta + 10 * theta, xtol=1e-14))


@pytest.mark.parametrize("seed", range(8))
def test_the_interval_matches_an_independent_scipy_fieller(seed):
    rng = np.random.default_rng(seed)
    na, nb = rng.integers(2, 11, 2)
    xa, xb = rng.normal(1100, 60, na), rng.normal(1000, 40, nb)
    low, high = scipy_fieller(xa, xb)
    r = v.ratio(point_of(xa.tolist()), point_of(xb.tolist()))
    if r.verdict == v.UNBOUNDED:
        pytest.fail(f"unexpectedly unbounded for seed {seed}")
    assert (r.low, r.high) == pytest.approx((low, high), rel=1e-6)
    # and from the status's strings, low/high rounded to 0.1 as the bench writes them
    pa, pb = (stats.spread(x.tolist()) for x in (xa, xb))
    rs = v.compare({"inferPerSec": f"{pa.median:.1f}", "repeats": pa.n, "low": f"{pa.low:.1f}",
                    "high": f"{pa.high:.1f}"},
                   {"inferPerSec": f"{pb.median:.1f}", "repeats": pb.n, "low": f"{pb.low:.1f}",
                    "high": f"{pb.high:.1f}"})
    assert (rs.low, rs.high) == pytest.approx((low, high), rel=1e-3)


# --------------------------------------------------------------------------- coverage
TRIALS = 4000


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_the_interval_covers_the_true_ratio_about_95_percent_of_the_time(n):
    """Repeats of both points from normals with the same 5 % CV (two runs of one setup),
    true ratio 1.1, points built by stats.spread. An unbounded verdict counts as a miss.
    Welch's df is conservative for equal spreads at tiny n (~96.7 % at n = 2, 3)."""
    rng = np.random.default_rng(100 + n)
    a, b = rng.normal(1100.0, 55.0, (TRIALS, n)), rng.normal(1000.0, 50.0, (TRIALS, n))
    covered = unbounded = 0
    for xa, xb in zip(a.tolist(), b.tolist()):
        r = v.ratio(point_of(xa), point_of(xb))
        if r.verdict == v.UNBOUNDED:
            unbounded += 1
        else:
            covered += r.low <= 1.1 <= r.high
    print(f"n={n}: coverage {covered / TRIALS:.4f}, unbounded {unbounded}")
    assert 0.93 <= covered / TRIALS <= 0.97
