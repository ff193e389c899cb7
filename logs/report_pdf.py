"""Monthly daily-QA report as PDF, in the house style of the treatment report (logs/export_pdf.py): per source
the calibration in use, a summary, the k_out trend with its tolerance bands and the isotropy trend (drawn
with QPainter, the same points, symbols and bands as the QA trend screen), every check, and a review block.

Qt only inside functions. Input is plain data (the QA history rows of orconsole.qa_history), so logs/ stays
free of the core; it never changes a record, and a value outside the plot is drawn at the edge WITH its value,
never silently clipped.
"""
from __future__ import annotations

import base64
import calendar
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

from logs.export_pdf import _CSS, _e, _ensure_gui_app, _grid, _h2, _kv, render_pdf

PASS_GREEN, WARN_AMBER, FAIL_RED = "#1f9d55", "#f0a500", "#d62828"
DIRECTION_COLOURS = {"plus_x": "#1f5fbf", "minus_x": "#7b4fd6", "plus_y": "#138a80", "minus_y": "#c2457a",
                     "plus_z": "#555555"}
DIRECTION_LABELS = {"plus_x": "+X", "minus_x": "−X", "plus_y": "+Y", "minus_y": "−Y", "plus_z": "+Z"}


def _f(row: dict, key: str) -> float | None:
    try:
        value = float(row.get(key, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def month_bounds(month: str) -> tuple[date, date]:
    """'2026-11' → (2026-11-01, 2026-11-30); refused (ValueError with the reason) when not YYYY-MM."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        first = date(year, mon, 1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"month {month!r} is not YYYY-MM (e.g. 2026-11)") from exc
    return first, date(year, mon, calendar.monthrange(year, mon)[1])


# ---------------------------------------------------------------------------------------------- charts

def _png_uri(image) -> str:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")


class _Chart:
    """A day-of-month × value chart on a QImage: frame, bands, grid, axis labels."""

    def __init__(self, first: date, last: date, y_low: float, y_high: float, *, y_label: str, y_format: str,
                 width_px: int = 2400, height_px: int = 860) -> None:
        from PySide6.QtGui import QColor, QFont, QImage, QPainter

        self.first, self.last, self.y_low, self.y_high = first, last, y_low, y_high
        self.y_format = y_format
        self.image = QImage(width_px, height_px, QImage.Format.Format_RGB32)
        self.image.fill(QColor("#ffffff"))
        self.p = QPainter(self.image)
        self.p.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.font = QFont("DejaVu Sans")
        self.font.setPixelSize(30)
        self.p.setFont(self.font)
        self.left, self.right, self.top, self.bottom = 190, width_px - 40, 30, height_px - 110
        self.y_label = y_label

    def x(self, when: datetime | date) -> float:
        if isinstance(when, datetime):
            day = when.date()
            frac = (when.hour + when.minute / 60) / 24
        else:
            day, frac = when, 0.5
        span = (self.last - self.first).days + 1
        return self.left + ((day - self.first).days + frac) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y_low) / (self.y_high - self.y_low) * (self.bottom - self.top)

    def band(self, low: float, high: float, colour: str, alpha: int) -> None:
        from PySide6.QtCore import QRectF
        from PySide6.QtGui import QColor

        c = QColor(colour)
        c.setAlpha(alpha)
        lo, hi = max(low, self.y_low), min(high, self.y_high)
        if hi > lo:
            self.p.fillRect(QRectF(self.left, self.y(hi), self.right - self.left, self.y(lo) - self.y(hi)), c)

    def hline(self, value: float, colour: str, width: float, dashed: bool = False) -> None:
        from PySide6.QtCore import QPointF, Qt
        from PySide6.QtGui import QColor, QPen

        pen = QPen(QColor(colour), width)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        self.p.setPen(pen)
        self.p.drawLine(QPointF(self.left, self.y(value)), QPointF(self.right, self.y(value)))

    def axes(self, y_ticks: list[float]) -> None:
        from PySide6.QtCore import QPointF, QRectF, Qt
        from PySide6.QtGui import QColor, QPen

        p = self.p
        p.setPen(QPen(QColor("#dddddd"), 1.5))
        for v in y_ticks:
            p.drawLine(QPointF(self.left, self.y(v)), QPointF(self.right, self.y(v)))
        p.setPen(QPen(QColor("#222222"), 2.5))
        p.drawRect(QRectF(self.left, self.top, self.right - self.left, self.bottom - self.top))
        for v in y_ticks:
            p.drawText(QRectF(0, self.y(v) - 20, self.left - 14, 40),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), format(v, self.y_format))
        span = (self.last - self.first).days + 1
        for i in range(span):
            day = date.fromordinal(self.first.toordinal() + i)
            xm = self.x(day)
            p.setPen(QPen(QColor("#222222"), 2))
            p.drawLine(QPointF(self.left + i / span * (self.right - self.left), self.bottom),
                       QPointF(self.left + i / span * (self.right - self.left), self.bottom + 8))
            if day.day == 1 or day.day % 5 == 0 or i == span - 1:
                p.drawText(QRectF(xm - 40, self.bottom + 10, 80, 36), int(Qt.AlignmentFlag.AlignCenter), str(day.day))
        p.drawText(QRectF(self.left, self.bottom + 52, self.right - self.left, 40), int(Qt.AlignmentFlag.AlignCenter),
                   f"day of {self.first.strftime('%B %Y')}")
        p.save()
        p.translate(36, (self.top + self.bottom) / 2)
        p.rotate(-90)
        p.drawText(QRectF(-300, -30, 600, 60), int(Qt.AlignmentFlag.AlignCenter), self.y_label)
        p.restore()

    def marker(self, x: float, y: float, kind: str, colour: str, size: float = 16) -> None:
        from PySide6.QtCore import QPointF
        from PySide6.QtGui import QBrush, QColor, QPen, QPolygonF

        p = self.p
        p.setPen(QPen(QColor(colour), 4))
        if kind == "x":
            p.drawLine(QPointF(x - size, y - size), QPointF(x + size, y + size))
            p.drawLine(QPointF(x - size, y + size), QPointF(x + size, y - size))
            return
        p.setBrush(QBrush(QColor(colour)))
        if kind == "t":
            p.drawPolygon(QPolygonF([QPointF(x, y - size * 1.2), QPointF(x - size, y + size * 0.8),
                                     QPointF(x + size, y + size * 0.8)]))
        else:
            p.drawEllipse(QPointF(x, y), size * 0.7, size * 0.7)
        p.setBrush(QBrush())

    def legend(self, items: list[tuple[str, str, str]]) -> None:
        from PySide6.QtCore import QRectF, Qt
        from PySide6.QtGui import QBrush, QColor, QPen

        w = 40 + sum(60 + self.p.fontMetrics().horizontalAdvance(t) for t, _, _ in items)
        x0, y0 = self.right - w - 10, self.top + 12
        self.p.setPen(QPen(QColor("#888888"), 1.5))
        self.p.setBrush(QBrush(QColor(255, 255, 255, 230)))
        self.p.drawRect(QRectF(x0, y0, w, 50))
        self.p.setBrush(QBrush())
        x = x0 + 30
        for text, kind, colour in items:
            self.marker(x, y0 + 25, kind, colour, 12)
            self.p.setPen(QColor("#111111"))
            self.p.drawText(QRectF(x + 22, y0, 1000, 50), int(Qt.AlignmentFlag.AlignVCenter), text)
            x += 60 + self.p.fontMetrics().horizontalAdvance(text)

    def finish(self) -> str:
        self.p.end()
        return _png_uri(self.image)


def k_out_chart(rows: list[dict], first: date, last: date, *, warning_percent: float, window_percent: float) -> str:
    """The month's k_out with the pass (green), warning (amber) and fail (red) zones; PNG as a data URI."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QPen

    warn, window = warning_percent / 100, window_percent / 100
    low, high = 1 - 2 * window, 1 + 2 * window
    chart = _Chart(first, last, low, high, y_label="k_out", y_format=".3f")
    chart.band(low, high, FAIL_RED, 28)
    chart.band(1 - window, 1 + window, WARN_AMBER, 60)
    chart.band(1 - warn, 1 + warn, PASS_GREEN, 55)
    step = window / 2
    chart.axes([round(1 + k * step, 6) for k in range(-4, 5)])
    for v in (1 - window, 1 + window):
        chart.hline(v, FAIL_RED, 3, dashed=True)
    chart.hline(1.0, "#777777", 2)
    points = []
    for row in rows:
        k = _f(row, "k_out")
        if k is None:
            continue
        points.append((chart.x(datetime.fromisoformat(row["performed_at"])), k, row["result"]))
    chart.p.setPen(QPen(QColor("#9aa4ae"), 2.5))
    for (x0, k0, _), (x1, k1, _) in zip(points, points[1:]):
        chart.p.drawLine(QPointF(x0, chart.y(min(max(k0, low), high))), QPointF(x1, chart.y(min(max(k1, low), high))))
    style = {"pass": ("o", PASS_GREEN), "warning": ("t", WARN_AMBER), "fail": ("x", FAIL_RED)}
    for x, k, result in points:
        kind, colour = style.get(result, ("x", FAIL_RED))
        inside = low <= k <= high
        y = chart.y(min(max(k, low), high))
        chart.marker(x, y, kind, colour, 16 if result == "pass" else 20)
        if not inside:      # beyond the axis: at the edge, with its value in words
            chart.p.setPen(QColor(FAIL_RED))
            above = k > high
            chart.p.drawText(QRectF(x + 22, y + (4 if above else -44), 420, 40), int(Qt.AlignmentFlag.AlignLeft),
                             f"{'▲' if above else '▼'} k_out {k:.3f} (off scale)")
    chart.legend([(f"pass ±{warning_percent:g} %", "o", PASS_GREEN),
                  (f"warning ±{warning_percent:g}–{window_percent:g} %", "t", WARN_AMBER),
                  (f"fail beyond ±{window_percent:g} %", "x", FAIL_RED)])
    return chart.finish()


def isotropy_chart(rows: list[dict], first: date, last: date, *, tolerance_percent: float) -> str:
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QPen

    values = [v for r in rows for d in DIRECTION_LABELS if (v := _f(r, f"isotropy_{d}_percent")) is not None]
    span = max([tolerance_percent * 1.6] + [abs(v) * 1.1 for v in values])
    chart = _Chart(first, last, -span, span, y_label="isotropy deviation (%)", y_format=".1f", height_px=700)
    chart.band(-tolerance_percent, tolerance_percent, PASS_GREEN, 55)
    step = max(1.0, round(span / 3))
    chart.axes([k * step for k in range(-3, 4) if abs(k * step) <= span])
    for v in (-tolerance_percent, tolerance_percent):
        chart.hline(v, FAIL_RED, 3, dashed=True)
    for d, colour in DIRECTION_COLOURS.items():
        pts = [(chart.x(datetime.fromisoformat(r["performed_at"])), v) for r in rows
               if (v := _f(r, f"isotropy_{d}_percent")) is not None]
        chart.p.setPen(QPen(QColor(colour), 2.5))
        for (x0, v0), (x1, v1) in zip(pts, pts[1:]):
            chart.p.drawLine(QPointF(x0, chart.y(v0)), QPointF(x1, chart.y(v1)))
        for x, v in pts:
            chart.marker(x, chart.y(v), "x" if abs(v) > tolerance_percent + 1e-9 else "o",
                         FAIL_RED if abs(v) > tolerance_percent + 1e-9 else colour, 12)
    chart.legend([(DIRECTION_LABELS[d], "o", c) for d, c in DIRECTION_COLOURS.items()]
                 + [(f"beyond ±{tolerance_percent:g} %", "x", FAIL_RED)])
    return chart.finish()


# ---------------------------------------------------------------------------------------------- report

def _result_cell(result: str) -> str:
    word = result.upper() or "—"
    return f"<span class='bad'>{word}</span>" if result in ("fail", "warning") else f"<span class='ok'>{word}</span>"


def report_html(*, month: str, site_name: str, sources: list[dict[str, Any]], generated_by: str,
                generated_utc: str) -> str:
    first, last = month_bounds(month)
    parts = [f"<html><head><style>{_CSS}</style></head><body>"]
    parts.append(f"<p style='font-size:15pt; font-weight:bold; margin-bottom:2px'>Daily QA — monthly report, "
                 f"{first.strftime('%B %Y')}</p>")
    parts.append(f"<p class='small'>{_e(site_name)} · period {first.isoformat()} to {last.isoformat()} · "
                 f"{len(sources)} source(s) · generated {_e(generated_utc[:16].replace('T', ' '))} UTC by "
                 f"{_e(generated_by)}</p>")
    if not sources:
        parts.append("<p><b>No QA checks were recorded in this month.</b></p>")
    for src in sources:
        rows = src["rows"]
        outputs = [r for r in rows if r["kind"] == "output"]
        iso = [r for r in rows if r["kind"] == "isotropy"]
        mech = [r for r in rows if r["kind"] == "mechanics"]
        ks = [k for r in outputs if (k := _f(r, "k_out")) is not None]
        counted = [k for r in outputs if (k := _f(r, "k_out")) is not None and r["result"] != "fail"]
        days = sorted({r["performed_on"] for r in outputs})
        n = {res: sum(r["result"] == res for r in outputs) for res in ("pass", "warning", "fail")}
        unsigned = sum(not r["signed_by"] for r in outputs)
        mean = sum(counted) / len(counted) if counted else None
        sd = (math.sqrt(sum((k - mean) ** 2 for k in counted) / (len(counted) - 1)) if len(counted) > 1 else None)
        parts.append(_h2(f"Source {src['serial']}"))
        verdict = ("<span class='ok'>no fail, every warning acknowledged</span>"
                   if n["fail"] == 0 and all(r["acknowledged_by"] for r in outputs if r["result"] == "warning")
                   else f"<span class='bad'>{n['fail']} FAIL, {n['warning']} WARNING — see the list below</span>")
        parts.append(_kv([
            ("Calibration in use", _e(src.get("calibration") or "none recorded")),
            ("Output checks", f"<b>{len(outputs)}</b> on {len(days)} day(s): {n['pass']} pass, {n['warning']} warning, "
                              f"{n['fail']} fail{f', {unsigned} NOT SIGNED' if unsigned else ''} — {verdict}"),
            ("k_out (pass and warning)", f"mean {mean:.4f}" + (f", SD {sd:.4f}" if sd is not None else "")
             + f", range {min(counted):.4f}–{max(counted):.4f}" if counted else "—"),
            ("All k_out, incl. fails", f"{min(ks):.4f}–{max(ks):.4f}" if ks else "—"),
            ("Limits", f"pass ±{src['warning_percent']:g} %, warning up to ±{src['window_percent']:g} %, fail beyond; "
                       f"isotropy ±{src['isotropy_tolerance_percent']:g} %"),
            ("Isotropy / mechanics", f"{len(iso)} isotropy check(s), {sum(r['result'] == 'fail' for r in iso)} fail · "
                                     f"{len(mech)} mechanics check(s), {sum(r['result'] == 'fail' for r in mech)} fail"),
        ]))
        parts.append("<p style='margin-top:6px; margin-bottom:1px'><b>k_out over the month</b></p>")
        parts.append(f"<img src='{k_out_chart(outputs, first, last, warning_percent=src['warning_percent'], window_percent=src['window_percent'])}' width='680'>")
        if iso:
            parts.append("<p style='margin-top:6px; margin-bottom:1px'><b>Isotropy over the month</b></p>")
            parts.append(f"<img src='{isotropy_chart(iso, first, last, tolerance_percent=src['isotropy_tolerance_percent'])}' width='680'>")
        flagged = [r for r in rows if r["result"] in ("warning", "fail")]
        parts.append(_h2(f"Warnings and fails — source {src['serial']}"))
        if not flagged:
            parts.append("<p>None this month.</p>")
        for r in flagged:
            follow = (f" Acknowledged by {_e(r['acknowledged_by'])}." if r["acknowledged_by"] else
                      (" <b>NOT ACKNOWLEDGED.</b>" if r["result"] == "warning" and r["kind"] == "output" else ""))
            parts.append(f"<p>{_result_cell(r['result'])} {_e(r['performed_at'][:16].replace('T', ' '))} "
                         f"({_e(r['kind'])}, {_e(r['qa_id'])}): {_e(r['message'])}{follow}</p>")
        parts.append(_h2(f"Output checks — source {src['serial']}"))
        parts.append(_grid([("date, time", 15, False), ("result", 11, False), ("k_out", 8, True), ("dev.", 10, True),
                            ("k_TP", 8, True), ("T °C", 6, True), ("P kPa", 8, True), ("spread", 8, True),
                            ("signed by", 15, False), ("acknowl.", 9, False)],
                           [[_e(r["performed_at"][:16].replace("T", " ")), _result_cell(r["result"]), _e(r["k_out"]),
                             f"{_f(r, 'deviation_percent'):+.2f} %" if _f(r, "deviation_percent") is not None else "—",
                             _e(r["k_tp"]), _e(r["temperature_c"]), _e(r["pressure_kpa"]),
                             f"{_e(r['spread_percent'])} %", _e(r["signed_by"] or "NOT SIGNED"),
                             _e(r["acknowledged_by"] or ("NEEDED" if r["result"] == "warning" else "—"))]
                            for r in outputs]))
        if iso:
            parts.append(_h2(f"Isotropy checks — source {src['serial']}"))
            parts.append(_grid([("date, time", 17, False), ("result", 9, False)]
                               + [(f"{DIRECTION_LABELS[d]} %", 9, True) for d in DIRECTION_LABELS]
                               + [("signed by", 29, False)],
                               [[_e(r["performed_at"][:16].replace("T", " ")), _result_cell(r["result"])]
                                + [_e(r.get(f"isotropy_{d}_percent", "")) for d in DIRECTION_LABELS]
                                + [_e(r["signed_by"] or "NOT SIGNED")] for r in iso]))
        if mech:
            parts.append(_h2(f"Mechanics — source {src['serial']}"))
            parts.append(_grid([("date, time", 20, False), ("result", 10, False), ("straightness mm", 20, True),
                                ("centering mm", 20, True), ("signed by", 30, False)],
                               [[_e(r["performed_at"][:16].replace("T", " ")), _result_cell(r["result"]),
                                 _e(r["probe_straightness_mm"]), _e(r["beam_centering_mm"]),
                                 _e(r["signed_by"] or "NOT SIGNED")] for r in mech]))
    parts.append(_h2("Review"))
    parts.append("<p>Each result above was signed electronically ('performed QA') when it was made; this report is a "
                 "summary for filing. Reviewed by the medical physicist:</p>"
                 "<table width='100%' cellpadding='6'><tr><td width='40%'>Name: ______________________________</td>"
                 "<td width='25%'>Date: ______________</td><td width='35%'>Signature: ______________________</td>"
                 "</tr></table>")
    parts.append("</body></html>")
    return "".join(parts)


def render_qa_month_report(path: Path | str, *, month: str, site_name: str, sources: list[dict[str, Any]],
                           generated_by: str, generated_utc: str) -> int:
    """Write the monthly QA report to `path`; returns the page count.

    sources: one dict per source — serial, calibration (text), rows (orconsole.qa_history.history_rows of the
    month), warning_percent, window_percent, isotropy_tolerance_percent."""
    _ensure_gui_app()
    first, _ = month_bounds(month)
    html_text = report_html(month=month, site_name=site_name, sources=sources, generated_by=generated_by,
                            generated_utc=generated_utc)
    return render_pdf(html_text, path,
                      footer_left=f"ORConsole daily QA · {first.strftime('%B %Y')} · "
                                  f"{', '.join(s['serial'] for s in sources) or 'no source'} · {site_name}",
                      footer_right=f"generated {generated_utc[:10]}")
