"""The self-care tip library and the choice of one tip per message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

import pytest

from scheduler.core.domain import Phase
from scheduler.messages.tips import (
    ROTATION_DAYS,
    Tip,
    TipError,
    TipSeason,
    choose_tip,
    count_sentences,
    load_tips,
    tip_seasons,
)

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "messages" / "tips"
TIPS = load_tips(LIBRARY)

# Written by hand so these tests do not depend on how scheduler.core.seasons computes them.
SEASONAL_2025 = {
    "doyo_winter": date(2025, 1, 17),
    "risshun": date(2025, 2, 3),
    "doyo_spring": date(2025, 4, 17),
    "rikka": date(2025, 5, 5),
    "doyo_summer": date(2025, 7, 19),
    "risshu": date(2025, 8, 7),
    "doyo_autumn": date(2025, 10, 20),
    "ritto": date(2025, 11, 7),
}
SEASONAL_2026 = {
    "doyo_winter": date(2026, 1, 17),
    "risshun": date(2026, 2, 4),
    "doyo_spring": date(2026, 4, 17),
    "rikka": date(2026, 5, 5),
    "doyo_summer": date(2026, 7, 20),
    "risshu": date(2026, 8, 7),
    "doyo_autumn": date(2026, 10, 20),
    "ritto": date(2026, 11, 7),
}
SEASONAL = {2025: SEASONAL_2025, 2026: SEASONAL_2026}

S = TipSeason
PHASES: list[Phase | None] = [*Phase, None]


def seasons_of(day: date) -> frozenset[TipSeason]:
    return tip_seasons(day, SEASONAL[day.year])


def tip(
    tip_id: str,
    seasons: frozenset[TipSeason] = frozenset(TipSeason),
    phases: frozenset[Phase] = frozenset(Phase),
) -> Tip:
    return Tip(tip_id, seasons, phases, (), "テストです。")


# --- the shipped library ------------------------------------------------------------


def test_the_shipped_library_loads_without_errors() -> None:
    assert len(TIPS) >= 30


@pytest.mark.parametrize("season", list(TipSeason), ids=str)
@pytest.mark.parametrize("phase", PHASES, ids=str)
def test_every_phase_and_season_has_at_least_four_tips(
    phase: Phase | None, season: TipSeason
) -> None:
    assert sum(t.suits(phase, frozenset({season})) for t in TIPS.values()) >= 4


@pytest.mark.parametrize("season", list(TipSeason), ids=str)
def test_every_season_has_tips_written_for_it(season: TipSeason) -> None:
    # Tips for every season keep a message from sounding the same all year.
    assert sum(season in t.seasons and len(t.seasons) < len(S) for t in TIPS.values()) >= 3


@pytest.mark.parametrize("tip_id", sorted(TIPS))
def test_every_tip_is_one_to_three_polite_sentences(tip_id: str) -> None:
    text = TIPS[tip_id].text
    assert 1 <= count_sentences(text) <= 3
    assert text.endswith("。")
    assert re.search("ます|です|ください", text)


@pytest.mark.parametrize("tip_id", sorted(TIPS))
def test_every_tip_is_short_enough_for_line(tip_id: str) -> None:
    assert len(TIPS[tip_id].text) <= 120
    assert "\n" not in TIPS[tip_id].text


def test_acute_phase_tips_suggest_no_exercise() -> None:
    # Exercises are tagged `movement`; in the acute phase only rest, breath and warmth.
    assert [t.id for t in TIPS.values() if Phase.ACUTE in t.phases and "movement" in t.tags] == []


# --- choosing -------------------------------------------------------------------------


def test_the_choice_is_deterministic() -> None:
    args = {
        "patient_id": 7,
        "phase": Phase.REHAB,
        "seasons": frozenset({S.WINTER}),
        "day": date(2026, 1, 10),
        "recent": {"morning-light": date(2025, 12, 1)},
    }
    first = choose_tip(TIPS, **args)  # type: ignore[arg-type]
    assert first is not None
    assert all(choose_tip(TIPS, **args) == first for _ in range(5))  # type: ignore[arg-type]


def test_the_choice_is_the_same_in_every_process() -> None:
    # Python salts str hashes per process; the choice must not depend on that salt.
    code = (
        "from datetime import date; from pathlib import Path; import json;"
        "from scheduler.core.domain import Phase; from scheduler.messages.tips import *;"
        "tips = load_tips(Path('messages/tips'));"
        "print(json.dumps([choose_tip(tips, patient_id=p, phase=Phase.ACUTE,"
        " seasons=frozenset({TipSeason.SUMMER}), day=date(2026, 7, 1), recent={}).id"
        " for p in range(20)]))"
    )
    chosen = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        )
        for seed in ("1", "2")
    ]
    assert chosen[0] == chosen[1]


def test_patients_on_the_same_day_get_different_tips() -> None:
    chosen = {
        choose_tip(
            TIPS,
            patient_id=patient,
            phase=Phase.MAINTENANCE,
            seasons=seasons_of(date(2026, 6, 1)),
            day=date(2026, 6, 1),
            recent={},
        )
        for patient in range(50)
    }
    assert len(chosen) > 10


@pytest.mark.parametrize("phase", PHASES, ids=str)
def test_a_tip_is_never_repeated_within_90_days_over_a_simulated_year(
    phase: Phase | None,
) -> None:
    # A message every 3 days is about what an acute patient with two visits a week
    # gets in reminders alone; the year crosses New Year and every season.
    days = [date(2025, 7, 1) + timedelta(days=n) for n in range(0, 365, 3)]
    recent: dict[str, date] = {}
    sent: list[tuple[date, str]] = []
    without_tip = 0
    for day in days:
        chosen = choose_tip(
            TIPS, patient_id=42, phase=phase, seasons=seasons_of(day), day=day, recent=recent
        )
        if chosen is None:
            without_tip += 1
            continue
        assert chosen.suits(phase, seasons_of(day))
        sent.append((day, chosen.id))
        recent[chosen.id] = day

    last_sent: dict[str, date] = {}
    for day, tip_id in sent:
        if tip_id in last_sent:
            assert (day - last_sent[tip_id]).days >= ROTATION_DAYS, tip_id
        last_sent[tip_id] = day
    assert without_tip <= len(days) // 20


def test_never_sent_tips_come_before_the_least_recently_sent() -> None:
    tips = {t.id: t for t in (tip("a"), tip("b"), tip("c"))}
    day = date(2026, 6, 1)
    sent_long_ago = {"a": date(2025, 1, 1), "b": date(2025, 6, 1)}
    chosen = choose_tip(
        tips, patient_id=1, phase=None, seasons=frozenset({S.SUMMER}), day=day, recent=sent_long_ago
    )
    assert chosen == tips["c"]
    recent = {**sent_long_ago, "c": date(2025, 3, 1)}
    chosen = choose_tip(
        tips, patient_id=1, phase=None, seasons=frozenset({S.SUMMER}), day=day, recent=recent
    )
    assert chosen == tips["a"]


@pytest.mark.parametrize(
    ("days_ago", "chosen"),
    [
        pytest.param(0, False, id="today"),
        pytest.param(ROTATION_DAYS - 1, False, id="89-days-ago"),
        pytest.param(ROTATION_DAYS, True, id="90-days-ago"),
        pytest.param(-5, False, id="recorded-later"),
    ],
)
def test_a_tip_returns_only_after_the_rotation_window(days_ago: int, chosen: bool) -> None:
    only = tip("only")
    day = date(2026, 6, 1)
    result = choose_tip(
        {"only": only},
        patient_id=1,
        phase=Phase.REHAB,
        seasons=frozenset({S.SUMMER}),
        day=day,
        recent={"only": day - timedelta(days=days_ago)},
    )
    assert (result == only) is chosen


def test_when_every_suitable_tip_is_recent_the_message_goes_without_one() -> None:
    tips = {t.id: t for t in (tip("a"), tip("b"), tip("winter-only", frozenset({S.WINTER})))}
    day = date(2026, 6, 1)
    recent = {"a": day - timedelta(days=10), "b": day - timedelta(days=20)}
    assert (
        choose_tip(
            tips, patient_id=1, phase=None, seasons=frozenset({S.SUMMER}), day=day, recent=recent
        )
        is None
    )


@pytest.mark.parametrize(
    ("phase", "suitable"),
    [
        pytest.param(Phase.ACUTE, {"everyone", "acute"}, id="acute"),
        pytest.param(Phase.REHAB, {"everyone", "rehab-maintenance"}, id="rehab"),
        pytest.param(Phase.MAINTENANCE, {"everyone", "rehab-maintenance"}, id="maintenance"),
        pytest.param(None, {"everyone"}, id="no-phase-gets-only-all-phase-tips"),
    ],
)
def test_a_patient_gets_only_tips_for_their_phase(phase: Phase | None, suitable: set[str]) -> None:
    tips = {
        t.id: t
        for t in (
            tip("everyone"),
            tip("acute", phases=frozenset({Phase.ACUTE})),
            tip("rehab-maintenance", phases=frozenset({Phase.REHAB, Phase.MAINTENANCE})),
        )
    }
    assert {t.id for t in tips.values() if t.suits(phase, frozenset({S.SPRING}))} == suitable
    chosen = {
        choose_tip(
            tips,
            patient_id=p,
            phase=phase,
            seasons=frozenset({S.SPRING}),
            day=date(2026, 3, 1),
            recent={},
        )
        for p in range(40)
    }
    assert {t.id for t in chosen if t is not None} == suitable


def test_a_message_gets_only_tips_for_the_day_s_seasons() -> None:
    tips = {
        t.id: t
        for t in (
            tip("any-time"),
            tip("summer", frozenset({S.SUMMER})),
            tip("doyo", frozenset({S.DOYO})),
            tip("winter", frozenset({S.WINTER})),
            tip("year-end", frozenset({S.YEAR_END})),
        )
    }

    def chosen_on(day: date) -> set[str]:
        picks = (
            choose_tip(
                tips, patient_id=p, phase=Phase.REHAB, seasons=seasons_of(day), day=day, recent={}
            )
            for p in range(60)
        )
        return {t.id for t in picks if t is not None}

    assert chosen_on(date(2026, 6, 15)) == {"any-time", "summer"}
    assert chosen_on(date(2026, 7, 25)) == {"any-time", "summer", "doyo"}
    assert chosen_on(date(2026, 12, 10)) == {"any-time", "winter", "year-end"}


def test_the_shipped_library_gives_no_summer_tip_in_winter() -> None:
    day = date(2026, 1, 10)
    for patient in range(100):
        chosen = choose_tip(
            TIPS, patient_id=patient, phase=Phase.ACUTE, seasons=seasons_of(day), day=day, recent={}
        )
        assert chosen is not None
        assert S.WINTER in chosen.seasons


# --- the seasons of a day -----------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "seasons"),
    [
        pytest.param(date(2026, 1, 1), {S.WINTER}, id="new-year-is-winter"),
        pytest.param(date(2026, 1, 16), {S.WINTER}, id="before-doyo"),
        pytest.param(date(2026, 1, 17), {S.WINTER, S.DOYO}, id="doyo-no-iri"),
        pytest.param(date(2026, 2, 3), {S.WINTER, S.DOYO}, id="day-before-risshun"),
        pytest.param(date(2026, 2, 4), {S.SPRING}, id="risshun"),
        pytest.param(date(2026, 4, 17), {S.SPRING, S.DOYO}, id="spring-doyo"),
        pytest.param(date(2026, 5, 4), {S.SPRING, S.DOYO}, id="day-before-rikka"),
        pytest.param(date(2026, 5, 5), {S.SUMMER}, id="rikka"),
        pytest.param(date(2026, 7, 19), {S.SUMMER}, id="day-before-summer-doyo"),
        pytest.param(date(2026, 7, 20), {S.SUMMER, S.DOYO}, id="summer-doyo"),
        pytest.param(date(2026, 8, 7), {S.AUTUMN}, id="risshu"),
        pytest.param(date(2026, 10, 20), {S.AUTUMN, S.DOYO}, id="autumn-doyo"),
        pytest.param(date(2026, 11, 6), {S.AUTUMN, S.DOYO}, id="day-before-ritto"),
        pytest.param(date(2026, 11, 7), {S.WINTER}, id="ritto"),
        pytest.param(date(2026, 11, 30), {S.WINTER}, id="end-of-november"),
        pytest.param(date(2026, 12, 1), {S.WINTER, S.YEAR_END}, id="december-first"),
        pytest.param(date(2026, 12, 31), {S.WINTER, S.YEAR_END}, id="new-year-s-eve"),
        pytest.param(date(2025, 2, 3), {S.SPRING}, id="risshun-2025-on-the-3rd"),
    ],
)
def test_tip_seasons_at_the_boundaries(day: date, seasons: set[TipSeason]) -> None:
    assert seasons_of(day) == seasons


class Moment(StrEnum):
    """Stands in for scheduler.core.seasons.SeasonalMoment, whose dates callers pass."""

    RISSHUN = "risshun"
    RIKKA = "rikka"
    RISSHU = "risshu"
    RITTO = "ritto"
    DOYO_WINTER = "doyo_winter"
    DOYO_SPRING = "doyo_spring"
    DOYO_SUMMER = "doyo_summer"
    DOYO_AUTUMN = "doyo_autumn"


def test_tip_seasons_take_a_mapping_keyed_by_a_str_enum() -> None:
    keyed = {Moment(name): when for name, when in SEASONAL_2026.items()}
    assert tip_seasons(date(2026, 2, 3), keyed) == {S.WINTER, S.DOYO}


@pytest.mark.parametrize(
    ("seasonal", "message"),
    [
        pytest.param(SEASONAL_2025, "seasonal dates for 2025 given for a day in 2026", id="year"),
        pytest.param(
            {k: v for k, v in SEASONAL_2026.items() if k != "rikka"}, "missing rikka", id="missing"
        ),
    ],
)
def test_tip_seasons_refuse_dates_that_do_not_fit(seasonal: dict[str, date], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tip_seasons(date(2026, 6, 1), seasonal)


# --- loading ----------------------------------------------------------------------------

GOOD_FRONT = "---\nseasons: [all]\nphases: [all]\n---\n"
TOO_LONG = "あ" * 210 + "。"

BROKEN = [
    # (file, content, line, problem)
    ("unknown-key.md", "---\nseasons: [all]\nphases: [all]\nmood: [calm]\n---\n休みます。\n", 4,
     "unknown key 'mood' (expected seasons, phases or tags)"),
    ("unknown-season.md", "---\nseasons: [winter, monsoon]\nphases: [all]\n---\n休みます。\n", 2,
     "seasons: unknown season 'monsoon' (expected spring, summer, autumn, winter, doyo, "
     "year_end or all)"),
    ("unknown-phase.md", "---\nseasons: [all]\nphases: [chronic]\n---\n休みます。\n", 3,
     "phases: unknown phase 'chronic' (expected acute, rehab, maintenance or all)"),
    ("empty-body.md", GOOD_FRONT + "\n\n", 4, "the tip has no text after the front matter"),
    ("no-front-matter.md", "休みます。\n", 1, "missing front matter"),
    ("too-long.md", GOOD_FRONT + "\n" + TOO_LONG + "\n", 6, "the text is 211 characters"),
    ("too-many-sentences.md", GOOD_FRONT + "一です。二です。三です。四です。\n", 5,
     "the text has 4 sentences"),
    ("not-a-list.md", "---\nseasons: winter\nphases: [all]\n---\n休みます。\n", 2,
     "seasons: expected a list like [a, b], got 'winter'"),
    ("missing-phases.md", "---\nseasons: [all]\n---\n休みます。\n", 3, "phases: missing"),
    ("all-and-more.md", "---\nseasons: [all, winter]\nphases: [all]\n---\n休みます。\n", 2,
     "seasons: 'all' stands alone"),
    ("twice.md", "---\nseasons: [all]\nseasons: [winter]\nphases: [all]\n---\n休みます。\n", 3,
     "seasons: given twice (first on line 2)"),
    ("unclosed.md", "---\nseasons: [all]\nphases: [all]\n休みます。\n", 1, "not closed"),
    ("Bad_Name.md", GOOD_FRONT + "休みます。\n", 1, "file name 'Bad_Name.md'"),
]  # fmt: skip


def test_load_tips_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    for name, content, _, _ in BROKEN:
        (tmp_path / name).write_text(content, encoding="utf-8")
    (tmp_path / "fine.md").write_text(GOOD_FRONT + "休みます。\n", encoding="utf-8")

    with pytest.raises(TipError) as raised:
        load_tips(tmp_path)

    problems = raised.value.problems
    assert len(problems) == len(BROKEN)
    for name, _, line, problem in BROKEN:
        prefix = f"{tmp_path / name}:{line}: "
        assert any(p.startswith(prefix) and problem in p for p in problems), (prefix, problem)
    assert str(raised.value) == "\n".join(problems)


def test_load_tips_reads_the_front_matter_and_the_text(tmp_path: Path) -> None:
    (tmp_path / "warm-neck.md").write_text(
        "\ufeff---\r\n"
        "seasons: [winter, doyo]   # the cold months\r\n"
        "phases: [rehab, maintenance]\r\n"
        "tags: [cold, 首]\r\n"
        "---\r\n"
        "\r\n"
        "首を温めてみてください。\r\n",
        encoding="utf-8",
    )
    assert load_tips(tmp_path) == {
        "warm-neck": Tip(
            "warm-neck",
            frozenset({S.WINTER, S.DOYO}),
            frozenset({Phase.REHAB, Phase.MAINTENANCE}),
            ("cold", "首"),
            "首を温めてみてください。",
        )
    }


def test_all_means_every_season_and_every_phase(tmp_path: Path) -> None:
    (tmp_path / "any.md").write_text(GOOD_FRONT + "休みます。\n", encoding="utf-8")
    loaded = load_tips(tmp_path)["any"]
    assert (loaded.seasons, loaded.phases, loaded.tags) == (frozenset(S), frozenset(Phase), ())


def test_load_tips_skips_the_readme_and_drafts(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Tips\n", encoding="utf-8")
    (tmp_path / "_draft.md").write_text("not yet\n", encoding="utf-8")
    (tmp_path / "rest.md~").write_text("an editor's backup\n", encoding="utf-8")
    (tmp_path / "rest.md").write_text(GOOD_FRONT + "休みます。\n", encoding="utf-8")
    assert list(load_tips(tmp_path)) == ["rest"]


def test_load_tips_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TipError, match="no such directory"):
        load_tips(tmp_path / "tips")
