"""PDF treatment report of a signed delivery record, rendered with Qt (QTextDocument on QPdfWriter).

The only module of logs/ that uses Qt, imported lazily inside functions. Never renders a record that
fails verification without saying so in large letters on every page.
"""
from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path
from typing import Any

from logs.canonical import utc_now_iso
from logs.records import DeliveryRecord
from logs.store import Store

_CSS = """
body { font-family: 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif; font-size: 9pt; color: #111; }
h1 { font-size: 14pt; margin: 0 0 2pt 0; }
h2 { font-size: 10.5pt; margin: 9pt 0 2pt 0; color: #1d3557; }
table { border-collapse: collapse; }
td, th { padding: 2pt 5pt 2pt 3pt; vertical-align: top; }
th { background: #e4e8ee; text-align: left; font-weight: bold; }
td.k { color: #444; width: 32%; }
.grid td, .grid th { border: 1px solid #9aa; font-size: 8pt; }
.num { text-align: right; }
.ok { color: #0a5a0a; font-weight: bold; }
.bad { color: #b00000; font-weight: bold; }
.small { font-size: 7.5pt; color: #444; }
.mono { font-family: 'DejaVu Sans Mono', monospace; font-size: 7.5pt; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _t(utc: str | None) -> str:
    """'2026-11-26T09:12:03.120000Z' -> '2026-11-26 09:12:03.1 UTC'."""
    if not utc:
        return "—"
    return f"{utc[:10]} {utc[11:21]} UTC"


KEEP_TOGETHER = ("Approvals and signatures", "Check it with")
PAGE_BREAK_MARK = "<!--break-signatures-->"


def _h2(title: str) -> str:
    brk = PAGE_BREAK_MARK if title == KEEP_TOGETHER[0] else ""
    return (f"<p style='font-size:10.5pt; font-weight:bold; color:#1d3557; margin-top:9px; margin-bottom:2px{brk}'>"
            f"{_e(title)}</p><hr>")


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td class='k' width='27%'>{_e(k)}</td><td width='73%'>{v}</td></tr>" for k, v in rows)
    return f"<table width='100%' cellspacing='0' cellpadding='1'>{body}</table>"


def _grid(header: list[tuple[str, int, bool]], rows: list[list[str]]) -> str:
    """header: (title, width %, numeric)."""
    th = "<thead><tr>" + "".join(f"<th width='{w}%' class='{'num' if n else ''}'>{_e(t)}{'&nbsp;' if n else ''}</th>"
                                 for t, w, n in header) \
        + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td class='{'num' if header[i][2] else ''}'>{c}{'&nbsp;' if header[i][2] else ''}</td>"
                                    for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table class='grid' width='100%' cellspacing='0' cellpadding='3'>{th}{body}</table>"


def _pct(delivered: float, planned: float) -> str:
    if planned <= 0:
        return "—"
    return f"{(delivered - planned) / planned * 100:+.2f} %"


def report_html(record: DeliveryRecord, *, content_hash: str, signatures: list[Any], verdict_ok: bool,
                verdict_text: str, addenda: list[tuple[Any, list[Any]]], exported_by: str, exported_utc: str) -> str:
    r = record
    p = r.patient
    plan = r.plan
    source = next((d for d in r.devices if d.serial_number == plan.source_serial), None)
    others = [d for d in r.devices if d is not source]
    status = ("<table width='100%' cellpadding='4' cellspacing='0'><tr><td class='ok' bgcolor='#e3f1e3'>"
              "VERIFIED — content hash, every signature and every countersignature checked at report time</td></tr></table>"
              if verdict_ok else
              "<table width='100%' cellpadding='4' cellspacing='0'><tr><td class='bad' bgcolor='#f8dada'>"
              f"NOT VERIFIED — {_e(verdict_text)}</td></tr></table>")
    parts = [f"<html><head><style>{_CSS}</style></head><body>"]
    parts.append("<p style='font-size:15pt; font-weight:bold; margin-bottom:2px'>Intraoperative radiotherapy — "
                 "treatment record</p>")
    parts.append(f"<p class='small'>Record {_e(r.record_id)} · treatment date <b>{_e(r.treatment_date)}</b> · "
                 f"delivery <b>{_e(r.completion)}</b> · {len(r.sessions)} beam session(s)</p>{status}")

    parts.append(_h2("Patient"))
    parts.append(_kv([
        ("Name", f"<b>{_e(p.full_name)}</b>"), ("Medical record number", _e(p.medical_record_number)),
        ("Date of birth", _e(p.date_of_birth)), ("Trial subject ID", _e(p.trial_subject_id)),
        ("Identity verified by", _e(" + ".join(p.identity_verified_by) or "not recorded")),
    ]))

    parts.append(_h2("Prescription and plan"))
    parts.append(_kv([
        ("Site", _e(plan.site + (f" — {plan.lesion_label}" if plan.lesion_label else ""))),
        ("Prescription", f"<b>{plan.prescription_gy:.2f} Gy</b> at the {_e(plan.prescription_point)}, "
                         f"{plan.fractions} fraction(s) of {plan.dose_per_fraction_gy:.2f} Gy"),
        ("Plan", f"{_e(plan.plan_id)} version {plan.plan_version} · <span class='mono'>sha256 {_e(plan.plan_hash[:16])}…</span>"),
        ("Surface dose rate", f"{plan.surface_dose_rate_gy_per_min:.4f} Gy/min"),
        ("Planned treatment time", f"{plan.planned_time_s:.1f} s ({plan.planned_time_s / 60:.2f} min)"),
        ("IRM preset", f"{plan.irm_preset_counts} counts" if plan.irm_preset_counts is not None else "—"),
    ]))

    parts.append(_h2("Applicator and source"))
    dev = lambda d: f"{_e(d.manufacturer)} {_e(d.model)}, serial {_e(d.serial_number)}, firmware {_e(d.firmware_version or '—')}"  # noqa: E731
    rows = [("Applicator", f"spherical, <b>{plan.applicator_diameter_cm:.1f} cm</b> diameter"
                           + (f", ID {_e(plan.applicator_id)}" if plan.applicator_id else "")),
            ("X-ray source", dev(source) if source else f"serial {_e(plan.source_serial)}")]
    rows += [(d.role.capitalize(), dev(d)) for d in others]
    rows += [("Console software", f"ORConsole {_e(r.software_version)} on {_e(r.console.hostname or '—')}"
                                  f"{', ' + _e(r.console.room) if r.console.room else ''}")]
    parts.append(_kv(rows))

    parts.append(_h2("Calibration and daily output check"))
    c, q = r.calibration, r.qa
    parts.append(_kv([
        ("Calibration", f"source {_e(c.source_serial)}, dated {_e(c.calibration_date or '—')}, by {_e(c.calibrated_by or '—')}"),
        ("Calibration digest", f"<span class='mono'>{_e(c.calibration_digest)}</span>"),
        ("Output check (QA)", f"{_e(q.qa_id)} on {_e(q.performed_on)}: <b>k_out = {q.k_out:.4f}</b> "
                              f"({(q.k_out - 1) * 100:+.2f} %), result {_e(q.result)}"),
    ]))

    parts.append(_h2("Delivery: planned and delivered"))
    tot = r.totals or r.computed_totals()
    dose_rx = plan.dose_per_fraction_gy
    parts.append("<table class='grid' width='100%'><tr><th></th><th class='num'>Planned&nbsp;</th><th class='num'>Delivered&nbsp;</th>"
                 "<th class='num'>Deviation&nbsp;</th></tr>"
                 f"<tr><td>Beam-on time, console timer</td><td class='num'>{plan.planned_time_s:.1f} s&nbsp;</td>"
                 f"<td class='num'>{tot.console_beam_on_s:.1f} s&nbsp;</td><td class='num'>{_pct(tot.console_beam_on_s, plan.planned_time_s)}&nbsp;</td></tr>"
                 f"<tr><td>Beam-on time, device timer</td><td class='num'>{plan.planned_time_s:.1f} s&nbsp;</td>"
                 f"<td class='num'>{tot.device_beam_on_s:.1f} s&nbsp;</td><td class='num'>{_pct(tot.device_beam_on_s, plan.planned_time_s)}&nbsp;</td></tr>"
                 f"<tr><td>Dose, primary channel (timer)</td><td class='num'>{dose_rx:.3f} Gy&nbsp;</td>"
                 f"<td class='num'><b>{tot.dose_gy.primary_timer_gy:.3f} Gy</b>&nbsp;</td><td class='num'>{_pct(tot.dose_gy.primary_timer_gy, dose_rx)}&nbsp;</td></tr>"
                 f"<tr><td>Dose, secondary channel (IRM)</td><td class='num'>{dose_rx:.3f} Gy&nbsp;</td>"
                 f"<td class='num'><b>{tot.dose_gy.secondary_irm_gy:.3f} Gy</b>&nbsp;</td><td class='num'>{_pct(tot.dose_gy.secondary_irm_gy, dose_rx)}&nbsp;</td></tr>"
                 "</table>")
    parts.append("<p class='small'>Beam sessions (times UTC on the treatment date; a continuation delivers the remainder "
                 "after an interruption)</p>")
    rows = [[str(x.index), "treatment" if x.delivery_type == "TREATMENT" else "continuation",
             _t(x.beam_on_utc)[11:21], _t(x.beam_off_utc)[11:21], f"{x.preset_time_s:.1f}", f"{x.console_beam_on_s:.1f}",
             f"{x.device_beam_on_s:.1f}", f"{x.dose_gy.primary_timer_gy:.3f}", f"{x.dose_gy.secondary_irm_gy:.3f}",
             f"{_e(x.termination_cause.value)} ({x.termination_cause.dicom_status})"
             + (f"<br><span class='small'>{_e(x.termination_detail)}</span>" if x.termination_detail else "")]
            for x in r.sessions]
    if rows:
        parts.append(_grid([("#", 3, False), ("Type", 11, False), ("Beam on", 10, False), ("Beam off", 11, False),
                            ("Preset (s)", 8, True), ("Console (s)", 9, True), ("Device (s)", 8, True),
                            ("Primary (Gy)", 9, True), ("IRM (Gy)", 8, True), ("Termination", 23, False)], rows))
    else:
        parts.append("<p class='bad'>No beam session recorded.</p>")
    if r.sessions:
        parts.append("<p class='small'>Raw device log digests (SHA-256): " + " · ".join(
            f"session {s.index} <span class='mono'>{s.raw_device_log_sha256[:16]}…</span>" for s in r.sessions) + "</p>")

    parts.append(_h2("Interruptions"))
    if r.interruptions:
        parts.append(_grid([("Time (UTC)", 15, False), ("Session", 8, False), ("Initiated by", 11, False),
                            ("Reason", 50, False), ("Delivered so far", 16, True)],
                           [[_t(i.utc)[11:21], str(i.session_index), _e(i.initiated_by), _e(i.reason),
                             "—" if i.delivered_so_far_gy is None else f"{i.delivered_so_far_gy:.3f} Gy"]
                            for i in r.interruptions]))
    else:
        parts.append("<p>None.</p>")
    parts.append(_h2("Interlock events"))
    if r.interlock_events:
        parts.append(_grid([("Time (UTC)", 15, False), ("Session", 8, False), ("Interlock", 25, False),
                            ("State", 10, False), ("Detail", 42, False)],
                           [[_t(e.utc)[11:21], str(e.session_index or "—"), _e(e.interlock), _e(e.state), _e(e.detail)]
                            for e in r.interlock_events]))
    else:
        parts.append("<p>None.</p>")

    parts.append(_h2("Approvals and signatures"))
    sig_rows = [(a.printed_name, a.role, a.meaning, a.signed_utc, "the plan") for a in r.approvals]
    sig_rows += [(x.printed_name, x.role, x.meaning, x.signed_utc, "this record") for x in signatures]
    for add_doc, add_sigs in addenda:
        sig_rows += [(x.printed_name, x.role, x.meaning, x.signed_utc, f"addendum {add_doc.doc_id[:8]}") for x in add_sigs]
    if sig_rows:
        parts.append(_grid([("Printed name", 22, False), ("Role", 18, False), ("Meaning", 19, False),
                            ("Date and time", 27, False), ("Document", 14, False)],
                           [[f"<b>{_e(n)}</b>", _e(role), f"<b>{_e(m)}</b>", _t(u), _e(w)] for n, role, m, u, w in sig_rows]))
        parts.append("<p class='small'>Each signature is an Ed25519 signature over the document's SHA-256 content hash, "
                     "the signer's identity and role, the meaning and the time, countersigned by the console installation "
                     "key. Check it with <span class='mono'>orconsole records verify</span>.</p>")
    else:
        parts.append("<p class='bad'>Not signed.</p>")

    if addenda:
        parts.append(_h2("Addenda (corrections)"))
        for add_doc, add_sigs in addenda:
            a = add_doc.data
            by = ", ".join(f"{x.printed_name} ({x.role})" for x in add_sigs) or f"{a['author']} (not yet signed)"
            items = "".join(f"<li><span class='mono'>{_e(c['field_path'])}</span>: recorded {_e(c.get('recorded_value'))} "
                            f"→ corrected {_e(c.get('corrected_value'))}</li>" for c in a.get("corrections", []))
            parts.append(f"<p><b>{_t(a['created_utc'])}</b>, signed by {_e(by)}: {_e(a['reason'])}</p><ul>{items}</ul>")

    if r.comments:
        parts.append(_h2("Comments") + f"<p>{_e(r.comments)}</p>")
    parts.append(_h2("Record integrity"))
    parts.append(_kv([("Content hash (SHA-256)", f"<span class='mono'>{_e(content_hash)}</span>"),
                      ("Console installation key", f"<span class='mono'>{_e(r.console.installation_key_id)}</span>"),
                      ("Report generated", f"{_t(exported_utc)} by {_e(exported_by)}")]))
    parts.append("</body></html>")
    return "".join(parts)


def _ensure_gui_app():
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    existing = QGuiApplication.instance()
    if existing is not None:
        return existing
    # A QApplication (not just QGuiApplication), so that a UI later in the same process finds the
    # application type it needs.
    from PySide6.QtWidgets import QApplication

    return QApplication([])


def render_pdf(html_text: str, path: Path | str, *, footer_left: str, footer_right: str, warning: str | None = None) -> int:
    """Lay out html_text on A4 pages with a footer on each; returns the page count."""
    app = _ensure_gui_app()  # noqa: F841 - must exist while painting
    from PySide6.QtCore import QMarginsF, QRectF, QSizeF, Qt
    from PySide6.QtGui import QColor, QFont, QPageLayout, QPageSize, QPainter, QPdfWriter, QTextDocument

    writer = QPdfWriter(str(path))
    writer.setResolution(300)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(15, 14, 15, 16), QPageLayout.Unit.Millimeter))
    writer.setTitle("IORT treatment record")
    writer.setCreator("ORConsole")
    dpi = writer.resolution()
    page = writer.pageLayout().paintRectPixels(dpi)
    footer_h = int(dpi * 0.30)
    body_h = page.height() - footer_h

    doc = QTextDocument()
    doc.setDocumentMargin(0)
    font = QFont("DejaVu Sans")
    font.setPointSizeF(9)
    doc.setDefaultFont(font)
    # Lay the document out at 96 dpi-like logical units, then scale to the printer's 300 dpi.
    scale = dpi / 96.0
    doc.setPageSize(QSizeF(page.width() / scale, body_h / scale))
    doc.setHtml(html_text.replace(PAGE_BREAK_MARK, ""))
    # Keep the signature block on one page: if it straddles a page break, start it on a new page.
    start, end = doc.find(KEEP_TOGETHER[0]), doc.find(KEEP_TOGETHER[1])
    if not start.isNull() and not end.isNull():
        layout = doc.documentLayout()
        page_h = doc.pageSize().height()
        y0 = layout.blockBoundingRect(start.block()).top()
        y1 = layout.blockBoundingRect(end.block()).bottom()
        if int(y0 // page_h) != int(y1 // page_h):
            doc.setHtml(html_text.replace(PAGE_BREAK_MARK, "; page-break-before: always"))
    pages = doc.pageCount()

    painter = QPainter(writer)
    try:
        for i in range(pages):
            if i:
                writer.newPage()
            painter.save()
            painter.scale(scale, scale)
            painter.translate(0, -i * body_h / scale)
            doc.drawContents(painter, QRectF(0, i * body_h / scale, page.width() / scale, body_h / scale))
            painter.restore()
            painter.setPen(QColor("#777"))
            painter.drawLine(0, body_h + 10, page.width(), body_h + 10)
            ff = QFont("DejaVu Sans")
            ff.setPointSizeF(7)
            painter.setFont(ff)
            painter.setPen(QColor("#333"))
            rect = QRectF(0, body_h + 18, page.width(), footer_h - 18)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop), footer_left)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop),
                             f"{footer_right} · page {i + 1} of {pages}")
            if warning:
                wf = QFont("DejaVu Sans")
                wf.setPointSizeF(20)
                wf.setBold(True)
                painter.setFont(wf)
                painter.setPen(QColor(200, 0, 0, 110))
                painter.drawText(QRectF(0, 0, page.width(), body_h), int(Qt.AlignmentFlag.AlignCenter), warning)
    finally:
        painter.end()
    return pages


def export_pdf(store: Store, record_id: str, path: Path | str, *, exported_by: str) -> Path:
    """Verify the record, render the report to path, audit the export."""
    from logs.records import ADDENDUM_KIND
    from logs.verify import verify_stored

    verdict = verify_stored(store, record_id)
    doc = store.get_document(record_id)
    record = DeliveryRecord.model_validate(doc.data)
    sigs = store.signatures_for(record_id)
    addenda = [(a, store.signatures_for(a.doc_id)) for a in store.find_documents(kind=ADDENDUM_KIND, references_doc_id=record_id)]
    now = utc_now_iso()
    problems = "; ".join(verdict.problems) or "a signature does not verify"
    html_text = report_html(record, content_hash=doc.content_hash or "(draft)", signatures=sigs, verdict_ok=verdict.ok,
                            verdict_text=problems, addenda=addenda, exported_by=exported_by, exported_utc=now)
    p = record.patient
    render_pdf(html_text, path,
               footer_left=f"{p.full_name} · MRN {p.medical_record_number} · {p.trial_subject_id} · {record.treatment_date}",
               footer_right=f"record sha256 {(doc.content_hash or 'draft')[:12]}…",
               warning=None if verdict.ok else "NOT VERIFIED — DO NOT RELY ON THIS REPORT")
    data = Path(path).read_bytes()
    store.audit(exported_by, "export", {"record_id": record_id, "format": "pdf", "file": str(path),
                                        "verified": verdict.ok, "sha256": hashlib.sha256(data).hexdigest()})
    return Path(path)
