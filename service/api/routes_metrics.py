"""Prometheus ``/metrics``: HTTP responses counted in this process, everything else read from
the database on scrape.

Workers run in other processes (and hosts), so their figures are not counted in memory here:
job durations, queue depth, rules activation latency and reaper actions are derived from the
jobs, requests, rule-set and audit tables, one bounded aggregate query each. Any API process
answers the same DB-derived values; only ``lethe_http_responses_total`` is per process (scrape
every API instance).

Auth: a scraper has no API token. ``LETHE_METRICS_TOKEN`` sets a bearer token of its own
(compared in constant time); ``LETHE_METRICS_PUBLIC=true`` serves it without one (private
network only). Neither: 404 ``metrics_disabled``. Labels hold route templates, status codes,
enum values — never a path, an identifier or any personal data.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import Match

from service.api.contract import errors
from service.core.config import Settings
from service.core.errors import DomainError
from service.db.base import utcnow
from service.db.enums import JobStatus, RequestStatus
from service.db.tables import ErasureRequest
from service.erasure.deadlines import overdue_clause

router = APIRouter(tags=["metrics"])
METRICS_PATH = "/metrics"
# Seconds: shard retrains and fine-tunes run from seconds to hours.
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
# Seconds: rules go live within seconds of approval when a worker is free.
ACTIVATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0)
OPEN_STATUSES = (RequestStatus.received, RequestStatus.approved, RequestStatus.in_progress)
REAPER_ACTIONS = ("job.reaped", "job.failed", "action.exact_overdue")


def _buckets_sql(expr: str, bounds: tuple[float, ...]) -> str:
    return ", ".join(f"count(*) FILTER (WHERE {expr} <= {b})" for b in bounds)


class DbCollector(Collector):
    """Reads the database when Prometheus scrapes; nothing is cached between scrapes."""

    def __init__(self, factory_of: Callable[[], sessionmaker[Session]]) -> None:
        self.factory_of = factory_of

    def collect(self) -> Iterator[Metric]:
        with self.factory_of()() as session:
            yield from self._requests(session)
            yield from self._queue(session)
            yield self._job_durations(session)
            yield self._activation(session)
            yield self._reaper(session)

    def _requests(self, session: Session) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "lethe_requests", "Erasure requests by status", labels=["status"]
        )
        counts = dict(
            session.execute(
                select(ErasureRequest.status, func.count()).group_by(ErasureRequest.status)
            ).all()
        )
        for status in RequestStatus:
            by_status.add_metric([status.value], float(counts.get(status, 0)))
        yield by_status
        now = utcnow()
        open_ = ErasureRequest.status.in_(OPEN_STATUSES)
        overdue, oldest = session.execute(
            select(
                func.count().filter(overdue_clause(now)), func.min(ErasureRequest.received_at)
            ).where(open_)
        ).one()
        yield GaugeMetricFamily(
            "lethe_requests_overdue",
            "Open erasure requests past their due date",
            value=float(overdue),
        )
        yield GaugeMetricFamily(
            "lethe_oldest_open_request_age_seconds",
            "Age of the oldest open erasure request (0: none open)",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )

    def _queue(self, session: Session) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "lethe_queue_depth",
            "Work waiting for a worker: pending jobs, approved requests not yet planned",
            labels=["queue"],
        )
        jobs, approved = session.execute(
            text(
                "SELECT (SELECT count(*) FROM jobs WHERE status = :pending), "
                "(SELECT count(*) FROM erasure_requests WHERE status = :approved)"
            ),
            {"pending": JobStatus.pending.value, "approved": RequestStatus.approved.value},
        ).one()
        depth.add_metric(["ml_jobs"], float(jobs))
        depth.add_metric(["requests"], float(approved))
        yield depth
        running = session.execute(
            text("SELECT count(*) FROM jobs WHERE status = :running"),
            {"running": JobStatus.running.value},
        ).scalar_one()
        yield GaugeMetricFamily("lethe_jobs_running", "Jobs a worker holds now", value=running)

    def _job_durations(self, session: Session) -> Metric:
        dur = "extract(epoch FROM finished_at - started_at)"
        rows = session.execute(
            text(
                f"SELECT kind, count(*), coalesce(sum({dur}), 0), "
                f"{_buckets_sql(dur, JOB_BUCKETS)} FROM jobs "
                "WHERE status = :done AND started_at IS NOT NULL AND finished_at IS NOT NULL "
                "GROUP BY kind ORDER BY kind"
            ),
            {"done": JobStatus.done.value},
        ).all()
        hist = HistogramMetricFamily(
            "lethe_job_duration_seconds",
            "Duration of finished jobs (last attempt: started to finished), from the jobs table",
            labels=["kind"],
        )
        for kind, count, total, *cumulative in rows:
            hist.add_metric([str(kind)], _buckets(JOB_BUCKETS, cumulative, count), float(total))
        return hist

    def _activation(self, session: Session) -> Metric:
        # Approval → the first active rule-set version naming the request.
        lat = "extract(epoch FROM first_active - decided_at)"
        row = session.execute(
            text(
                "WITH first AS ("
                " SELECT r.decided_at, min(v.activated_at) AS first_active"
                " FROM rule_set_versions v"
                " CROSS JOIN LATERAL jsonb_array_elements_text(v.request_ids) AS rid(id)"
                " JOIN erasure_requests r ON r.id::text = rid.id"
                " WHERE v.activated_at IS NOT NULL AND r.decided_at IS NOT NULL"
                " GROUP BY r.id, r.decided_at)"
                f" SELECT count(*), coalesce(sum({lat}), 0), "
                f"{_buckets_sql(lat, ACTIVATION_BUCKETS)} FROM first"
            )
        ).one()
        count, total, *cumulative = row
        hist = HistogramMetricFamily(
            "lethe_rules_activation_seconds",
            "Approval of a request to its verifier rules being active",
        )
        hist.add_metric([], _buckets(ACTIVATION_BUCKETS, cumulative, count), float(total))
        return hist

    def _reaper(self, session: Session) -> Metric:
        rows: dict[str, int] = dict(
            session.execute(
                text(
                    "SELECT action, count(*) FROM audit_events "
                    "WHERE action = ANY(:actions) AND actor = 'reaper' GROUP BY action"
                ),
                {"actions": list(REAPER_ACTIONS)},
            ).all()
        )
        counter = CounterMetricFamily(
            "lethe_reaper_actions", "What the reaper did, from the audit log", labels=["action"]
        )
        for action in REAPER_ACTIONS:
            counter.add_metric([action], float(rows.get(action, 0)))
        return counter


class TamperCollector(Collector):
    """Tampers the checkpoint signers recorded (read from the checkpoint store, not the
    database the tamperer may control)."""

    def __init__(self, anchor_of: Callable[[], Any]) -> None:
        self._anchor_of = anchor_of

    def collect(self) -> Iterator[Metric]:
        anchor = self._anchor_of()
        gauge = GaugeMetricFamily(
            "lethe_audit_tamper_records",
            "Tampering of the audit log recorded by the checkpoint signer (alert on > 0)",
        )
        gauge.add_metric([], float(len(anchor.tamper_records())) if anchor else 0.0)
        yield gauge


def _buckets(
    bounds: tuple[float, ...], cumulative: list[Any], count: int
) -> list[tuple[str, float]]:
    return [(str(b), float(c)) for b, c in zip(bounds, cumulative, strict=True)] + [
        ("+Inf", float(count))
    ]


def _route_of(app: FastAPI, scope: Any) -> str:
    """The route template (``/v1/requests/{request_id}``), never the path itself."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    # Refused before routing (401, 503, 413): match the template without running anything.
    for candidate in app.router.routes:
        match, _ = candidate.matches(scope)
        if match == Match.FULL and hasattr(candidate, "path"):
            return str(candidate.path)
    return "unmatched"


def install_metrics(app: FastAPI) -> None:
    """Mount /metrics and count every response; call last in create_app so that the counting
    middleware is outermost and sees the gate's refusals too."""
    registry = CollectorRegistry()
    responses = Counter(
        "lethe_http_responses",
        "HTTP responses of this API process by route template and status code",
        ["method", "route", "status"],
        registry=registry,
    )
    registry.register(DbCollector(lambda: app.state.session_factory))
    registry.register(TamperCollector(lambda: getattr(app.state, "anchor", None)))
    app.state.metrics_registry = registry
    app.include_router(router)

    @app.middleware("http")
    async def _count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = _route_of(app, request.scope)
        responses.labels(request.method, route, str(response.status_code)).inc()
        return response


def _authorize(settings: Settings, authorization: str | None) -> None:
    if settings.metrics_token:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            raise DomainError(401, "unauthenticated", "the metrics token is required")
        return
    if not settings.metrics_public:
        raise DomainError(404, "metrics_disabled", "metrics are not enabled on this deployment")


_TEXT = {"text/plain": {"schema": {"type": "string"}}}


@router.get(
    METRICS_PATH,
    include_in_schema=True,
    response_class=Response,
    # 401: a wrong scraper token; 404 metrics_disabled: neither a token nor public is set.
    responses={**errors(401, 404), 200: {"content": _TEXT}},
)
def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus text format. Auth: ``LETHE_METRICS_TOKEN`` (bearer) or
    ``LETHE_METRICS_PUBLIC``; see the module docstring."""
    _authorize(request.app.state.settings, authorization)
    return Response(
        generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST
    )
