"""The seasonal moments of the Japanese calendar, computed from the sun.

立春・立夏・立秋・立冬 and each 土用の入り are defined (as the National Astronomical
Observatory of Japan publishes them) by the sun's apparent geocentric ecliptic longitude
reaching a given angle. This module computes that longitude with the method of Jean Meeus,
*Astronomical Algorithms* (2nd ed., 1998), finds the instant it crosses the target, and
takes the date in the clinic's time zone. Pure: no I/O, no clock, no ephemeris file.

Accuracy: the longitude is within 0.7" of JPL's DE421 ephemeris over 1900–2050, and the
instants within 20 seconds of DE421's for 1900–2025, where ΔT (TT − UT, the drift of the
Earth's rotation) is observed. For later years ΔT can only be predicted, and predictions
differ by tens of seconds by 2050 and minutes by 2100 (see `_delta_t_seconds`). A date is
therefore right to the day unless its instant falls within about that much of midnight.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache

FIRST_YEAR = 1900
LAST_YEAR = 2100


class SeasonalMoment(StrEnum):
    """The eight moments, declared in the order they fall in a calendar year."""

    DOYO_WINTER = "doyo_winter"
    RISSHUN = "risshun"
    DOYO_SPRING = "doyo_spring"
    RIKKA = "rikka"
    DOYO_SUMMER = "doyo_summer"
    RISSHU = "risshu"
    DOYO_AUTUMN = "doyo_autumn"
    RITTO = "ritto"


# The sun's apparent ecliptic longitude (degrees) at each moment. A 土用 is the ~18 days
# before a 立: it begins 18° of solar longitude earlier (NAOJ's definition of 雑節).
LONGITUDE: dict[SeasonalMoment, float] = {
    SeasonalMoment.DOYO_WINTER: 297.0,
    SeasonalMoment.RISSHUN: 315.0,
    SeasonalMoment.DOYO_SPRING: 27.0,
    SeasonalMoment.RIKKA: 45.0,
    SeasonalMoment.DOYO_SUMMER: 117.0,
    SeasonalMoment.RISSHU: 135.0,
    SeasonalMoment.DOYO_AUTUMN: 207.0,
    SeasonalMoment.RITTO: 225.0,
}

JAPANESE: dict[SeasonalMoment, str] = {
    SeasonalMoment.DOYO_WINTER: "冬の土用の入り",
    SeasonalMoment.RISSHUN: "立春",
    SeasonalMoment.DOYO_SPRING: "春の土用の入り",
    SeasonalMoment.RIKKA: "立夏",
    SeasonalMoment.DOYO_SUMMER: "夏の土用の入り",
    SeasonalMoment.RISSHU: "立秋",
    SeasonalMoment.DOYO_AUTUMN: "秋の土用の入り",
    SeasonalMoment.RITTO: "立冬",
}

# Each season's 立 and the start of the 土用 that leads into it.
DOYO_BEFORE: dict[SeasonalMoment, SeasonalMoment] = {
    SeasonalMoment.RISSHUN: SeasonalMoment.DOYO_WINTER,
    SeasonalMoment.RIKKA: SeasonalMoment.DOYO_SPRING,
    SeasonalMoment.RISSHU: SeasonalMoment.DOYO_SUMMER,
    SeasonalMoment.RITTO: SeasonalMoment.DOYO_AUTUMN,
}

# --- The Earth's heliocentric position: VSOP87D truncated as in Meeus, Appendix III -----
# Each term is (A, B, C): A·cos(B + C·τ), A in units of 1e-8 rad (or 1e-8 AU for R),
# τ in Julian millennia of TT from J2000.0. The series L_n is multiplied by τ^n (ch. 32).
# Meeus's truncation keeps the longitude within about 1" of the full theory, i.e. about
# 25 seconds of the sun's motion.

_L0 = (
    (175347046, 0.0, 0.0),
    (3341656, 4.6692568, 6283.0758500),
    (34894, 4.62610, 12566.15170),
    (3497, 2.7441, 5753.3849),
    (3418, 2.8289, 3.5231),
    (3136, 3.6277, 77713.7715),
    (2676, 4.4181, 7860.4194),
    (2343, 6.1352, 3930.2097),
    (1324, 0.7425, 11506.7698),
    (1273, 2.0371, 529.6910),
    (1199, 1.1096, 1577.3435),
    (990, 5.233, 5884.927),
    (902, 2.045, 26.298),
    (857, 3.508, 398.149),
    (780, 1.179, 5223.694),
    (753, 2.533, 5507.553),
    (505, 4.583, 18849.228),
    (492, 4.205, 775.523),
    (357, 2.920, 0.067),
    (317, 5.849, 11790.629),
    (284, 1.899, 796.298),
    (271, 0.315, 10977.079),
    (243, 0.345, 5486.778),
    (206, 4.806, 2544.314),
    (205, 1.869, 5573.143),
    (202, 2.458, 6069.777),
    (156, 0.833, 213.299),
    (132, 3.411, 2942.463),
    (126, 1.083, 20.775),
    (115, 0.645, 0.980),
    (103, 0.636, 4694.003),
    (102, 0.976, 15720.839),
    (102, 4.267, 7.114),
    (99, 6.21, 2146.17),
    (98, 0.68, 155.42),
    (86, 5.98, 161000.69),
    (85, 1.30, 6275.96),
    (85, 3.67, 71430.70),
    (80, 1.81, 17260.15),
    (79, 3.04, 12036.46),
    (75, 1.76, 5088.63),
    (74, 3.50, 3154.69),
    (74, 4.68, 801.82),
    (70, 0.83, 9437.76),
    (62, 3.98, 8827.39),
    (61, 1.82, 7084.90),
    (57, 2.78, 6286.60),
    (56, 4.39, 14143.50),
    (56, 3.47, 6279.55),
    (52, 0.19, 12139.55),
    (52, 1.33, 1748.02),
    (51, 0.28, 5856.48),
    (49, 0.49, 1194.45),
    (41, 5.37, 8429.24),
    (41, 2.40, 19651.05),
    (39, 6.17, 10447.39),
    (37, 6.04, 10213.29),
    (37, 2.57, 1059.38),
    (36, 1.71, 2352.87),
    (36, 1.78, 6812.77),
    (33, 0.59, 17789.85),
    (30, 0.44, 83996.85),
    (30, 2.74, 1349.87),
    (25, 3.16, 4690.48),
)
_L1 = (
    (628331966747, 0.0, 0.0),
    (206059, 2.678235, 6283.075850),
    (4303, 2.6351, 12566.1517),
    (425, 1.590, 3.523),
    (119, 5.796, 26.298),
    (109, 2.966, 1577.344),
    (93, 2.59, 18849.23),
    (72, 1.14, 529.69),
    (68, 1.87, 398.15),
    (67, 4.41, 5507.55),
    (59, 2.89, 5223.69),
    (56, 2.17, 155.42),
    (45, 0.40, 796.30),
    (36, 0.47, 775.52),
    (29, 2.65, 7.11),
    (21, 5.34, 0.98),
    (19, 1.85, 5486.78),
    (19, 4.97, 213.30),
    (17, 2.99, 6275.96),
    (16, 0.03, 2544.31),
    (16, 1.43, 2146.17),
    (15, 1.21, 10977.08),
    (12, 2.83, 1748.02),
    (12, 3.26, 5088.63),
    (12, 5.27, 1194.45),
    (12, 2.08, 4694.00),
    (11, 0.77, 553.57),
    (10, 1.30, 6286.60),
    (10, 4.24, 1349.87),
    (9, 2.70, 242.73),
    (9, 5.64, 951.72),
    (8, 5.30, 2352.87),
    (6, 2.65, 9437.76),
    (6, 4.67, 4690.48),
)
_L2 = (
    (52919, 0.0, 0.0),
    (8720, 1.0721, 6283.0758),
    (309, 0.867, 12566.152),
    (27, 0.05, 3.52),
    (16, 5.19, 26.30),
    (16, 3.68, 155.42),
    (10, 0.76, 18849.23),
    (9, 2.06, 77713.77),
    (7, 0.83, 775.52),
    (5, 4.66, 1577.34),
    (4, 1.03, 7.11),
    (4, 3.44, 5573.14),
    (3, 5.14, 796.30),
    (3, 6.05, 5507.55),
    (3, 1.19, 242.73),
    (3, 6.12, 529.69),
    (3, 0.31, 398.15),
    (3, 2.28, 553.57),
    (2, 4.38, 5223.69),
    (2, 3.75, 0.98),
)
_L3 = (
    (289, 5.844, 6283.076),
    (35, 0.0, 0.0),
    (17, 5.49, 12566.15),
    (3, 5.20, 155.42),
    (1, 4.72, 3.52),
    (1, 5.30, 18849.23),
    (1, 5.97, 242.73),
)
_L4 = (
    (114, 3.142, 0.0),
    (8, 4.13, 6283.08),
    (1, 3.84, 12566.15),
)
_L5 = ((1, 3.14, 0.0),)
_LONGITUDE_SERIES = (_L0, _L1, _L2, _L3, _L4, _L5)

# The radius vector only scales the aberration (20.5"/R), so the leading terms suffice:
# the omitted ones change R by < 1e-5 AU, i.e. the longitude by < 0.001".
_R0 = (
    (100013989, 0.0, 0.0),
    (1670700, 3.0984635, 6283.0758500),
    (13956, 3.05525, 12566.15170),
    (3084, 5.1985, 77713.7715),
    (1628, 1.1739, 5753.3849),
    (1576, 2.8469, 7860.4194),
    (925, 5.453, 11506.770),
    (542, 4.564, 3930.210),
    (472, 3.661, 5884.927),
)
_R1 = (
    (103019, 1.107490, 6283.075850),
    (1721, 1.0644, 12566.1517),
    (702, 3.142, 0.0),
)
_R2 = ((4359, 5.7846, 6283.0758),)
_RADIUS_SERIES = (_R0, _R1, _R2)

# --- Nutation in longitude: IAU 1980 theory, Meeus ch. 22, Table 22.A ---------------------
# (D, M, M', F, Ω multipliers, coefficient, its change per century), in 0.0001".
# Only the terms of at least 0.004" are kept; the rest add up to a few hundredths of an
# arcsecond (under a second of time). The obliquity terms are not needed for longitude.
_NUTATION = (
    (0, 0, 0, 0, 1, -171996.0, -174.2),
    (-2, 0, 0, 2, 2, -13187.0, -1.6),
    (0, 0, 0, 2, 2, -2274.0, -0.2),
    (0, 0, 0, 0, 2, 2062.0, 0.2),
    (0, 1, 0, 0, 0, 1426.0, -3.4),
    (0, 0, 1, 0, 0, 712.0, 0.1),
    (-2, 1, 0, 2, 2, -517.0, 1.2),
    (0, 0, 0, 2, 1, -386.0, -0.4),
    (0, 0, 1, 2, 2, -301.0, 0.0),
    (-2, -1, 0, 2, 2, 217.0, -0.5),
    (-2, 0, 1, 0, 0, -158.0, 0.0),
    (-2, 0, 0, 2, 1, 129.0, 0.1),
    (0, 0, -1, 2, 2, 123.0, 0.0),
    (2, 0, 0, 0, 0, 63.0, 0.0),
    (0, 0, 1, 0, 1, 63.0, 0.1),
    (2, 0, -1, 2, 2, -59.0, 0.0),
    (0, 0, -1, 0, 1, -58.0, -0.1),
    (0, 0, 1, 2, 1, -51.0, 0.0),
    (-2, 0, 2, 0, 0, 48.0, 0.0),
    (0, 0, -2, 2, 1, 46.0, 0.0),
)

_ARCSEC = 1.0 / 3600.0
_J2000 = 2451545.0  # Julian Day of 2000-01-01 12:00 (TT for ephemeris time)
_J2000_UTC = datetime(2000, 1, 1, 12, tzinfo=UTC)
_MEAN_DEGREES_PER_DAY = 360.0 / 365.2422  # the mean sun, for the first guess and steps
_TOLERANCE = timedelta(milliseconds=10)


def sun_longitude(moment: datetime) -> float:
    """The sun's apparent geocentric ecliptic longitude at `moment`, in degrees [0, 360).

    Apparent means as seen from the Earth's centre, referred to the true equinox of date
    (with nutation) and displaced by aberration — the quantity the calendar defines.
    """
    jde = _julian_ephemeris_day(moment)
    tau = (jde - _J2000) / 365250.0  # Julian millennia of TT, for VSOP87
    t = tau * 10.0  # Julian centuries of TT, for nutation

    # Meeus ch. 25 ("higher accuracy"): the sun's geometric longitude is the Earth's
    # heliocentric one plus 180°, converted to the FK5 system by -0.09033" (the term in
    # tan β is below 0.0001" because the sun's latitude stays under 1.2").
    earth_longitude = math.degrees(_vsop(_LONGITUDE_SERIES, tau))
    radius = _vsop(_RADIUS_SERIES, tau)
    geometric = earth_longitude + 180.0 - 0.09033 * _ARCSEC
    aberration = -20.4898 * _ARCSEC / radius  # Meeus eq. 25.10
    return (geometric + _nutation_in_longitude(t) + aberration) % 360.0


@lru_cache(maxsize=4096)
def moment_of(moment: SeasonalMoment, year: int) -> datetime:
    """The instant (aware, UTC, to the second) of `moment` in calendar year `year`."""
    _check_year(year)
    target = LONGITUDE[moment]
    # First guess: the mean sun is at 0° around 20 March and moves 0.9856° a day. All
    # eight moments fall between mid-January and early November, so the guess — and the
    # answer, never more than a few days from it — stay inside the year.
    days_after_equinox = target / _MEAN_DEGREES_PER_DAY
    if days_after_equinox > 285:  # 297° and 315° come in January/February of this year
        days_after_equinox -= 365.2422
    guess = datetime(year, 3, 20, 12, tzinfo=UTC) + timedelta(days=days_after_equinox)
    return _crossing(target, guess)


def date_of(moment: SeasonalMoment, year: int, tz: tzinfo) -> date:
    """The calendar date of `moment` in `year` on the clinic's clock (`tz`)."""
    return moment_of(moment, year).astimezone(tz).date()


def seasonal_dates(year: int, tz: tzinfo) -> dict[SeasonalMoment, date]:
    """All eight dates of `year` in the clinic's time zone, in date order."""
    moments = {moment: moment_of(moment, year) for moment in SeasonalMoment}
    ordered = sorted(moments.items(), key=lambda item: item[1])
    return {moment: instant.astimezone(tz).date() for moment, instant in ordered}


def _crossing(target: float, guess: datetime) -> datetime:
    """The instant near `guess` at which the longitude equals `target` (secant method).

    The longitude grows almost linearly (0.95–1.02°/day), so each step shrinks the error
    by a factor of hundreds; four or five evaluations reach a few milliseconds.
    """
    previous: tuple[datetime, float] | None = None
    current = guess
    for _ in range(20):
        gap = _angle_difference(target, sun_longitude(current))
        if previous is None:
            rate = _MEAN_DEGREES_PER_DAY
        else:
            elapsed_days = (current - previous[0]) / timedelta(days=1)
            rate = (previous[1] - gap) / elapsed_days
        step = timedelta(days=gap / rate)
        previous = (current, gap)
        current += step
        if abs(step) < _TOLERANCE:
            return _to_the_second(current)
    raise ArithmeticError(f"no convergence towards solar longitude {target}° near {guess}")


def _angle_difference(target: float, actual: float) -> float:
    """`target - actual` folded into [-180, 180), so a crossing of 0°/360° is continuous."""
    return (target - actual + 180.0) % 360.0 - 180.0


def _to_the_second(moment: datetime) -> datetime:
    return (moment + timedelta(microseconds=500_000)).replace(microsecond=0)


def _vsop(series: tuple[tuple[tuple[float, float, float], ...], ...], tau: float) -> float:
    """Σ_n τ^n Σ A·cos(B + C·τ), scaled from 1e-8 units (Meeus eq. 32.2)."""
    total = 0.0
    for power, terms in enumerate(series):
        total += tau**power * sum(a * math.cos(b + c * tau) for a, b, c in terms)
    return total / 1e8


def _nutation_in_longitude(t: float) -> float:
    """Δψ in degrees, IAU 1980 (Meeus ch. 22), `t` in Julian centuries of TT."""
    # The fundamental arguments (Meeus ch. 22): mean elongation of the Moon, mean anomalies
    # of the Sun and the Moon, the Moon's argument of latitude, longitude of its node.
    d = 297.85036 + 445267.111480 * t - 0.0019142 * t**2 + t**3 / 189474
    m = 357.52772 + 35999.050340 * t - 0.0001603 * t**2 - t**3 / 300000
    m_moon = 134.96298 + 477198.867398 * t + 0.0086972 * t**2 + t**3 / 56250
    f = 93.27191 + 483202.017538 * t - 0.0036825 * t**2 + t**3 / 327270
    node = 125.04452 - 1934.136261 * t + 0.0020708 * t**2 + t**3 / 450000
    total = 0.0
    for kd, km, km_moon, kf, knode, coefficient, per_century in _NUTATION:
        argument = kd * d + km * m + km_moon * m_moon + kf * f + knode * node
        total += (coefficient + per_century * t) * math.sin(math.radians(argument))
    return total * 0.0001 * _ARCSEC


def _julian_ephemeris_day(moment: datetime) -> float:
    """The Julian Ephemeris Day (TT) of an aware instant given in UT."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"moment must be timezone-aware, got naive {moment.isoformat()}")
    # UTC stands in for UT1: they differ by under 0.9 s, a tenth of the method's error.
    julian_day = _J2000 + (moment - _J2000_UTC) / timedelta(days=1)
    decimal_year = 2000.0 + (julian_day - _J2000) / 365.25
    return julian_day + _delta_t_seconds(decimal_year) / 86400.0


def _delta_t_seconds(y: float) -> float:
    """ΔT = TT − UT in seconds: the polynomials of Espenak & Meeus (NASA, *Five Millennium
    Canon of Solar Eclipses*, 2006), within about a second of the observed values up to 2005.

    After 2005 they are a prediction, and by now a high one: they give 74.5 s for 2025,
    when the Earth's rotation has in fact kept ΔT near 69 s. The gap grows to some 20 s
    by 2050 and perhaps two minutes by 2100 — nobody can predict it closely, which is
    why dates within a couple of minutes of midnight in future decades are uncertain by
    nature, whatever the algorithm.
    """
    if y < FIRST_YEAR - 1 or y > LAST_YEAR + 2:
        raise ValueError(f"ΔT is modelled for {FIRST_YEAR}–{LAST_YEAR} only, not {y:.1f}")
    if y < 1900:
        t = y - 1860
        return (
            7.62
            + 0.5737 * t
            - 0.251754 * t**2
            + 0.01680668 * t**3
            - 0.0004473624 * t**4
            + t**5 / 233174
        )
    if y < 1920:
        t = y - 1900
        return -2.79 + 1.494119 * t - 0.0598939 * t**2 + 0.0061966 * t**3 - 0.000197 * t**4
    if y < 1941:
        t = y - 1920
        return 21.20 + 0.84493 * t - 0.076100 * t**2 + 0.0020936 * t**3
    if y < 1961:
        t = y - 1950
        return 29.07 + 0.407 * t - t**2 / 233 + t**3 / 2547
    if y < 1986:
        t = y - 1975
        return 45.45 + 1.067 * t - t**2 / 260 - t**3 / 718
    if y < 2005:
        t = y - 2000
        return (
            63.86
            + 0.3345 * t
            - 0.060374 * t**2
            + 0.0017275 * t**3
            + 0.000651814 * t**4
            + 0.00002373599 * t**5
        )
    if y < 2050:
        t = y - 2000
        return 62.92 + 0.32217 * t + 0.005589 * t**2
    u = (y - 1820) / 100
    return -20 + 32 * u**2 - 0.5628 * (2150 - y)


def _check_year(year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(
            f"seasonal dates are computed for the years {FIRST_YEAR}–{LAST_YEAR} only, not {year}"
        )
