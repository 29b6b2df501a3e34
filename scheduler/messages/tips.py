"""The self-care tip library (`messages/tips/`) and the choice of one tip per message.

A tip is a small Markdown file the practitioner owns: a few lines of front matter
saying which seasons and treatment phases it suits, then one to three sentences.
Loading is strict and lists every problem at once as `FILE:LINE: problem`, like the
CSV importer, so a broken edit is found and fixed in one go rather than one error
per attempt. Everything else here is pure: the same patient, day and history always
give the same tip.

The front matter is parsed here rather than by a YAML library on purpose: it has
three keys and one value shape, and a strict hand-written reader can say exactly
what is wrong on which line in words a practitioner understands.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias, TypeVar

from scheduler.core.domain import Phase

log = logging.getLogger(__name__)

# A patient does not get the same tip again within this many days. When every tip
# that suits them was sent inside the window, the message goes without a tip: a
# repeated tip reads as a form letter, a missing one goes unnoticed.
ROTATION_DAYS = 90

# A tip is a short aside in a LINE message, not an article. 120 characters reads
# best (messages/tips/README.md asks for that); 200 is where the loader refuses.
MAX_SENTENCES = 3
MAX_CHARS = 200


class TipSeason(StrEnum):
    SPRING = "spring"
    SUMMER = "summer"
    AUTUMN = "autumn"
    WINTER = "winter"
    DOYO = "doyo"  # the ~18 days before each 立春・立夏・立秋・立冬 (季節の変わり目)
    YEAR_END = "year_end"  # December: the year-end rush (年末)


ALL = "all"
ALL_SEASONS = frozenset(TipSeason)
ALL_PHASES = frozenset(Phase)


@dataclass(frozen=True)
class Tip:
    id: str  # the file name without `.md`; recorded with each delivery
    seasons: frozenset[TipSeason]  # `all` is stored as every season
    phases: frozenset[Phase]  # `all` (or the three phases listed) is every phase
    tags: tuple[str, ...]
    text: str

    def suits(self, phase: Phase | None, seasons: frozenset[TipSeason]) -> bool:
        """Whether this tip may go to a patient in `phase` on a day in `seasons`.

        A patient without a phase gets only tips meant for every phase: nothing is
        known about how they are, so nothing phase-specific is safe to say.
        """
        suits_phase = self.phases == ALL_PHASES if phase is None else phase in self.phases
        return suits_phase and not self.seasons.isdisjoint(seasons)


class TipError(Exception):
    """The tip library has problems; each names its file and line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- loading ---------------------------------------------------------------------

_FENCE = "---"
_KEYS = ("seasons", "phases", "tags")
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LIST = re.compile(r"\[(?P<items>[^\[\]]*)\]")
_TAG = re.compile(r"[\w-]+")  # \w: a practitioner may tag in Japanese
_SENTENCE_END = re.compile(r"[。．！？!?]+")
_CLOSING = "」』）)"

_ProblemFn: TypeAlias = Callable[[int, str], None]  # (line, text): record a problem


def load_tips(directory: Path) -> dict[str, Tip]:
    """Every tip in `directory`, by id; raises TipError listing every problem found.

    `README.md` and files starting with `_` or `.` are not tips (documentation,
    drafts the practitioner parks, editors' lock files); neither is anything that
    does not end in `.md` (editors' backups).
    """
    if not directory.is_dir():
        raise TipError([f"{directory}: no such directory of tips"])
    tips: dict[str, Tip] = {}
    problems: list[str] = []
    for path in sorted(directory.iterdir()):
        if not is_tip_file(path):
            continue
        tip, found = read_tip(path)
        problems += found
        if tip is not None:
            tips[tip.id] = tip
    if problems:
        raise TipError(problems)
    return tips


def is_tip_file(path: Path) -> bool:
    name = path.name
    return (
        path.suffix.lower() == ".md"
        and name.lower() != "readme.md"
        and not name.startswith(("_", "."))
        and path.is_file()
    )


def read_tip(path: Path, text: str | None = None) -> tuple[Tip | None, list[str]]:
    """The tip in the file at `path` (or `text`, the file's text being edited), and
    every problem found in it as `FILE:LINE: problem`."""
    problems: list[str] = []

    def problem(line: int, text: str) -> None:
        problems.append(f"{path}:{line}: {text}")

    tip_id = path.name[: -len(path.suffix)]
    if not _ID.fullmatch(tip_id) or path.suffix != ".md":
        problem(
            1,
            f"file name {path.name!r}: a tip's name is lower-case letters, digits and "
            "hyphens ending in .md, like breathing-long-exhale.md",
        )
    try:
        source = path.read_text(encoding="utf-8-sig") if text is None else text.lstrip("\ufeff")
    except UnicodeDecodeError as e:  # a BOM is harmless, but not another encoding
        problem(_line_of_byte(path, e.start), "not UTF-8 text: save the file as UTF-8")
        return None, problems
    lines = source.splitlines()
    if not lines or lines[0].strip() != _FENCE:
        problem(1, "missing front matter: the file must start with a line '---'")
        return None, problems
    closing = next((i for i in range(1, len(lines)) if lines[i].strip() == _FENCE), None)
    if closing is None:
        problem(1, "the front matter is not closed: add a line '---' after it")
        return None, problems

    values = _front_matter(lines[1:closing], problem)
    fence_line = closing + 1  # 1-based line of the closing '---'
    seasons = _choices(
        values, "seasons", TipSeason, "season", fence_line=fence_line, problem=problem
    )
    phases = _choices(values, "phases", Phase, "phase", fence_line=fence_line, problem=problem)
    tags = _tags(values, problem)

    body_lines = [line.rstrip() for line in lines[closing + 1 :]]
    text = "\n".join(body_lines).strip()
    first = next((i for i, line in enumerate(body_lines) if line.strip()), None)
    body_line = fence_line + 1 + first if first is not None else fence_line
    if not text:
        problem(body_line, "the tip has no text after the front matter")
    else:
        length = len("".join(text.split()))
        if length > MAX_CHARS:
            problem(
                body_line,
                f"the text is {length} characters; keep it to {MAX_CHARS} or fewer "
                "(about 120 reads best on LINE)",
            )
        sentences = count_sentences(text)
        if sentences > MAX_SENTENCES:
            problem(
                body_line,
                f"the text has {sentences} sentences; a tip is 1 to {MAX_SENTENCES}",
            )

    if problems or seasons is None or phases is None:
        return None, problems
    return Tip(tip_id, seasons, phases, tags, text), problems


def _line_of_byte(path: Path, offset: int) -> int:
    """The 1-based line holding byte `offset` of `path` (for a decoding error)."""
    return path.read_bytes()[:offset].count(b"\n") + 1


def count_sentences(text: str) -> int:
    """Sentences in a tip: each 。！？ (or a run of them) ends one, and text left
    after the last one is one more."""
    ends = len(_SENTENCE_END.findall(text))
    tail = text.rstrip().rstrip(_CLOSING)
    return ends + (0 if _SENTENCE_END.search(tail[-1:] or "。") else 1)


def _front_matter(
    lines: Sequence[str], problem: _ProblemFn
) -> dict[str, tuple[int, list[str] | None]]:
    """Key -> (line, items); items is None when the value was not a list."""
    values: dict[str, tuple[int, list[str] | None]] = {}
    for number, raw in enumerate(lines, start=2):
        line = raw.split("#", 1)[0].strip()  # a comment after '#' is the reader's note
        if not line:
            continue
        key, colon, value = (part.strip() for part in line.partition(":"))
        if not colon:
            problem(number, f"expected 'key: [value, ...]', got {line!r}")
            continue
        if key not in _KEYS:
            problem(number, f"unknown key {key!r} (expected seasons, phases or tags)")
            continue
        if key in values:
            problem(number, f"{key}: given twice (first on line {values[key][0]})")
            continue
        match = _LIST.fullmatch(value)
        if match is None:
            problem(number, f"{key}: expected a list like [a, b], got {value!r}")
            values[key] = (number, None)
            continue
        items = [item.strip() for item in match["items"].split(",")]
        values[key] = (number, [] if items == [""] else items)
    return values


_E = TypeVar("_E", TipSeason, Phase)


def _choices(
    values: Mapping[str, tuple[int, list[str] | None]],
    key: str,
    kind: type[_E],
    noun: str,
    *,
    fence_line: int,
    problem: _ProblemFn,
) -> frozenset[_E] | None:
    """The values of `key` as members of `kind`, `all` as every member; None if wrong."""
    allowed = [member.value for member in kind]
    expected = f"expected {', '.join(allowed)} or {ALL}"
    if key not in values:
        problem(fence_line, f"{key}: missing (for example {key}: [{ALL}])")
        return None
    number, items = values[key]
    if items is None:
        return None
    if not items:
        problem(number, f"{key}: the list is empty ({expected})")
        return None
    ok = True
    if ALL in items and len(items) > 1:
        problem(number, f"{key}: '{ALL}' stands alone; remove the other values")
        ok = False
    for item in _repeated(items):
        problem(number, f"{key}: {item!r} is listed twice")
        ok = False
    for item in items:
        if item != ALL and item not in allowed:
            problem(number, f"{key}: unknown {noun} {item!r} ({expected})")
            ok = False
    if not ok:
        return None
    if items == [ALL]:
        return frozenset(kind)
    return frozenset(kind(item) for item in items)


def _tags(
    values: Mapping[str, tuple[int, list[str] | None]], problem: _ProblemFn
) -> tuple[str, ...]:
    if "tags" not in values:
        return ()
    number, items = values["tags"]
    if items is None:
        return ()
    for item in items:
        if not _TAG.fullmatch(item):
            problem(number, f"tags: {item!r} is not a tag (letters, digits, '_' and '-')")
    for item in _repeated(items):
        problem(number, f"tags: {item!r} is listed twice")
    return tuple(items)


def _repeated(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.add(item)
    return repeated


# --- the seasons of a day -----------------------------------------------------------

# The seasonal moments by the string values of scheduler.core.seasons.SeasonalMoment;
# taking strings keeps this module independent of how those dates are computed.
_SEASON_STARTS = (
    ("risshun", TipSeason.SPRING),  # 立春
    ("rikka", TipSeason.SUMMER),  # 立夏
    ("risshu", TipSeason.AUTUMN),  # 立秋
    ("ritto", TipSeason.WINTER),  # 立冬
)
_DOYO = (  # 土用の入り, and the 立 that ends that 土用
    ("doyo_winter", "risshun"),
    ("doyo_spring", "rikka"),
    ("doyo_summer", "risshu"),
    ("doyo_autumn", "ritto"),
)
_MOMENTS = tuple(name for name, _ in _SEASON_STARTS) + tuple(name for name, _ in _DOYO)

_K = TypeVar("_K", bound=str)


def tip_seasons(day: date, seasonal: Mapping[_K, date]) -> frozenset[TipSeason]:
    """The seasons a clinic-local `day` belongs to, given the seasonal dates of
    `day`'s own year (`scheduler.core.seasons.seasonal_dates(day.year, tz)`, or any
    mapping keyed by those moments' string values).

    One season from 立春/立夏/立秋/立冬 (each starts on its day), plus DOYO from a
    土用の入り to the day before the 立 that ends it, plus YEAR_END in December.
    Only this year's dates are needed: winter is the one season that crosses New
    Year, and a day before this year's 立春 is in winter whatever day last year's
    立冬 fell on; every 土用 lies inside one calendar year.
    """
    dates: dict[str, date] = {name: when for name, when in seasonal.items()}
    missing = [name for name in _MOMENTS if name not in dates]
    if missing:
        raise ValueError(f"seasonal dates: missing {', '.join(missing)}")
    other_year = sorted({dates[name].year for name in _MOMENTS} - {day.year})
    if other_year:
        raise ValueError(f"seasonal dates for {other_year[0]} given for a day in {day.year}")

    started = [(dates[name], season) for name, season in _SEASON_STARTS if dates[name] <= day]
    seasons = {max(started)[1] if started else TipSeason.WINTER}
    if any(dates[start] <= day < dates[end] for start, end in _DOYO):
        seasons.add(TipSeason.DOYO)
    if day.month == 12:
        seasons.add(TipSeason.YEAR_END)
    return frozenset(seasons)


# --- choosing -------------------------------------------------------------------


def choose_tip(
    tips: Mapping[str, Tip],
    *,
    patient_id: int,
    phase: Phase | None,
    seasons: frozenset[TipSeason],
    day: date,
    recent: Mapping[str, date],
) -> Tip | None:
    """The tip for one message to one patient on `day`, or None.

    `recent` maps a tip id to the last day it was sent to this patient. A tip sent
    fewer than ROTATION_DAYS days before `day` (or, oddly, after it) is not chosen
    again; one sent exactly ROTATION_DAYS ago may be. Among the tips that suit the
    patient's phase and the day's seasons, never-sent tips come first, then the
    least recently sent; among those tied, a hash of (patient, day) picks one, so
    patients messaged on the same day get different tips and the same inputs always
    give the same tip, in any process. None when every suitable tip is inside the
    window: the message then goes without a tip rather than repeating one.
    """
    suitable = [
        tip
        for tip in tips.values()
        if tip.suits(phase, seasons)
        and (tip.id not in recent or (day - recent[tip.id]).days >= ROTATION_DAYS)
    ]
    if not suitable:
        return None
    oldest = min(recent.get(tip.id, date.min) for tip in suitable)
    tied = sorted(
        (tip for tip in suitable if recent.get(tip.id, date.min) == oldest), key=lambda t: t.id
    )
    return tied[_spread(patient_id, day) % len(tied)]


def _spread(patient_id: int, day: date) -> int:
    # hashlib, not hash(): Python salts str hashes per process, and the choice must
    # be the same in every worker and after every restart.
    key = f"{patient_id}\x1f{day.isoformat()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


SEASON_LABELS = {
    TipSeason.SPRING: "春",
    TipSeason.SUMMER: "夏",
    TipSeason.AUTUMN: "秋",
    TipSeason.WINTER: "冬",
}


def season_label(seasons: frozenset[TipSeason]) -> str:
    """The season in words for a message, e.g. 冬 or 冬の土用."""
    base = next((label for season, label in SEASON_LABELS.items() if season in seasons), "")
    return f"{base}の土用" if TipSeason.DOYO in seasons else base


class TipLibrary:
    """The tips of a directory, read again when a file changes. Like the templates,
    a broken edit leaves the last good set in use, with the problem logged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.problem: str | None = None
        self._signature: tuple[tuple[str, int], ...] | None = None
        self._tips: dict[str, Tip] = {}

    def current(self) -> dict[str, Tip]:
        try:
            signature = tuple(
                (path.name, path.stat().st_mtime_ns) for path in sorted(self.directory.iterdir())
            )
        except FileNotFoundError:
            signature = ()
        if signature != self._signature:
            self._signature = signature
            try:
                self._tips, self.problem = load_tips(self.directory), None
            except TipError as e:
                self.problem = str(e)
                log.error("tip problem, the last good tips stay in use:\n%s", e)
        return self._tips
