"""PDF audit reports (fpdf2), built only from the report dicts of ``service.reports.build``.

``request_pdf(request_report(...))`` and ``period_pdf(period_report(...))``: a cover with the
request's facts, a timeline chart of its events, each certificate in plain words with its
numbers, the audit-chain verification with its head hash, and page numbers. Text is embedded
with a Unicode font (DejaVu, when installed), so it can be extracted and searched.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from service.erasure.decisions import LEGAL_GROUNDS
from service.reports.words import certificate_facts, certificate_words, describe_event, fmt_time

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_ASCII = str.maketrans({"α": "alpha", "δ": "delta", "λ": "lambda", "…": "...", "→": "->"})
_INK = (20, 30, 60)
_MUTED = (110, 115, 130)
_GOOD = (20, 120, 60)
_BAD = (170, 30, 30)


class _Report(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.report_title = title
        self.unicode = (_FONT_DIR / "DejaVuSans.ttf").exists()
        if self.unicode:
            self.add_font("body", "", str(_FONT_DIR / "DejaVuSans.ttf"))
            self.add_font("body", "B", str(_FONT_DIR / "DejaVuSans-Bold.ttf"))
            self.add_font("mono", "", str(_FONT_DIR / "DejaVuSansMono.ttf"))
        self.set_auto_page_break(auto=True, margin=18)
        self.set_title(title)
        self.set_creator("lethe")
        self.add_page()

    def clean(self, text: object) -> str:
        value = str(text)
        if self.unicode:
            return value
        return value.translate(_ASCII).encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float, style: str = "", mono: bool = False) -> None:
        family = (
            ("mono" if mono else "body") if self.unicode else ("courier" if mono else "helvetica")
        )
        self.set_font(family, "" if mono else style, size)

    def footer(self) -> None:
        self.set_y(-12)
        self.font(8)
        self.set_text_color(*_MUTED)
        self.cell(0, 6, self.clean(f"lethe · {self.report_title}"), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(*_INK)

    def heading(self, text: str, size: float = 14) -> None:
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(3)
        self.font(size, "B")
        self.set_text_color(*_INK)
        self.cell(0, size * 0.6, self.clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, size: float = 10) -> None:
        self.font(size)
        self.multi_cell(
            0, size * 0.5, self.clean(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.ln(1)

    def facts(self, rows: list[tuple[str, str]], label_w: float = 55, mono: bool = False) -> None:
        for label, value in rows:
            if self.get_y() > self.h - 25:
                self.add_page()
            self.font(9, "B")
            self.set_x(self.l_margin)
            y = self.get_y()
            self.multi_cell(
                label_w, 5, self.clean(label), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
            bottom = self.get_y()
            self.font(8.5 if mono else 9.5, mono=mono)
            self.set_xy(self.l_margin + label_w, y)
            self.multi_cell(0, 5, self.clean(value), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.set_y(max(bottom, self.get_y()) + 0.6)

    def verdict(self, ok: bool, text: str) -> None:
        self.font(11, "B")
        self.set_text_color(*(_GOOD if ok else _BAD))
        self.multi_cell(0, 6, self.clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(*_INK)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _legal_ground(summary: Mapping[str, Any]) -> str:
    ground = summary.get("legal_ground")
    return LEGAL_GROUNDS.get(str(ground), str(ground)) if ground else "not recorded"


def _deadline_text(summary: Mapping[str, Any]) -> tuple[bool | None, str]:
    """From the report's summary, which applies lethe's one overdue rule to the log."""
    due_at = _ts(summary.get("due_at"))
    if due_at is None:
        return None, "unknown"
    if summary.get("closed_at"):
        met = not summary.get("overdue")
        return met, f"{'met' if met else 'missed'} (answered {fmt_time(summary['closed_at'])})"
    left = (due_at - datetime.now(UTC)).days
    return (left >= 0), (f"open, {left} day(s) left" if left >= 0 else "open and overdue")


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"+{seconds:.0f} s"
    if seconds < 3600:
        return f"+{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"+{seconds / 3600:.1f} h"
    return f"+{seconds / 86400:.1f} d"


def _bar(pdf: _Report, y: float, label: str) -> tuple[float, float]:
    x0, x1 = pdf.l_margin + 24, pdf.w - pdf.r_margin - 4
    pdf.font(8, "B")
    pdf.text(pdf.l_margin, y + 1, pdf.clean(label))
    pdf.set_draw_color(*_INK)
    pdf.set_line_width(0.4)
    pdf.line(x0, y, x1, y)
    return x0, x1


def _timeline_chart(
    pdf: _Report, events: list[Mapping[str, Any]], summary: Mapping[str, Any]
) -> None:
    """Two bars: the deadline (receipt → due date, with the answer marked) and the events in
    order, numbered by their sequence in the chain, with the time since receipt."""
    times = [_ts(e["occurred_at"]) for e in events]
    moments = [t for t in times if t is not None]
    if not moments:
        pdf.para("No events.")
        return
    start = moments[0]
    y = pdf.get_y() + 6
    due_at, closed = _ts(summary.get("due_at")), _ts(summary.get("closed_at"))
    if due_at is not None:
        x0, x1 = _bar(pdf, y, "Deadline")
        span = max((due_at - start).total_seconds(), 1.0)
        pdf.font(7)
        pdf.text(x0, y + 4.5, pdf.clean(f"received {fmt_time(start)}"))
        pdf.text(x1 - 34, y + 4.5, pdf.clean(f"due {fmt_time(due_at)}"))
        pdf.set_draw_color(*_BAD)
        pdf.line(x1, y - 3, x1, y + 1.5)
        if closed is not None:
            frac = min((closed - start).total_seconds() / span, 1.08)
            xc = x0 + (x1 - x0) * max(frac, 0.0)
            pdf.set_fill_color(*(_GOOD if not summary.get("overdue") else _BAD))
            pdf.ellipse(xc - 1.6, y - 1.6, 3.2, 3.2, style="F")
            pdf.text(min(xc + 2, x1 - 40), y - 2.5, pdf.clean(f"answered {fmt_time(closed)}"))
        y += 14
    x0, x1 = _bar(pdf, y, "Events")
    step = (x1 - x0) / max(len(events) - 1, 1)
    for i, (event, t) in enumerate(zip(events, times, strict=True)):
        x = x0 + step * i if len(events) > 1 else (x0 + x1) / 2
        bad = str(event.get("action", "")).endswith(("failed", "rejected"))
        pdf.set_fill_color(*(_BAD if bad else _GOOD))
        pdf.ellipse(x - 1.2, y - 1.2, 2.4, 2.4, style="F")
        pdf.font(6.5)
        pdf.text(x - 1.5, y - 2.5, f"#{event.get('seq')}")
        if t is not None:
            pdf.text(x - 2, y + 4.5 + 3 * (i % 2), _elapsed((t - start).total_seconds()))
    pdf.set_draw_color(*_INK)
    pdf.set_y(y + 12)
    pdf.para("The events in order (times in UTC):", 9)
    pdf.facts(
        [
            (f"#{e['seq']}  {str(e['occurred_at'])[:19].replace('T', ' ')}", describe_event(e))
            for e in events
        ],
        label_w=54,
    )


def _certificates(pdf: _Report, certs: list[Mapping[str, Any]]) -> None:
    pdf.heading("What was done to each model")
    if not certs:
        pdf.para("No certificate has been issued for this request yet.")
    for cert in certs:
        pdf.heading(f"{cert.get('model')}: {cert.get('kind')}", 12)
        pdf.para(certificate_words(cert))
        pdf.facts(certificate_facts(cert), mono=False)
        assumptions = cert.get("assumptions") or []
        if assumptions:
            pdf.font(9, "B")
            pdf.cell(0, 5, "Assumptions", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            for a in assumptions:
                pdf.para(f"- {a}", 9)


def _chain(pdf: _Report, chain: Mapping[str, Any]) -> None:
    pdf.heading("Audit-chain verification")
    ok = bool(chain.get("ok"))
    pdf.verdict(
        ok,
        "The hash chain verifies: no event was changed, removed or reordered."
        if ok
        else f"The hash chain is BROKEN at event #{chain.get('first_broken_seq')}: "
        f"{chain.get('problem')}.",
    )
    pdf.facts(
        [
            ("Events checked", str(chain.get("events_checked"))),
            ("Last sequence number", str(chain.get("last_seq"))),
            ("Head hash", str(chain.get("last_hash"))),
        ],
        mono=True,
    )


def _cover(pdf: _Report, title: str, subtitle: str) -> None:
    pdf.font(20, "B")
    pdf.set_text_color(*_INK)
    pdf.cell(0, 12, pdf.clean(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.font(10)
    pdf.set_text_color(*_MUTED)
    pdf.multi_cell(0, 5, pdf.clean(subtitle), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*_INK)
    pdf.ln(3)


def request_pdf(report: Mapping[str, Any]) -> bytes:
    """The per-request report (``reports.request_report``) as PDF bytes."""
    summary: Mapping[str, Any] = report["summary"]
    events: list[Mapping[str, Any]] = report["events"]
    pdf = _Report(f"Erasure request {report['request_id']}")
    _cover(
        pdf,
        "Erasure request report",
        f"Built from lethe's hash-chained audit log on "
        f"{fmt_time(datetime.now(UTC))}. The data subject appears only as a keyed hash.",
    )
    due = summary.get("due_at")
    met, deadline = _deadline_text(summary)
    scope = summary.get("scope")
    ext = summary.get("extensions") or []
    rows = [
        ("Request", str(report["request_id"])),
        ("Subject reference (keyed hash)", str(summary.get("subject_ref"))),
        ("Status", str(summary.get("status"))),
        ("Scope", "every model" if scope in (None, "all") else ", ".join(map(str, scope))),
        ("Legal ground", _legal_ground(summary)),
        ("Received", fmt_time(summary.get("received_at"))),
        ("Due", fmt_time(due)),
        ("Completed", fmt_time(summary.get("completed_at"))),
        ("Deadline", deadline),
        (
            "Extensions",
            "; ".join(f"+{x.get('months')} month(s) to {fmt_time(x.get('due_at'))}" for x in ext)
            or "none",
        ),
    ]
    pdf.facts(rows)
    if met is not None:
        pdf.verdict(met, "Deadline met." if met else "Deadline not met.")
    pdf.heading("Timeline")
    _timeline_chart(pdf, events, summary)
    issued = [c for c in summary.get("certificates") or [] if c]
    current = [c for c in summary.get("current_certificates", issued) if c]
    _certificates(pdf, current)
    if len(issued) > len(current):
        pdf.para(
            f"{len(issued) - len(current)} earlier certificate(s) were superseded by the ones "
            "above (re-issued, e.g. once the regeneration budget B was calibrated); every "
            "issue is in the audit log and its timeline.",
            9,
        )
    _chain(pdf, report["chain"])
    return bytes(pdf.output())


def period_pdf(report: Mapping[str, Any]) -> bytes:
    """The period report (``reports.period_report``) as PDF bytes."""
    events: list[Mapping[str, Any]] = report["events"]
    since, until = report.get("since"), report.get("until")
    period = (
        f"{fmt_time(since) if since else 'the beginning'} to {fmt_time(until) if until else 'now'}"
    )
    pdf = _Report("Audit period report")
    _cover(pdf, "Audit period report", f"Events from {period}, built from the audit log.")
    pdf.facts(
        [
            ("Requests received", str(report.get("requests_received"))),
            ("Requests completed", str(report.get("requests_completed"))),
            ("Completed after the deadline", str(report.get("requests_completed_overdue"))),
            ("Certificates issued", str(report.get("certificates_issued"))),
            ("Events in the period", str(len(events))),
        ]
    )
    by_request: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        if e.get("request_id"):
            by_request.setdefault(str(e["request_id"]), []).append(e)
    pdf.heading("Requests")
    if not by_request:
        pdf.para("No request had events in this period.")
    for rid, evs in by_request.items():
        last = [e for e in evs if str(e.get("action", "")).startswith("request.")]
        status = str(last[-1]["action"]).removeprefix("request.") if last else "-"
        pdf.font(9, "B")
        pdf.cell(0, 5, rid, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.para(f"{status}; {len(evs)} event(s); last: {describe_event(evs[-1])}", 9)
    certs = [
        (e.get("details") or {}).get("certificate") or {}
        for e in events
        if e.get("action") == "certificate.issued"
    ]
    _certificates(pdf, certs)
    pdf.heading("Events")
    pdf.facts(
        [(f"#{e['seq']}  {fmt_time(e['occurred_at'])}", describe_event(e)) for e in events], 54
    )
    _chain(pdf, report["chain"])
    return bytes(pdf.output())
