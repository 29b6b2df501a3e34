"""The booking link of a sent message: `GET /r/<token>` counts one press for the
message the token names and redirects (302) to the clinic's booking page.

- Public: the patient follows it from LINE or a mail, signed in to nothing. It sets
  no cookie, and the token never reaches the log (nor, thanks to
  `Referrer-Policy: no-referrer`, the booking site).
- The redirect goes only to the booking URL in the clinic's settings that the token
  names (LINE or web), never to a URL a request carries: no open redirect.
- A token that is not ours (tampered, truncated, made up) gets a 404 and counts
  nothing. A token of ours whose message is not in the outbox (it cannot be, short
  of a restored backup) still takes the patient to the booking page, uncounted.
- Link scanners of some mail providers fetch links on their own: their GETs count as
  presses too (the results call them presses of the link, not patients); a HEAD,
  which no browser sends for a press, redirects without counting.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from scheduler.core.booking_links import BookingTarget, read_booking_token
from scheduler.runtime import Runtime
from scheduler.store.clinics import clinic_of
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, LinkClick
from scheduler.web.app import clinics_of, clock_of, log_facts, runtime_of

log = logging.getLogger(__name__)

blueprint = Blueprint("booking_link", __name__)


@blueprint.get("/r/<token>")
def follow(token: str) -> ResponseReturnValue:
    own = runtime_of(current_app)
    try:
        slug, delivery_id, target = read_booking_token(own.settings.secret_key, token)
    except ValueError:  # InvalidToken, or no key in the settings: no token is ours
        return _not_found()
    runtime = clinics_of(current_app).find(slug)
    if runtime is None:
        return _not_found()
    clinic = runtime.settings.clinic
    url = clinic.booking_url_line if target is BookingTarget.LINE else clinic.booking_url_web
    if not url:  # the clinic has since removed that booking URL from its settings
        return _not_found(runtime)
    if request.method == "HEAD":
        return redirect(url, code=302)
    now = clock_of(current_app).now()
    with transaction(runtime.sessions) as session:
        known = session.scalar(
            select(Delivery.id).where(
                Delivery.clinic_id == clinic_of(session), Delivery.id == delivery_id
            )
        )
        if known is not None:
            session.add(LinkClick(delivery_id=delivery_id, clicked_at=now))
    # The delivery id only: logs carry no tokens and nothing about the patient.
    log.info(
        "booking link: delivery %s %s",
        delivery_id,
        "pressed" if known is not None else "is not in the outbox: not counted",
        extra=log_facts(runtime),
    )
    return redirect(url, code=302)


def _not_found(runtime: Runtime | None = None) -> tuple[str, int]:
    """The page of a link that leads nowhere: with the clinic's phone and email when
    the link is known to be that clinic's, naming no clinic otherwise (the address
    may serve many)."""
    if runtime is None:
        return render_template("desk/results_link_not_found.html", clinic=None), 404
    clinic = runtime.settings.clinic
    return render_template(
        "desk/results_link_not_found.html",
        clinic={"name": clinic.name, "phone": clinic.phone, "email": clinic.email},
    ), 404
