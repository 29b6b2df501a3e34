"""The Results page: for a chosen period, each reason's messages by template and
channel — how many went, and how many were followed by a booking or a visit within
7 and 14 days — beside the patients who were due the same kind of message but could
not be messaged; and the presses of each message's booking link. The numbers come
from scheduler/outbox/results.py, the same as `tayori report`; a chart of bars
(inline SVG, drawn here: the page runs no scripts) sets the two groups side by side.
Read-only: the page changes nothing, so it records nothing in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from flask import current_app, render_template, request
from flask.typing import ResponseReturnValue

from scheduler.core.window import local_date
from scheduler.messages.context import REASON_LABELS
from scheduler.outbox.results import WINDOWS, Outcome, default_period, results
from scheduler.store.db import reading
from scheduler.web.app import clock_of
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import CHANNEL_LABELS, desk_date

# Those due a message who were not messaged at all (no consent, no usable contact):
# not a send that failed, which the other pages call 「送れなかった」.
UNMESSAGED = "お送りしていない方"
UNMESSAGED_WHY = "（同意・連絡先なし）"
LONGEST_PERIOD = timedelta(days=366 * 2)  # a longer one is cut to this (a slow page)
CHART_WINDOW = 14  # the chart shows the 14-day rates: the fuller picture


@dataclass(frozen=True)
class Cell:
    """One window of a row: "3/5" and "60%" (or a dash before any has ended)."""

    responded: int
    observed: int
    rate: str


@dataclass(frozen=True)
class Row:
    label: str
    note: str
    count: int
    cells: list[Cell]
    clicked: int = 0  # messages whose booking link was pressed
    clicks: int = 0  # presses
    unmessaged: bool = False  # the row of those who could not be messaged


@dataclass(frozen=True)
class Bar:
    label: str
    percent: float | None  # 0-100, None: nothing observed yet
    text: str
    kind: str  # "sent" or "unmessaged": its colour


@dataclass(frozen=True)
class Section:
    label: str
    rows: list[Row]
    bars: list[Bar]


@desk_route("/results")
def results_page(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    settings = here.settings
    now = clock_of(current_app).now()
    today = local_date(now, settings.timezone)
    first, last = default_period(today)
    problem = None
    try:
        first = _date(request.args.get("from")) or first
        last = _date(request.args.get("to")) or last
    except ValueError:
        problem = "日付は 2026-11-01 のように入力してください。"
        first, last = default_period(today)
    if first > last:
        first, last = last, first
    if last - first > LONGEST_PERIOD:
        first = last - LONGEST_PERIOD
        problem = "期間が長すぎるため、終わりの日から2年分を表示しています。"
    with reading(here.runtime.sessions) as db:
        found = results(db, first, last, now, settings.timezone)
    sections = [
        Section(
            REASON_LABELS[r.reason],
            [
                *(
                    Row(
                        CHANNEL_LABELS[g.channel] if g.channel else "—",
                        g.template.rpartition("/")[0]
                        or g.template,  # its folder: the channel is beside
                        g.outcome.count,
                        _cells(g.outcome),
                        clicked=g.clicked,
                        clicks=g.clicks,
                    )
                    for g in r.groups
                ),
                *(
                    [
                        Row(
                            UNMESSAGED,  # its note says why: no consent, no contact
                            f"同意なし {r.no_consent}・連絡先なし {r.no_contact}",
                            r.unmessaged.count,
                            _cells(r.unmessaged),
                            unmessaged=True,
                        )
                    ]
                    if r.unmessaged.count
                    else []
                ),
            ],
            [
                _bar("お送りした方", r.sent, "sent"),
                _bar(UNMESSAGED, r.unmessaged, "unmessaged"),
            ],
        )
        for r in found.reasons
    ]
    return render_template(
        "desk/results.html",
        desk=here,
        first=first,
        last=last,
        period=f"{desk_date(first, today)}〜{desk_date(last, today)}",
        unmessaged=UNMESSAGED + UNMESSAGED_WHY,
        problem=problem,
        windows=WINDOWS,
        chart_window=CHART_WINDOW,
        sections=sections,
    )


def _date(text: str | None) -> date | None:
    """A day typed in the form; ValueError for one not of this century (the
    period's arithmetic has no room near the calendar's ends)."""
    if not text:
        return None
    day = date.fromisoformat(text)
    if not 2000 <= day.year < 2100:
        raise ValueError(f"out of range: {day}")
    return day


def _cells(outcome: Outcome) -> list[Cell]:
    return [
        Cell(w.responded, w.observed, f"{w.rate:.0%}" if w.rate is not None else "—")
        for w in outcome.windows
    ]


def _bar(label: str, outcome: Outcome, kind: str) -> Bar:
    window = outcome.window(CHART_WINDOW)
    if window.rate is None:
        return Bar(label, None, "まだ集計できません" if outcome.count else "該当なし", kind)
    return Bar(
        label,
        window.rate * 100,
        f"{window.rate:.0%}（{window.responded}/{window.observed}）",
        kind,
    )
