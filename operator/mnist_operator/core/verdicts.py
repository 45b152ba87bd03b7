"""Is the difference between two measured points real? The ratio of their throughputs
and its 95 % interval.

A point as the status carries it (a bench row): the median ``inferPerSec`` and, with
repeats n >= 2, the 95 % Student-t interval of the MEAN, ``low``/``high`` =
``mean ± t(0.975, n-1)·s/√n`` (``mnist_jobs.lib.stats.spread``). From (low, high, n)
we recover mean = (low+high)/2 and s = (high-low)/2 · √n / t(0.975, n-1).

Method: Fieller's interval for the ratio of two independent means, with the
Welch–Satterthwaite degrees of freedom of the pivot ``mean_a - θ·mean_b`` taken at
θ = the estimated ratio. Fieller's pivot is exactly t-like for normal repeats however
large the spread (the delta method on log means linearises, which goes wrong exactly
when the spread is large relative to the mean, the case a verdict has to get right),
and it says honestly when the denominator is too uncertain for any bounded interval
(verdict :data:`UNBOUNDED`); Welch's df because the two points' spreads differ.

The ratio's point value is the ratio of the means (what the interval is about); with
no interval on either side (n = 1) it is the ratio of the values, and the verdict is
:data:`NO_INTERVAL` -- never a guess.

Pure: the standard library only. Numbers stay floats; :meth:`Ratio.as_status` renders
strings (the API conventions keep floats out of status).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

#: The verdicts on "a / b": a is faster, slower, not distinguishable, or no verdict.
BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference"
NO_INTERVAL = "no interval"       # a side measured once: no interval, no verdict
UNBOUNDED = "unbounded"           # Fieller: b's mean not significantly > 0, no bounded interval
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE, NO_INTERVAL, UNBOUNDED)

CONFIDENCE = 0.95


# --------------------------------------------------------------------------- Student's t
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (> 0, real) degrees of freedom."""
    if t < 0:
        return 1.0 - t_sf(-t, df)
    return 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_pdf(t: float, df: float) -> float:
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with ``df`` > 0 (real) degrees of freedom.

    Exact for df 1 and 2 (closed forms); otherwise Newton's method on :func:`t_sf`
    from a Cornish-Fisher start, kept inside a shrinking bracket (bisection when a
    Newton step leaves it), to ~1e-12 relative."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2.0 / (4 * p * (1 - p)))
    target = 1.0 - p                              # solve t_sf(t) = target, t > 0
    z = NormalDist().inv_cdf(p)                   # Cornish-Fisher expansion in 1/df
    t = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
         + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
    lo, hi = 0.0, max(2.0 * t, 1.0)
    while t_sf(hi, df) > target:                  # bracket [lo, hi] around the root
        lo, hi = hi, hi * 2.0
    t = min(max(t, lo), hi)
    for _ in range(200):
        f = t_sf(t, df) - target                  # decreasing in t
        if f > 0:
            lo = t
        else:
            hi = t
        step = f / _t_pdf(t, df)                  # Newton: t_sf' = -pdf
        new = t + step
        if not lo < new < hi:
            new = (lo + hi) / 2.0
        if abs(new - t) <= 1e-13 * max(1.0, abs(new)) or hi - lo <= 1e-13 * hi:
            return new
        t = new
    return t


def t_975_of_repeats(n: int) -> float:
    """t(0.975, n-1) as the bench's intervals were built with it: ``stats.T_975`` holds
    the quantiles to 3 decimals, so s is recovered with the same rounded factor."""
    return round(t_quantile(0.975, n - 1), 3)


# --------------------------------------------------------------------------- a measured point
def _number(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return x


@dataclass(frozen=True)
class Measured:
    """One measured point's throughput: the headline ``value`` (the median of the
    repeats), and with ``n`` >= 2 repeats the 95 % t interval of the mean."""
    value: float
    low: float | None = None
    high: float | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("low and high come together")
        if self.value < 0:
            raise ValueError(f"throughput must be >= 0, got {self.value}")
        if self.low is not None:
            if self.n < 2:
                raise ValueError(f"an interval needs n >= 2 repeats, got n={self.n}")
            if self.low > self.high:
                raise ValueError(f"low {self.low} > high {self.high}")

    @classmethod
    def from_strings(cls, value: str, low: str | None = None, high: str | None = None,
                     n: int | str = 1) -> Measured:
        """From the decimal strings the status holds ("6484.7")."""
        lo = None if low is None else _number(low, "low")
        hi = None if high is None else _number(high, "high")
        return cls(_number(value, "value"), lo, hi, int(n))

    @classmethod
    def from_point(cls, point: Mapping[str, Any]) -> Measured:
        """From a bench row: ``inferPerSec`` and, with repeats >= 2, ``repeats``,
        ``low`` and ``high``."""
        if "low" in point and "repeats" not in point:
            raise ValueError("a point with an interval must say its repeats")
        return cls.from_strings(point["inferPerSec"], point.get("low"), point.get("high"),
                                point.get("repeats", 1))

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    @property
    def mean(self) -> float:
        """The mean of the repeats (the interval's centre); the value without one."""
        return self.value if self.low is None else (self.low + self.high) / 2.0

    @property
    def var_of_mean(self) -> float:
        """s² / n, the squared standard error of the mean (needs an interval)."""
        if self.low is None:
            raise ValueError("no interval: one measurement has no spread")
        se = (self.high - self.low) / 2.0 / t_975_of_repeats(self.n)
        return se * se


# --------------------------------------------------------------------------- the ratio
@dataclass(frozen=True)
class Ratio:
    """a / b: ``value`` the ratio of the means (of the values without intervals; None
    when b is 0 and there is no interval), ``low``/``high`` the 95 % Fieller interval
    (None unless the verdict is better, worse or no difference), ``df`` the Welch df."""
    value: float | None
    low: float | None
    high: float | None
    df: float | None
    verdict: str

    def as_status(self, digits: int = 2) -> dict[str, str]:
        """Strings for the status: ``{"ratio": "1.23", "low": "1.10", "high": "1.37",
        "verdict": "better"}`` (low/high only when there is a bounded interval)."""
        out = {"ratio": "-" if self.value is None else f"{self.value:.{digits}f}"}
        if self.low is not None:
            out.update(low=f"{self.low:.{digits}f}", high=f"{self.high:.{digits}f}")
        out["verdict"] = self.verdict
        return out


def ratio_text(cells: Mapping[str, Any], unit: str = "") -> str:
    """A ratio as :meth:`Ratio.as_status` writes it, for people: ``1.23 [1.10, 1.37]``,
    or ``1.23`` where there is no bounded interval."""
    interval = (f" [{cells['low']}, {cells['high']}]"
                if cells.get("low") is not None and cells.get("high") is not None else "")
    return f"{cells['ratio']}{unit}{interval}"


def verdict_of(low: float, high: float) -> str:
    """better when the interval lies above 1, worse when below, else no difference."""
    if low > 1.0:
        return BETTER
    if high < 1.0:
        return WORSE
    return NO_DIFFERENCE


def welch_df(va: float, vb: float, na: int, nb: int, theta: float) -> float:
    """Welch–Satterthwaite df of ``mean_a - θ·mean_b`` (va, vb the variances of the means)."""
    wa, wb = va, theta * theta * vb
    denom = wa * wa / (na - 1) + wb * wb / (nb - 1)
    return (wa + wb) ** 2 / denom if denom > 0 else math.inf


def ratio(a: Measured, b: Measured, confidence: float = CONFIDENCE) -> Ratio:
    """a's mean throughput over b's, with Fieller's ``confidence`` interval."""
    if not (a.has_interval and b.has_interval):
        value = a.value / b.value if b.value > 0 else None
        return Ratio(value, None, None, None, NO_INTERVAL)
    ma, mb, va, vb = a.mean, b.mean, a.var_of_mean, b.var_of_mean
    if mb <= 0:
        return Ratio(None, None, None, None, UNBOUNDED)
    theta = ma / mb
    if va == 0 and vb == 0:                       # identical repeats on both sides
        return Ratio(theta, theta, theta, math.inf, verdict_of(theta, theta))
    df = welch_df(va, vb, a.n, b.n, theta)
    t = t_quantile(0.5 + confidence / 2.0, df)
    t2 = t * t
    # (ma - θ mb)² <= t² (va + θ² vb)  <=>  θ²(mb² - t² vb) - 2θ ma mb + (ma² - t² va) <= 0
    qa = mb * mb - t2 * vb
    if qa <= 0:                                   # mb not significantly > 0: no bounded set
        return Ratio(theta, None, None, df, UNBOUNDED)
    disc = ma * ma * vb + mb * mb * va - t2 * va * vb   # = (quarter discriminant) / t²; > 0 here
    root = t * math.sqrt(max(disc, 0.0))
    low, high = (ma * mb - root) / qa, (ma * mb + root) / qa
    return Ratio(theta, low, high, df, verdict_of(low, high))


def compare(a: Mapping[str, Any], b: Mapping[str, Any], confidence: float = CONFIDENCE) -> Ratio:
    """:func:`ratio` of two bench rows (status points)."""
    return ratio(Measured.from_point(a), Measured.from_point(b), confidence)


__all__ = ["BETTER", "WORSE", "NO_DIFFERENCE", "NO_INTERVAL", "UNBOUNDED", "VERDICTS",
           "Measured", "Ratio", "ratio", "compare", "ratio_text", "verdict_of", "t_quantile", "t_sf",
           "betainc", "welch_df", "t_975_of_repeats"]
