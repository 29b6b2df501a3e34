"""The seasonal moments (立春・立夏・立秋・立冬 and each 土用の入り) from the sun.

The reference is `seasons_reference.csv`: the same moments computed independently with
JPL's DE421 ephemeris (1900–2052) and PyEphem (2053–2100), in Japan Standard Time —
`seasons_reference.md` says how to reproduce it.
"""

from __future__ import annotations

import csv
import functools
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest

from scheduler.core.seasons import (
    DOYO_BEFORE,
    JAPANESE,
    LONGITUDE,
    SeasonalMoment,
    date_of,
    moment_of,
    seasonal_dates,
    sun_longitude,
)

TOKYO = ZoneInfo("Asia/Tokyo")
# Almanacs reckon in standard time. Asia/Tokyo kept summer time in 1948–1951, so the
# historical rows are compared on a fixed UTC+9 clock.
JST = timezone(timedelta(hours=9), "JST")
REFERENCE_FILE = Path(__file__).with_name("seasons_reference.csv")


class Reference(NamedTuple):
    year: int
    moment: SeasonalMoment
    date: date
    instant: datetime


def _load_reference() -> list[Reference]:
    with REFERENCE_FILE.open(encoding="utf-8") as lines:
        rows = csv.DictReader(line for line in lines if not line.startswith("#"))
        return [
            Reference(
                year=int(row["year"]),
                moment=SeasonalMoment(row["moment"]),
                date=date.fromisoformat(row["date_jst"]),
                instant=datetime.fromisoformat(row["moment_jst"]),
            )
            for row in rows
        ]


REFERENCE = _load_reference()
YEARS = sorted({row.year for row in REFERENCE})


def _reference_dates(year: int) -> dict[SeasonalMoment, date]:
    return {row.moment: row.date for row in REFERENCE if row.year == year}


def _minutes_from_midnight(instant: datetime) -> float:
    local = instant.astimezone(JST)
    since = (local - local.replace(hour=0, minute=0, second=0)).total_seconds() / 60
    return min(since, 24 * 60 - since)


@functools.cache
def _errors_in_seconds() -> list[tuple[int, float]]:
    """(year, our instant minus the reference's) for every row, computed once."""
    return [
        (row.year, (moment_of(row.moment, row.year) - row.instant).total_seconds())
        for row in REFERENCE
    ]


NEAR_MIDNIGHT = [row for row in REFERENCE if _minutes_from_midnight(row.instant) < 30]


def test_reference_covers_every_moment_of_every_year_from_1900_to_2100() -> None:
    years = sorted({row.year for row in REFERENCE})
    assert years == list(range(1900, 2101))
    assert len(REFERENCE) == len(YEARS) * len(SeasonalMoment)


@pytest.mark.parametrize("year", range(2000, 2051))
def test_every_moment_matches_the_reference_from_2000_to_2050(year: int) -> None:
    assert seasonal_dates(year, TOKYO) == _reference_dates(year)


@pytest.mark.parametrize("year", [y for y in YEARS if not 2000 <= y <= 2050])
def test_every_moment_matches_the_reference_in_the_rest_of_1900_to_2100(year: int) -> None:
    assert seasonal_dates(year, JST) == _reference_dates(year)


@pytest.mark.parametrize(
    "row",
    NEAR_MIDNIGHT,
    ids=[f"{r.year}-{r.moment}-{r.instant:%m-%dT%H:%M:%S}" for r in NEAR_MIDNIGHT],
)
def test_moments_near_midnight_fall_on_the_reference_day(row: Reference) -> None:
    assert date_of(row.moment, row.year, JST) == row.date


def test_the_reference_has_moments_near_midnight_in_2000_to_2050() -> None:
    # Guards the test above against a reference that lost its hard cases:
    # 2001 夏の土用 00:03, 2021 立春 23:59, 2030 夏の土用 23:58, 2031 立冬 00:06, ...
    in_range = [row for row in NEAR_MIDNIGHT if 2000 <= row.year <= 2050]
    assert len(in_range) >= 10
    assert min(_minutes_from_midnight(row.instant) for row in in_range) < 3


def test_instants_are_within_half_a_minute_of_the_reference_up_to_2025() -> None:
    # Up to now ΔT (the Earth's rotation) is observed, so this measures the algorithm.
    assert max(abs(error) for year, error in _errors_in_seconds() if year <= 2025) <= 30


def test_instants_are_within_a_minute_of_the_reference_up_to_2100() -> None:
    # Beyond today both computations predict ΔT, and their predictions part by up to
    # half a minute; neither is "right" until the Earth has turned.
    assert max(abs(error) for _, error in _errors_in_seconds()) <= 60


def test_risshun_2021_is_the_third_of_february() -> None:
    # The first 立春 on 3 February since 1897: the moment was 23:59 JST.
    assert date_of(SeasonalMoment.RISSHUN, 2021, TOKYO) == date(2021, 2, 3)


def test_risshun_1984_is_the_fifth_of_february() -> None:
    # The last 立春 on 5 February (00:19 JST).
    assert date_of(SeasonalMoment.RISSHUN, 1984, TOKYO) == date(1984, 2, 5)


@pytest.mark.parametrize(
    ("moment", "published"),
    [
        # The National Astronomical Observatory of Japan's almanac (暦要項), to the minute.
        (SeasonalMoment.RISSHUN, datetime(2021, 2, 3, 23, 59, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHUN, datetime(2022, 2, 4, 5, 51, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHUN, datetime(2023, 2, 4, 11, 43, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHUN, datetime(2024, 2, 4, 17, 27, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHUN, datetime(2025, 2, 3, 23, 10, tzinfo=TOKYO)),
        (SeasonalMoment.RIKKA, datetime(2024, 5, 5, 9, 10, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHU, datetime(2024, 8, 7, 9, 9, tzinfo=TOKYO)),
        (SeasonalMoment.RITTO, datetime(2024, 11, 7, 7, 20, tzinfo=TOKYO)),
        (SeasonalMoment.RIKKA, datetime(2025, 5, 5, 14, 57, tzinfo=TOKYO)),
        (SeasonalMoment.RISSHU, datetime(2025, 8, 7, 14, 52, tzinfo=TOKYO)),
        (SeasonalMoment.RITTO, datetime(2025, 11, 7, 13, 4, tzinfo=TOKYO)),
    ],
    ids=lambda value: value.isoformat(timespec="minutes") if isinstance(value, datetime) else value,
)
def test_published_almanac_moments_are_reproduced_to_the_minute(
    moment: SeasonalMoment, published: datetime
) -> None:
    ours = moment_of(moment, published.year)
    assert abs(ours - published) <= timedelta(seconds=60)
    assert ours.astimezone(TOKYO).date() == published.date()


@pytest.mark.parametrize("year", [2024, 2025])
def test_summer_doyo_of_2024_and_2025_starts_on_the_nineteenth_of_july(year: int) -> None:
    assert date_of(SeasonalMoment.DOYO_SUMMER, year, TOKYO) == date(year, 7, 19)


@pytest.mark.parametrize("season", list(DOYO_BEFORE))
def test_doyo_starts_about_eighteen_days_before_its_season(season: SeasonalMoment) -> None:
    doyo = DOYO_BEFORE[season]
    for year in range(2000, 2051):
        days = date_of(season, year, TOKYO) - date_of(doyo, year, TOKYO)
        assert 17 <= days.days <= 19, year


@pytest.mark.parametrize("year", [1899, 2101, 0, -44, 3000])
def test_years_outside_1900_to_2100_are_refused(year: int) -> None:
    for compute in (
        lambda: moment_of(SeasonalMoment.RISSHUN, year),
        lambda: date_of(SeasonalMoment.RISSHUN, year, TOKYO),
        lambda: seasonal_dates(year, TOKYO),
    ):
        with pytest.raises(ValueError, match=r"1900–2100 only, not -?\d+"):
            compute()


def test_the_first_and_last_years_are_computed() -> None:
    assert date_of(SeasonalMoment.DOYO_WINTER, 1900, JST) == date(1900, 1, 17)
    assert date_of(SeasonalMoment.RITTO, 2100, JST) == _reference_dates(2100)[SeasonalMoment.RITTO]


def test_dates_follow_the_clinic_time_zone() -> None:
    # 冬の土用の入り 2024 came at 00:24 JST on 18 January: still the 17th in UTC and
    # in Europe, while 立春 2021 at 23:59 JST was the 3rd everywhere west of Japan too.
    assert date_of(SeasonalMoment.DOYO_WINTER, 2024, TOKYO) == date(2024, 1, 18)
    assert date_of(SeasonalMoment.DOYO_WINTER, 2024, ZoneInfo("Europe/Berlin")) == date(2024, 1, 17)
    assert date_of(SeasonalMoment.DOYO_WINTER, 2024, UTC) == date(2024, 1, 17)
    assert date_of(SeasonalMoment.RISSHUN, 2021, ZoneInfo("Pacific/Auckland")) == date(2021, 2, 4)


def test_moment_of_is_an_aware_utc_instant_in_its_year() -> None:
    instant = moment_of(SeasonalMoment.RISSHUN, 2021)
    assert instant.tzinfo is UTC
    assert instant == datetime(2021, 2, 3, 14, 58, 46, tzinfo=UTC)


def test_seasonal_dates_are_in_date_order() -> None:
    dates = seasonal_dates(2026, TOKYO)
    assert list(dates) == list(SeasonalMoment)
    assert list(dates.values()) == sorted(dates.values())


def test_sun_longitude_reaches_the_target_at_the_reference_instant() -> None:
    row = next(r for r in REFERENCE if (r.year, r.moment) == (2024, SeasonalMoment.RISSHUN))
    # The sun moves about 1° a day, so 0.001° is under two minutes.
    assert sun_longitude(row.instant) == pytest.approx(315.0, abs=0.001)


def test_sun_longitude_wraps_to_zero_at_the_march_equinox() -> None:
    # The March equinox of 2024 was at 03:06 UTC on 20 March.
    before = sun_longitude(datetime(2024, 3, 20, 2, 0, tzinfo=UTC))
    after = sun_longitude(datetime(2024, 3, 20, 4, 0, tzinfo=UTC))
    assert 359.9 < before < 360.0
    assert 0.0 <= after < 0.1


def test_sun_longitude_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sun_longitude(datetime(2024, 2, 4, 17, 27))


def test_every_moment_has_a_longitude_and_a_japanese_name() -> None:
    assert set(LONGITUDE) == set(JAPANESE) == set(SeasonalMoment)
    assert JAPANESE[SeasonalMoment.RISSHUN] == "立春"
    assert JAPANESE[SeasonalMoment.DOYO_SUMMER] == "夏の土用の入り"
    for season, doyo in DOYO_BEFORE.items():
        assert (LONGITUDE[season] - LONGITUDE[doyo]) % 360 == 18
