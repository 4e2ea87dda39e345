"""PDF audit reports (fpdf2), built from the report dicts of ``service.reports.build``.

``request_pdf``: the request's facts and its deadline in the console's own words (one day
count, ``service.reports.plain``), the DPO's words when the report carries them, what was done
to each model in plain words (or why there is no certificate yet), a timeline chart and its
steps, then "Details for engineers" (each certificate's figures, the events as logged), the
audit-chain verification and page numbers. ``period_pdf``: a period's requests and events.
Text is embedded with a Unicode font (DejaVu, when installed), so it can be extracted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from service.erasure.decisions import LEGAL_GROUNDS
from service.reports.plain import (
    Deadline,
    certificate_status,
    deadline,
    engineer_facts,
    event_words,
    outcome_words,
)
from service.reports.plain import (
    certificate_words as plain_certificate,
)
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


def _deadline(summary: Mapping[str, Any]) -> Deadline | None:
    """The console's own wording (service.reports.plain.deadline), from the log's summary."""
    due_at = _ts(summary.get("due_at"))
    if due_at is None:
        return None
    status = str(summary.get("status") or "received")
    closed = _ts(summary.get("closed_at"))
    return deadline(status, due_at, closed, bool(summary.get("overdue")))


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
    pdf: _Report,
    events: list[Mapping[str, Any]],
    summary: Mapping[str, Any],
    names: Mapping[str, str],
    notes: list[Mapping[str, Any]],
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
    pdf.para(
        "The steps in order (times in UTC). Numbers on the chart (#) are the audit log's, which "
        "counts the events of all requests: a gap means other requests' events came between.",
        9,
    )
    pdf.facts([(_step_label(i, e), _step_words(e, names, notes)) for i, e in enumerate(events, 1)])


def _step_label(number: int, event: Mapping[str, Any]) -> str:
    return f"{number}.  {str(event['occurred_at'])[:16].replace('T', ' ')}  (#{event.get('seq')})"


def _step_words(
    event: Mapping[str, Any], names: Mapping[str, str], notes: list[Mapping[str, Any]]
) -> str:
    actor = str(event.get("actor") or "")
    words = f"{event_words(event)} By {names.get(actor, actor) or 'lethe'}."
    for note in notes:
        if note.get("audit_seq") == event.get("seq"):
            words += f' {note.get("label")}: "{note.get("text")}"'
    return words


def _certificates(pdf: _Report, certs: list[Mapping[str, Any]], none_words: str | None) -> None:
    pdf.heading("What was done to each model")
    if not certs:
        pdf.para(none_words or "No certificate was issued.")
    for cert in certs:
        pdf.heading(str(cert.get("model")), 12)
        pdf.para(plain_certificate(cert))


def _engineer_details(
    pdf: _Report, certs: list[Mapping[str, Any]], events: list[Mapping[str, Any]]
) -> None:
    """The figures behind the plain words: each certificate's numbers and every event as the
    audit log records it."""
    pdf.heading("Details for engineers")
    for cert in certs:
        pdf.font(9, "B")
        pdf.cell(0, 5, pdf.clean(f"{cert.get('model')}: {cert.get('kind')}"))
        pdf.ln(5)
        pdf.facts(engineer_facts(cert), mono=False)
        assumptions = cert.get("assumptions") or []
        if assumptions:
            pdf.font(9, "B")
            pdf.cell(0, 5, "Assumptions", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            for a in assumptions:
                pdf.para(f"- {a}", 9)
    pdf.font(9, "B")
    pdf.cell(0, 5, "Events as recorded", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.facts([(f"#{e['seq']}  {fmt_time(e['occurred_at'])}", describe_event(e)) for e in events])


def _period_certificates(pdf: _Report, certs: list[Mapping[str, Any]]) -> None:
    pdf.heading("Certificates issued")
    if not certs:
        pdf.para("No certificate was issued in this period.")
    for cert in certs:
        pdf.heading(f"{cert.get('model')}: {cert.get('kind')}", 12)
        pdf.para(certificate_words(cert))
        pdf.facts(certificate_facts(cert), mono=False)


def verification_words(chain: Mapping[str, Any]) -> str:
    """What the verification found, in plain words: a claim only for what was checked."""
    if not chain.get("ok"):
        return (
            f"The audit log does NOT verify, from event #{chain.get('first_broken_seq')}: "
            f"{chain.get('problem')}."
        )
    checkpoints = chain.get("checkpoints_checked") or 0
    # "All 0 checkpoints agree" would read as a check that passed; none was there to run.
    compared = (
        f"agrees with all {checkpoints} signed checkpoints kept outside the database"
        if checkpoints
        else "no signed checkpoint kept outside the database was there yet to compare it with"
    )
    words = (
        "The audit log verifies: each event follows the one before it, carries lethe's "
        f"authentication code, and {compared}."
    )
    if chain.get("mode") == "incremental":
        words += (
            f" Events after #{chain.get('verified_from_seq')} were recomputed now; the ones "
            "before were recomputed by an earlier verification of this service."
        )
    return words


def _chain(pdf: _Report, chain: Mapping[str, Any]) -> None:
    pdf.heading("Audit-log verification")
    pdf.verdict(bool(chain.get("ok")), verification_words(chain))
    pdf.facts(
        [
            ("Events checked", str(chain.get("events_checked"))),
            ("Signed checkpoints checked", str(chain.get("checkpoints_checked", 0))),
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


def _request_facts(report: Mapping[str, Any], line: Deadline | None) -> list[tuple[str, str]]:
    summary: Mapping[str, Any] = report["summary"]
    scope = summary.get("scope")
    status = str(summary.get("status") or "-")
    ext = summary.get("extensions") or []
    rows = [
        ("Request", str(report.get("reference") or report["request_id"])),
        ("Your reference", str(report.get("ticket_ref") or "none given")),
        ("Status", outcome_words(status, summary.get("outcome"))),
        ("Person (keyed hash)", str(summary.get("subject_ref"))),
        ("Scope", "every model" if scope in (None, "all") else ", ".join(map(str, scope))),
        ("Legal ground", _legal_ground(summary)),
        ("Received", fmt_time(summary.get("received_at"))),
        ("Due", fmt_time(summary.get("due_at"))),
        ("Answered", fmt_time(summary.get("closed_at")) if summary.get("closed_at") else "not yet"),
        ("Deadline", line.text if line is not None else "unknown"),
        (
            "Extensions",
            "; ".join(f"+{x.get('months')} month(s) to {fmt_time(x.get('due_at'))}" for x in ext)
            or "none",
        ),
    ]
    if report.get("reference"):
        rows.insert(1, ("Request id", str(report["request_id"])))
    return rows


def _notes(pdf: _Report, notes: list[Mapping[str, Any]] | None) -> None:
    if notes is None:
        return
    pdf.heading("In the DPO's words")
    if not notes:
        pdf.para("No notes, case numbers or reasons were written for this request.")
        return
    pdf.facts(
        [
            (
                str(n.get("label")),
                f"{n.get('text')}"
                + (
                    ""
                    if n.get("matches_log") or n.get("destroyed")
                    else "  [does NOT match the audit log's hash]"
                ),
            )
            for n in notes
        ]
    )
    pdf.para(
        "Each text is stored encrypted; the audit log keeps a keyed hash of it, checked here.", 8
    )


def _keys(pdf: _Report, events: list[Mapping[str, Any]]) -> None:
    """Which of the request's keys were destroyed, and when (from the audit log only)."""
    pdf.heading("The requester's data held by lethe")
    destroyed = [e for e in events if e.get("action") == "request.keys_destroyed"]
    if not destroyed:
        pdf.para(
            "The request's encryption key still exists: its identifier, names, facts, reasons "
            "and notes are kept encrypted until the retention period of this kind of request "
            "ends, then the key is destroyed."
        )
        return
    for event in destroyed:
        pdf.para(describe_event(event))


def request_pdf(report: Mapping[str, Any]) -> bytes:
    """The per-request report (``reports.request_report``, with the console's additions:
    reference, ticket, the DPO's words, actors' names) as PDF bytes."""
    summary: Mapping[str, Any] = report["summary"]
    events: list[Mapping[str, Any]] = report["events"]
    handle = str(report.get("reference") or report["request_id"])
    pdf = _Report(f"Erasure request {handle}")
    _cover(
        pdf,
        f"Erasure request {handle}",
        f"Built from lethe's hash-chained audit log on {fmt_time(datetime.now(UTC))}. "
        "The person appears only as a keyed hash.",
    )
    line = _deadline(summary)
    pdf.facts(_request_facts(report, line))
    if line is not None and line.tone in ("ok", "bad"):
        pdf.verdict(line.tone == "ok", line.text)
    _notes(pdf, report.get("notes"))
    issued = [c for c in summary.get("certificates") or [] if c]
    current = [c for c in summary.get("current_certificates", issued) if c]
    status = str(summary.get("status") or "")
    _certificates(pdf, current, certificate_status(status, summary.get("outcome"), len(current)))
    if len(issued) > len(current):
        pdf.para(
            f"{len(issued) - len(current)} earlier certificate(s) were replaced by the ones "
            "above (re-issued once more was known); every one is in the audit log.",
            9,
        )
    check = report.get("certificate_check")
    if check and not check.get("ok"):
        seqs = ", ".join(f"#{s}" for s in check.get("differing_audit_seqs") or [])
        pdf.verdict(
            False,
            f"lethe's certificate records differ from the audit log (event {seqs}). The "
            "certificates above are the audit log's.",
        )
    _keys(pdf, events)
    pdf.heading("Timeline")
    _timeline_chart(pdf, events, summary, report.get("actors") or {}, report.get("notes") or [])
    _engineer_details(pdf, current, events)
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
    _period_certificates(pdf, certs)
    pdf.heading("Events")
    pdf.facts(
        [(f"#{e['seq']}  {fmt_time(e['occurred_at'])}", describe_event(e)) for e in events], 54
    )
    _chain(pdf, report["chain"])
    return bytes(pdf.output())
