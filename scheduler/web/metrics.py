"""`GET /metrics`: the outbox, LINE's quota, the workers' cycles and the webhook
inbox, in Prometheus's text format (prometheus-client).

Every number is read from the database when Prometheus asks, by aggregate queries,
rather than counted in this process: every web process (and there are several)
answers the same, and a restart loses nothing. The figures are counts and times;
no label carries a patient's name, contact or message.

The endpoint is open unless TAYORI_METRICS_TOKEN is set, when it answers only
requests with `Authorization: Bearer <token>`; hosts keep it on an internal network
either way.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.clock import Clock
from scheduler.outbox.budget import LineQuotaView, line_quota
from scheduler.outbox.report import delivery_counts, oldest_due
from scheduler.runtime import Runtime
from scheduler.store.db import reading
from scheduler.store.heartbeats import heartbeats
from scheduler.store.inbox import event_counts
from scheduler.web.app import clinics_of, clock_of, runtime_of

blueprint = Blueprint("metrics", __name__)
NO_CHANNEL = "none"  # the channel label of a delivery whose channel is not chosen yet


@blueprint.get("/metrics")
def metrics() -> Response:
    runtime = runtime_of(current_app)
    token = runtime.settings.metrics_token
    if token and not _bears(token):
        return Response("a bearer token is required\n", 401, {"WWW-Authenticate": "Bearer"})
    # A registry of our own: the default one would add this process's own figures,
    # which differ between the web processes behind one address.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TayoriCollector(clinics_of(current_app).every(), clock_of(current_app)))
    return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})


def _bears(token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@dataclass(frozen=True)
class _ClinicFigures:
    deliveries: list[tuple[str, str, str | None, int]]
    due_since: datetime | None
    quota: LineQuotaView
    events: list[tuple[str, str, int]]


class TayoriCollector(Collector):
    """The figures of every clinic, read from the database at each scrape (a
    read-only session per clinic)."""

    def __init__(self, runtimes: list[Runtime], clock: Clock) -> None:
        self.runtimes = runtimes
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        clinics: dict[str, _ClinicFigures] = {}
        for runtime in self.runtimes:
            settings = runtime.settings
            with reading(runtime.sessions) as session:
                clinics[settings.clinic_slug] = _ClinicFigures(
                    delivery_counts(session),
                    oldest_due(session, now),
                    line_quota(session, now, settings.timezone, settings.config.line.monthly_quota),
                    event_counts(session),
                )
                beats = heartbeats(session)  # the installation's: the same from any clinic

        by_state = GaugeMetricFamily(
            "tayori_deliveries",
            "Deliveries in the outbox, by state, reason and channel",
            labels=["clinic", "state", "reason", "channel"],
        )
        for clinic, figures in clinics.items():
            for state, reason, channel, count in figures.deliveries:
                by_state.add_metric([clinic, state, reason, channel or NO_CHANNEL], count)
        yield by_state

        def waited(figures: _ClinicFigures) -> float:
            since = figures.due_since
            return 0.0 if since is None else (now - since).total_seconds()

        yield _by_clinic(
            "tayori_oldest_due_delivery_age_seconds",
            "How long the delivery due longest has waited unsent (0: none is due)",
            {clinic: waited(figures) for clinic, figures in clinics.items()},
        )
        yield _by_clinic(
            "tayori_line_quota_used_messages",
            "LINE messages counted this month (the larger of LINE's count and ours)",
            {clinic: figures.quota.used for clinic, figures in clinics.items()},
        )
        yield _by_clinic(
            "tayori_line_quota_limit_messages",
            "LINE messages the plan allows this month (+Inf: no limit)",
            {
                clinic: math.inf if figures.quota.limit is None else figures.quota.limit
                for clinic, figures in clinics.items()
            },
        )

        duration = GaugeMetricFamily(
            "tayori_worker_last_cycle_duration_seconds",
            "How long each worker's last completed cycle took",
            labels=["worker"],
        )
        finished = GaugeMetricFamily(
            "tayori_worker_last_cycle_timestamp_seconds",
            "When each worker last completed a cycle (Unix time, by the worker's clock)",
            labels=["worker"],
        )
        for beat in beats:
            duration.add_metric([beat.worker], beat.duration_seconds)
            finished.add_metric([beat.worker], beat.finished_at.timestamp())
        yield duration
        yield finished

        webhook = GaugeMetricFamily(
            "tayori_webhook_events",
            "LINE webhook events in the inbox, by type and outcome",
            labels=["clinic", "type", "outcome"],
        )
        for clinic, figures in clinics.items():
            for kind, outcome, count in figures.events:
                webhook.add_metric([clinic, kind, outcome], count)
        yield webhook


def _by_clinic(name: str, documentation: str, values: dict[str, float]) -> GaugeMetricFamily:
    """A gauge with one value a clinic."""
    gauge = GaugeMetricFamily(name, documentation, labels=["clinic"])
    for clinic, value in values.items():
        gauge.add_metric([clinic], value)
    return gauge
