"""The Messages page: every template of the clinic's messages folder with its reason
and channels, and the tip library; an editor for each file with a preview (LINE and
email side by side, for the sample patient or a chosen one) and the lint's problems
at their lines; saving (only a text the lint passes) and restoring kept versions.

What is previewed and checked is what would be sent: the editor's text stands in
for the file in a `Renderer` of the same folder (scheduler/messages/templates.py),
which `preview_message` (as `tayori preview`) and `lint_template` (the checks of
`tayori lint`) render with. Saving replaces the file in one step (temporary file,
then rename); the worker's renderer sees the new file's time and reads it again
for its next message, with no restart (Jinja's `auto_reload`; the tip library
compares the folder's file times).

Every version the desk replaces or writes is kept (`template_versions`), and every
save and restore is in the desk's audit log. The page works without scripts: the
プレビュー button posts the form and the page comes back with the preview.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
)
from flask.typing import ResponseReturnValue

from scheduler.core.domain import PATIENT_REASONS, ChannelName, Reason, member
from scheduler.messages.context import (
    LINE_FOLLOW,
    PHASE_LABELS,
    REASON_LABELS,
    SAMPLE_PATIENT,
)
from scheduler.messages.files import (
    editable_path,
    is_tip,
    template_files,
    tip_files,
    write_atomically,
)
from scheduler.messages.lint import lint_template, lint_tip, sample_message_context
from scheduler.messages.template_names import template_in
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.messages.tips import ALL_PHASES, ALL_SEASONS, TipSeason, read_tip
from scheduler.outbox.manual import preview_message
from scheduler.settings import Settings
from scheduler.store.db import reading, transaction
from scheduler.store.desk import audit
from scheduler.store.models import DeskUser
from scheduler.store.paused_campaigns import paused_ids
from scheduler.store.template_versions import (
    find_version,
    keep_as_found,
    keep_version,
    versions_of,
)
from scheduler.web.app import SECURITY_HEADERS, clock_of, log_facts
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import (
    CHANNEL_LABELS,
    Said,
    desk_datetime,
    lint_problem,
    lint_problem_at,
)

log = logging.getLogger(__name__)

PARTS = {
    "_footer.j2": "メールのフッター（医院名・連絡先・配信停止）",
    "_tip.j2": "セルフケアのひとこと",
    "_booking.j2": "ご予約の案内",
}
SEASON_LABELS = {
    TipSeason.SPRING: "春",
    TipSeason.SUMMER: "夏",
    TipSeason.AUTUMN: "秋",
    TipSeason.WINTER: "冬",
    TipSeason.DOYO: "土用",
    TipSeason.YEAR_END: "年末",
}
# A template or tip is a page of text at most; anything longer was pasted by mistake.
MAX_TEXT = 20_000
# Not the web app's `static` folder: Flask would serve that to anyone, signed in or not.
ASSETS = Path(__file__).resolve().parent / "assets"
EDITOR_SCRIPT = "messages.js"
EDITOR_POLICY = (
    SECURITY_HEADERS["Content-Security-Policy"] + "; script-src 'self'; connect-src 'self'"
)
VERSIONS_SHOWN = 20
_LINE = re.compile(r"(\d+): (.*)", re.DOTALL)


@dataclass(frozen=True)
class Entry:
    name: str  # relative to the messages folder
    label: str


@dataclass(frozen=True)
class Group:
    title: str
    entries: list[Entry]
    note: str = ""


@dataclass(frozen=True)
class TipRow:
    name: str
    id: str
    seasons: str
    phases: str
    text: str
    broken: bool


@dataclass
class Problems:
    """The lint's problems, those of the edited file by line."""

    by_line: dict[int, list[Said]] = field(default_factory=dict)
    general: list[Said] = field(default_factory=list)  # the file's, without a line
    elsewhere: list[Said] = field(default_factory=list)  # in the messages that use it

    def __bool__(self) -> bool:
        return bool(self.by_line or self.general or self.elsewhere)

    @property
    def count(self) -> int:
        return sum(map(len, self.by_line.values())) + len(self.general) + len(self.elsewhere)


@dataclass(frozen=True)
class Preview:
    channel: str
    text: str | None = None
    subject: str | None = None
    problem: Said | None = None


@dataclass(frozen=True)
class VersionRow:
    id: int
    at: str
    by: str
    content: str
    current: bool


# --- the list ------------------------------------------------------------------------


@desk_route("/messages")
def messages(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    directory = here.settings.messages_dir
    with reading(here.runtime.sessions) as db:
        paused = paused_ids(db)
    return render_template(
        "desk/messages.html",
        desk=here,
        groups=_groups(here.settings, template_files(directory), paused),
        tips=_tip_groups([_tip_row(directory, name) for name in tip_files(directory)]),
    )


def _tip_groups(rows: list[TipRow]) -> list[tuple[str, list[TipRow]]]:
    """The tips by the seasons they suit (those with a problem first): the library is
    long, and a practitioner looks for a season's tips."""
    order = ["問題あり", "いつでも", *SEASON_LABELS.values()]
    groups: dict[str, list[TipRow]] = {}
    for row in rows:
        groups.setdefault("問題あり" if row.broken else row.seasons, []).append(row)

    def rank(label: str) -> tuple[int, str]:
        first = label.split("・")[0]
        return (order.index(first) if first in order else len(order), label)

    return [(label, groups[label]) for label in sorted(groups, key=rank)]


def _groups(settings: Settings, names: list[str], paused: Collection[str]) -> list[Group]:
    """The templates by folder, in the order of the flow: the patients' reasons, the
    campaigns (`paused`: the ids of those paused in the desk or by the command), the
    LINE greeting, the digest, then the parts they include."""
    folders: dict[str, list[str]] = {}
    for name in names:
        folder = name.rsplit("/", 1)[0] if "/" in name else ""
        folders.setdefault(folder, []).append(name)
    campaigns = {c.template: c for c in settings.campaigns}
    order = [r.value for r in PATIENT_REASONS] + list(campaigns) + [LINE_FOLLOW]
    order += [Reason.DAILY_DIGEST.value]
    groups = []
    for folder in order + sorted(f for f in folders if f not in order and f):
        if folder not in folders:
            continue
        note = ""
        reason = member(Reason, folder)
        if reason is not None:
            title = REASON_LABELS[reason]
            if reason is Reason.DAILY_DIGEST:
                note = "医院あての毎朝のまとめです。"
        elif folder == LINE_FOLLOW:
            title = "友だち追加のあいさつ"
        elif folder in campaigns:
            title = f"{REASON_LABELS[Reason.NEWSLETTER]}：{folder}"
            campaign = campaigns[folder]
            # Stopped in the file or paused on the Campaigns page: 停止中 either way.
            if not campaign.enabled or campaign.id in paused:
                note = "このキャンペーンは停止中です。"
        else:
            title = folder
        # LINE first, as in the rest of the desk: most patients read it there.
        files = sorted(folders.pop(folder), key=lambda n: _channel_label(n) != "LINE")
        entries = [Entry(name, _channel_label(name)) for name in files]
        groups.append(Group(title, entries, note))
    if "" in folders:
        parts = [Entry(name, PARTS.get(name, name)) for name in folders.pop("")]
        groups.append(Group("共通の部品", parts, "各メッセージに差し込まれる部分です。"))
    return groups


def _channel_label(name: str) -> str:
    channel = member(ChannelName, name.rsplit("/", 1)[-1].removesuffix(".j2"))
    return CHANNEL_LABELS[channel] if channel is not None else name.rsplit("/", 1)[-1]


def _tip_row(directory: Path, name: str) -> TipRow:
    tip, problems = read_tip(directory / name)
    tip_id = name.removeprefix("tips/").removesuffix(".md")
    if tip is None:
        return TipRow(name, tip_id, "", "", "", broken=True)
    return TipRow(
        name,
        tip_id,
        seasons=_labels(tip.seasons, ALL_SEASONS, SEASON_LABELS),
        phases=_labels(tip.phases, ALL_PHASES, PHASE_LABELS),
        text=tip.text,
        broken=bool(problems),
    )


_T = TypeVar("_T")


def _labels(chosen: frozenset[_T], every: frozenset[_T], labels: dict[_T, str]) -> str:
    if chosen == every:
        return "いつでも"
    return "・".join(label for member, label in labels.items() if member in chosen)


# --- the editor ----------------------------------------------------------------------


@desk_route("/messages/edit/<path:name>", methods=("GET", "POST"))
def edit(clinic: str | None, name: str) -> ResponseReturnValue:
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    settings = here.settings
    path = _editable(settings, name)
    now = clock_of(current_app).now()
    on_disk = _read(path)
    if request.method == "GET":
        text, base, action = on_disk, _digest(on_disk), "preview"
    else:
        text = _normalized(request.form.get("text", ""))
        base = request.form.get("base", "")
        action = request.form.get("action", "preview")
    results = _results(settings, name, path, text, on_disk, now)
    status = 200
    if action == "save":
        if results["problems"]:
            flash(
                "問題があるため保存していません。下の内容を直してから、もう一度保存してください。",
                "problem",
            )
            status = 422
        elif base != _digest(on_disk):
            flash(
                "この画面を開いた後に、ファイルがほかの場所で変更されました。"
                "保存していません。ページを開き直して、変更を確かめてください。",
                "problem",
            )
            status = 409
        else:
            _save(name, path, on_disk, text, now)
            return redirect(here.url(f"/messages/edit/{quote(name)}"))
    versions, more_versions = _versions(name, on_disk)
    page = render_template(
        "desk/message_edit.html",
        desk=here,
        name=name,
        title=_title(settings, name),
        text=text,
        base=base,
        sample=SAMPLE_PATIENT,
        patient_preview=_folder_reason(name) is not None,
        reasons=[(r, REASON_LABELS[r]) for r in PATIENT_REASONS] if "/" not in name else [],
        versions=versions,
        more_versions=more_versions,
        **results,
    )
    # This page alone runs a script (the live preview), served by the desk itself,
    # and fetches from its own site; every other page keeps the app's stricter policy.
    return page, status, {"Content-Security-Policy": EDITOR_POLICY}


@desk_route("/messages/preview/<path:name>", methods=("POST",))
def live_preview(clinic: str | None, name: str) -> ResponseReturnValue:
    """The editor's results for the text typed so far (problems and previews), as a
    part of the page: the live preview's script puts it in place. Saves nothing."""
    settings = desk().settings
    path = _editable(settings, name)
    text = _normalized(request.form.get("text", ""))
    now = clock_of(current_app).now()
    results = _results(settings, name, path, text, _read(path), now)
    return render_template("desk/message_results.html", desk=desk(), name=name, **results)


@desk_route("/messages/editor.js")
def editor_script(clinic: str | None) -> ResponseReturnValue:
    """The live preview's script, from the package (no build step, no CDN)."""
    return send_from_directory(ASSETS, EDITOR_SCRIPT, mimetype="text/javascript", max_age=0)


def _results(
    settings: Settings, name: str, path: Path, text: str, on_disk: str, now: datetime
) -> dict[str, Any]:
    """What the editor shows of `text`: the lint's problems by line, and the preview
    for the patient and reason the form names."""
    patient = request.form.get("patient", "").strip()
    reason = member(Reason, request.form.get("reason", "")) or Reason.CADENCE_NUDGE
    previews: list[Preview] = []
    if not is_tip(name):
        previews = _previews(settings, name, text, now, patient or None, reason)
    return {
        "problems": _problems(settings, path, _lint(settings, now, name, text)),
        "lines": text.splitlines(),
        "previews": previews,
        "tip": _tip_preview(path, text) if is_tip(name) else None,
        "patient": patient,
        "reason": reason,
        "changed": text != on_disk,
    }


@desk_route("/messages/restore/<path:name>", methods=("POST",))
def restore(clinic: str | None, name: str) -> ResponseReturnValue:
    """Put a kept version back in the file, if the lint passes it today (the settings
    or the variables may have changed since it was saved)."""
    here = desk()
    assert here.user_id is not None
    settings = here.settings
    path = _editable(settings, name)
    now = clock_of(current_app).now()
    chosen = request.form.get("version", "")
    if not chosen.isdigit() or len(chosen) > 18:  # a row id the databases can hold
        abort(404)
    version_id = int(chosen)
    with reading(here.runtime.sessions) as db:
        version = find_version(db, name, version_id)
        if version is None:
            abort(404)
        content = version.content
    if _lint(settings, now, name, content):
        flash("この版は今の設定では問題があるため、戻せません。編集して直してください。", "problem")
        return redirect(here.url(f"/messages/edit/{quote(name)}"))
    on_disk = _read(path)
    with transaction(here.runtime.sessions) as db:
        keep_as_found(db, name, on_disk, now)
        if content != on_disk:
            write_atomically(path, content)
            kept = keep_version(db, name, content, here.user_id, now)
            audit(
                db,
                here.user_id,
                "message_restore",
                f"{name}: version {version_id} restored as version {kept.id}",
                now,
            )
    log.info(
        "desk: account %s restored %s to version %s",
        here.user_id,
        name,
        version_id,
        extra=log_facts(here.runtime),
    )
    flash("選んだ版に戻しました。次にお送りするメッセージから使われます。", "done")
    return redirect(here.url(f"/messages/edit/{quote(name)}"))


def _editable(settings: Settings, name: str) -> Path:
    path = editable_path(settings.messages_dir, name)
    if path is None:
        abort(404)
    return path


def _read(path: Path) -> str:
    # A file saved in another encoding opens all the same; the lint says what is wrong.
    return path.read_text(encoding="utf-8", errors="replace")


def _normalized(text: str) -> str:
    """The text as a file: browsers send a textarea's lines ending in CR LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _digest(text: str) -> str:
    """The text's fingerprint, carried by the form: a save refuses to overwrite what
    someone else saved after the editor was opened."""
    return hashlib.sha256(text.encode()).hexdigest()


def _lint(settings: Settings, now: datetime, name: str, text: str) -> list[str]:
    if len(text) > MAX_TEXT:
        return [f"{settings.messages_dir / name}: 長すぎます（{MAX_TEXT}文字まで）"]
    if not text.strip():
        return [f"{settings.messages_dir / name}: 空です"]
    if is_tip(name):
        return lint_tip(settings.messages_dir / name, text)
    return lint_template(settings, now, name, text)


def _problems(settings: Settings, path: Path, found: list[str]) -> Problems:
    """The lint's `file:line: problem` lines, those of this file by line number, and
    the others named by their file within the messages folder."""
    problems = Problems()
    own = f"{path}:"
    folder = f"{settings.messages_dir}/"
    for problem in found:
        if problem.startswith(own):
            rest = problem[len(own) :].lstrip()
            match = _LINE.fullmatch(rest)
            if match:
                said = lint_problem(match[2])
                at_line = problems.by_line.setdefault(int(match[1]), [])
                # Two checks may say one thing in Japanese (an unknown name, then its
                # render failing on it): staff read it once.
                if all(p.text != said.text for p in at_line):
                    at_line.append(said)
            else:
                problems.general.append(lint_problem(rest))
        else:
            problems.elsewhere.append(lint_problem_at(problem.replace(folder, "")))
    problems.by_line = dict(sorted(problems.by_line.items()))
    return problems


def _save(name: str, path: Path, on_disk: str, text: str, now: datetime) -> None:
    here = desk()
    assert here.user_id is not None
    if text == on_disk:
        flash("変更はありません。", "done")
        return
    with transaction(here.runtime.sessions) as db:
        keep_as_found(db, name, on_disk, now)
        kept = keep_version(db, name, text, here.user_id, now)
        # Written before the commit: a write that fails leaves no version claiming it.
        write_atomically(path, text)
        audit(db, here.user_id, "message_save", f"{name}: saved as version {kept.id}", now)
    log.info(
        "desk: account %s saved %s (version %s)",
        here.user_id,
        name,
        kept.id,
        extra=log_facts(here.runtime),
    )
    flash("保存しました。次にお送りするメッセージから使われます。", "done")


def _title(settings: Settings, name: str) -> str:
    if "/" not in name:
        return PARTS.get(name, name)
    if is_tip(name):
        return f"セルフケアのひとこと：{name.removeprefix('tips/').removesuffix('.md')}"
    folder = name.rsplit("/", 1)[0]
    reason = member(Reason, folder)
    if reason is not None:
        label = REASON_LABELS[reason]
    elif folder == LINE_FOLLOW:
        label = "友だち追加のあいさつ"
    else:
        label = f"{REASON_LABELS[Reason.NEWSLETTER]}：{folder}"
    return f"{label}（{_channel_label(name)}）"


def _folder_reason(name: str) -> Reason | None:
    """The patients' reason whose messages a template is, if any: these the desk
    composes for a chosen patient, as the worker would."""
    reason = member(Reason, name.rsplit("/", 1)[0]) if "/" in name else None
    return reason if reason in PATIENT_REASONS else None


def _previews(
    settings: Settings,
    name: str,
    text: str,
    now: datetime,
    patient: str | None,
    chosen: Reason,
) -> list[Preview]:
    """The message by LINE and by email, with `text` in the place of the file `name`:
    a reason's messages (and, for a shared part, those of the reason `chosen`) are
    composed as `tayori preview` composes them, for `patient` or the sample; the
    digest, the LINE greeting and a campaign's newsletter with lint's sample."""
    renderer = Renderer(settings.messages_dir, edited={name: text})
    reason = chosen if "/" not in name else _folder_reason(name)
    if reason is not None:
        return [_composed(reason, channel, now, patient, renderer) for channel in ChannelName]
    folder = name.rsplit("/", 1)[0]
    previews = []
    for channel in ChannelName:
        each = template_in(folder, channel)
        if not (settings.messages_dir / each).is_file() and each != name:
            continue
        try:
            rendered = renderer.render(each, sample_message_context(settings, each, now))
        except TemplateError as e:
            previews.append(Preview(CHANNEL_LABELS[channel], problem=_short(settings, str(e))))
        else:
            previews.append(Preview(CHANNEL_LABELS[channel], rendered.text, rendered.subject))
    return previews


def _composed(
    reason: Reason, channel: ChannelName, now: datetime, patient: str | None, renderer: Renderer
) -> Preview:
    here = desk()
    label = CHANNEL_LABELS[channel]
    try:
        message = preview_message(here.runtime, reason, channel, now, patient, renderer)
    except TemplateError as e:
        return Preview(label, problem=_short(here.settings, str(e)))
    except LookupError as e:
        if "no patient with external_id" in str(e):
            return Preview(label, problem=Said("この患者番号の方は見つかりません。"))
        return Preview(label, problem=Said(f"この方には{label}でお送りできません。"))
    return Preview(label, message.text, message.subject)


def _short(settings: Settings, problem: str) -> Said:
    return lint_problem_at(problem.replace(f"{settings.messages_dir}/", ""))


@dataclass(frozen=True)
class TipPreview:
    seasons: str
    phases: str
    text: str


def _tip_preview(path: Path, text: str) -> TipPreview | None:
    tip, problems = read_tip(path, text)
    if tip is None or problems:
        return None
    return TipPreview(
        _labels(tip.seasons, ALL_SEASONS, SEASON_LABELS),
        _labels(tip.phases, ALL_PHASES, PHASE_LABELS),
        tip.text,
    )


def _versions(name: str, on_disk: str) -> tuple[list[VersionRow], bool]:
    """The file's kept versions, newest first: the newest VERSIONS_SHOWN, or all of
    them when the page asks (`?versions=all`); and whether some were left out."""
    here = desk()
    tz = here.settings.timezone
    now = clock_of(current_app).now()
    everything = request.args.get("versions") == "all"
    with reading(here.runtime.sessions) as db:
        kept = versions_of(db, name, limit=None if everything else VERSIONS_SHOWN + 1)
        more = len(kept) > VERSIONS_SHOWN and not everything
        kept = kept if everything else kept[:VERSIONS_SHOWN]
        who = {
            user.id: user.email
            for user in (db.get(DeskUser, v.saved_by) for v in kept if v.saved_by is not None)
            if user is not None
        }
        return [
            VersionRow(
                v.id,
                desk_datetime(v.saved_at, tz, now),
                "元のファイル" if v.saved_by is None else who.get(v.saved_by, "—"),
                v.content,
                current=v.content == on_disk,
            )
            for v in kept
        ], more
