"""Linking patients' LINE: `tayori link-code` (one patient, at the desk) and
`tayori link-codes` (printable pages for every patient not linked yet).

A code is issued by `store.linking.issue_code` (single use, 14 days, a new one
replaces the old); the patient sends it from LINE, and the webhook links them. The
QR code holds LINE's URL that opens the clinic's chat with 「連携コード XXXXXXXX」
typed (`core.link_codes.chat_url`), so all the patient does is scan and send.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from urllib.parse import quote

import jinja2
import segno
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.commands.common import CommandError, command_now, local, opened
from scheduler.core.link_codes import chat_url, message_text
from scheduler.settings import Settings
from scheduler.store import db
from scheduler.store.clinics import clinic_of
from scheduler.store.linking import issue_code
from scheduler.store.models import Patient
from scheduler.store.patients import find_patient

NO_BASIC_ID = (
    "{what} needs the LINE official account's ID: set [line] basic_id in "
    'config/tayori.toml (such as "@123abcde")'
)
# Printed QR codes survive a smudge or a fold at error correction M (15 %); segno
# raises it further when that costs no extra size.
QR_ERROR = "m"
# A PNG's module in pixels, and the quiet zone around the code in modules (the
# standard's minimum is 4).
QR_SCALE = 10
QR_BORDER = 4
PAGES = "patients"  # the folder of the one-patient pages, inside DIR


def qr_code(url: str) -> segno.QRCode:
    """A full QR code (never a Micro QR, which phones' cameras do not read)."""
    return segno.make_qr(url, error=QR_ERROR)


def write_qr(url: str, path: Path) -> None:
    """A PNG or SVG file of the QR code, by the file's extension."""
    qr_code(url).save(str(path), scale=QR_SCALE, border=QR_BORDER)


def link_code(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    basic_id = settings.config.line.basic_id
    if args.qr is not None and not basic_id:
        raise CommandError(NO_BASIC_ID.format(what="a QR code"))
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        patient = _linkable(session, args.external_id, settings)
        issued = issue_code(session, patient, now)
        lines = [
            f"link code for {patient.external_id} ({patient.name}): {issued.code}",
            f"valid until {local(issued.expires_at, settings)}, once; a new code replaces it",
        ]
        if basic_id:
            url = chat_url(basic_id, issued.code)
            lines.append(f"LINE: {url}")
            if args.qr is not None:
                # Written before the code is committed: a QR code that could not be
                # written leaves the earlier code as it was.
                write_qr(url, args.qr)
                lines.append(f"QR code: {args.qr}")
        else:
            lines.append(
                f"the patient sends 「{message_text(issued.code)}」 to the clinic's LINE; "
                "for a URL and a QR code, set [line] basic_id in config/tayori.toml"
            )
        if patient.line_user_id:
            since = (
                f"linked on {local(patient.line_linked_at, settings)}"
                if patient.line_linked_at
                else "from an import"
            )
            lines.append(
                f"note: {patient.external_id} has a LINE user id already ({since}); "
                "this code sent from another LINE account links that account instead"
            )
    print("\n".join(lines))
    return 0


def _linkable(session: Session, external_id: str, settings: Settings) -> Patient:
    patient = find_patient(session, external_id)
    if patient is None:
        raise CommandError(f"no patient with external_id {external_id!r}")
    if patient.forgotten_at is not None:
        raise CommandError(
            f"patient {external_id} was forgotten on {local(patient.forgotten_at, settings)} "
            "at their request: no link code"
        )
    return patient


@dataclass(frozen=True)
class Card:
    """One patient's page: what it prints."""

    external_id: str
    name: str
    code: str
    expires: str  # clinic time, in Japanese
    url: str
    qr_svg: Markup
    file: str  # the page's path inside DIR

    @property
    def message(self) -> str:
        return message_text(self.code)

    @property
    def href(self) -> str:
        """The page's link from the index: its file name %-encoded once more, since
        a browser decodes a link before it opens the file."""
        return quote(self.file)


def link_codes(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    basic_id = settings.config.line.basic_id
    if not basic_id:
        raise CommandError(NO_BASIC_ID.format(what="a page with a QR code"))
    issued: list[tuple[str, str, str, datetime]] = []
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        unlinked = session.scalars(
            select(Patient)
            .where(
                Patient.clinic_id == clinic_of(session),
                Patient.line_user_id.is_(None),
                Patient.forgotten_at.is_(None),
            )
            .order_by(Patient.external_id)
        ).all()
        for patient in unlinked:
            code = issue_code(session, patient, now)
            issued.append((patient.external_id, patient.name, code.code, code.expires_at))
    if not issued:
        print("every patient has a LINE user id (or was forgotten): no pages written")
        return 0
    # Written once the codes are committed, so that no page holds a code that is not.
    cards = [
        card_of(external_id, name, code, expires_at, basic_id, settings)
        for external_id, name, code, expires_at in issued
    ]
    _write_pages(args.directory, cards, settings, now)
    print(
        f"{len(cards)} page(s) written to {args.directory}: open "
        f"{args.directory / 'index.html'} for the list, {args.directory / 'all.html'} to "
        f"print them all; the codes are valid until {local(issued[0][3], settings)}"
    )
    return 0


def card_of(
    external_id: str, name: str, code: str, expires_at: datetime, basic_id: str, settings: Settings
) -> Card:
    """A patient's page for a code issued to them."""
    url = chat_url(basic_id, code)
    return Card(
        external_id=external_id,
        name=name,
        code=code,
        expires=_japanese_moment(expires_at, settings),
        url=url,
        qr_svg=_inline_svg(url),
        file=f"{PAGES}/{page_name(external_id)}",
    )


def card_page(card: Card, settings: Settings, now: datetime, back: str | None = None) -> str:
    """The printable page of one patient's code, as `link-codes` writes it; the desk
    serves the same page, with a link `back` to the patient's (not printed)."""
    page = _templates().get_template("link_code.html.j2")
    return page.render(c=card, back=back, **_common(settings, now))


def _common(settings: Settings, now: datetime) -> dict[str, object]:
    return {
        "clinic": settings.clinic,
        "basic_id": settings.config.line.basic_id,
        "issued": _japanese_moment(now, settings),
    }


def page_name(external_id: str) -> str:
    """The file of a patient's page: the external_id, with anything that is not a
    letter, a digit or `._-~` %-encoded (so no id can name another folder, and two
    ids never share a file)."""
    return f"{quote(external_id, safe='')}.html"


def _write_pages(directory: Path, cards: list[Card], settings: Settings, now: datetime) -> None:
    environment = _templates()
    common = _common(settings, now)
    (directory / PAGES).mkdir(parents=True, exist_ok=True)
    for card in cards:
        _write(directory / card.file, card_page(card, settings, now))
    _write(
        directory / "all.html",
        environment.get_template("link_codes_all.html.j2").render(cards=cards, **common),
    )
    _write(
        directory / "index.html",
        environment.get_template("link_codes_index.html.j2").render(cards=cards, **common),
    )


def _write(path: Path, text: str) -> None:
    """Write then rename: a page is whole or not there."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@cache
def _templates() -> jinja2.Environment:
    """The pages' templates, inside the package (they are Tayori's, not the
    practitioner's messages); every value is HTML-escaped."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("scheduler.commands", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _inline_svg(url: str) -> Markup:
    # segno's own markup: the URL in it is %-encoded, nothing in it needs escaping.
    svg = qr_code(url).svg_inline(
        scale=1, border=QR_BORDER, omitsize=True, dark="#000", light="#fff"
    )
    return Markup(svg)


def _japanese_moment(moment: datetime, settings: Settings) -> str:
    here = moment.astimezone(settings.timezone)
    return f"{here.year}年{here.month}月{here.day}日 {here:%H:%M}"
