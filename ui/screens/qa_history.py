"""QA history and trends for the physicist: k_out and isotropy of one source over days and weeks with the
tolerance bands, warnings and fails highlighted in words and symbols as well as colour, and the CSV export.

Read-only: it never changes a stored record and never talks to a device. The plots (KOutTrendPlot,
IsotropyTrendPlot) are also drawn into the monthly PDF report, so the screen and the report show the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLineEdit, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from orconsole.qa import QaPolicy, StoreQaRepository
from orconsole.qa_history import export_history_csv
from ui import theme
from ui.context import Context, Outcome
from ui.widgets import make_button, make_label, panel

DIRECTIONS = ("plus_x", "minus_x", "plus_y", "minus_y", "plus_z")
DIRECTION_LABELS = {"plus_x": "+X", "minus_x": "−X", "plus_y": "+Y", "minus_y": "−Y", "plus_z": "+Z"}
DIRECTION_COLOURS = {"plus_x": "#4da3ff", "minus_x": "#9b7bff", "plus_y": "#2ec4b6", "minus_y": "#ff8fab",
                     "plus_z": "#c0c0c0"}
RESULT_STYLE = {   # symbol, colour, size: the symbol differs too, so colour is never the only cue
    "pass": ("o", theme.OK_GREEN, 11),
    "warning": ("t1", theme.WARN_AMBER, 19),
    "fail": ("x", theme.DANGER_RED, 19),
}
PERIODS = (("last 31 days", 31), ("last 92 days", 92), ("last 366 days", 366), ("all", None))


@dataclass(frozen=True)
class KOutPoint:
    performed_at: datetime
    k_out: float
    result: str                 # pass | warning | fail
    qa_id: str
    signed: bool
    acknowledged: bool

    @property
    def t_s(self) -> float:
        return self.performed_at.timestamp()


@dataclass(frozen=True)
class IsotropyPoint:
    performed_at: datetime
    deviations: dict            # direction -> fraction
    passed: bool
    qa_id: str


def trend_points(stored, *, since: date | None = None, until: date | None = None):
    """(k_out points, isotropy points) of the stored checks within [since, until], oldest first."""
    k_points, iso_points = [], []
    for item in sorted(stored, key=lambda s: s.record.performed_at):
        r = item.record
        if (since is not None and r.performed_on < since) or (until is not None and r.performed_on > until):
            continue
        if r.kind == "output":
            k_points.append(KOutPoint(r.performed_at, r.k_out, r.result.value, r.qa_id, bool(item.signed_by),
                                      item.acknowledgement is not None))
        elif r.kind == "isotropy":
            iso_points.append(IsotropyPoint(r.performed_at, dict(r.deviations), r.passed, r.qa_id))
    return k_points, iso_points


def _pen(colour: str, width: float = 2, dashed: bool = False):
    return pg.mkPen(colour, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)


class _TrendPlot(pg.PlotWidget):
    def __init__(self, *, light: bool = False, parent=None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.light = light
        fg = "#000000" if light else theme.TEXT
        self.setBackground("#ffffff" if light else theme.PANEL)
        tick_font = QFont()
        tick_font.setPixelSize(15)
        for name in ("left", "bottom"):
            axis = self.getAxis(name)
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
            axis.setTickFont(tick_font)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setMenuEnabled(False)
        self.legend = self.addLegend(offset=(10, 10), labelTextColor=fg, labelTextSize="11pt",
                                     brush=pg.mkBrush("#ffffffcc" if light else "#1c232bcc"))
        self.bands: dict[str, float] = {}

    def _band(self, low: float, high: float, colour: str, name: str) -> None:
        region = pg.LinearRegionItem(values=(low, high), orientation="horizontal", movable=False,
                                     brush=pg.mkBrush(QColor(colour).red(), QColor(colour).green(),
                                                      QColor(colour).blue(), 45), pen=pg.mkPen(None))
        region.setZValue(-10)
        self.addItem(region)
        self.bands[name] = high

    def _x_range(self, times: list[float], since: date | None, until: date | None) -> None:
        start = datetime.combine(since, dtime.min).astimezone().timestamp() if since else (min(times) if times else 0)
        end = datetime.combine(until + timedelta(days=1), dtime.min).astimezone().timestamp() if until else (
            max(times) if times else 1)
        if end <= start:
            end = start + 86400
        self.setXRange(start, end, padding=0.02)


class KOutTrendPlot(_TrendPlot):
    """k_out over time: the pass band (±warning) green, the warning band amber, the fail limits red."""

    def set_data(self, points: list[KOutPoint], policy: QaPolicy, *, since: date | None = None,
                 until: date | None = None) -> None:
        self.clear()
        self.bands = {}
        self.points = list(points)
        warn, window = policy.k_out_warning_fraction, policy.k_out_window_fraction
        self._band(1 + warn, 1 + window, theme.WARN_AMBER, "warning")
        self._band(1 - window, 1 - warn, theme.WARN_AMBER, "warning")
        self._band(1 - warn, 1 + warn, theme.OK_GREEN, "pass")
        self.bands = {"pass_low": 1 - warn, "pass_high": 1 + warn, "fail_low": 1 - window, "fail_high": 1 + window}
        for y in (1 - window, 1 + window):
            self.addItem(pg.InfiniteLine(pos=y, angle=0, pen=_pen(theme.DANGER_RED, 2, dashed=True)))
        self.addItem(pg.InfiniteLine(pos=1.0, angle=0, pen=_pen("#808080", 1)))
        if points:
            self.plot([p.t_s for p in points], [p.k_out for p in points], pen=_pen("#7f8c99", 1.5))
        for result, (symbol, colour, size) in RESULT_STYLE.items():
            chosen = [p for p in points if p.result == result]
            label = {"pass": f"pass (±{warn * 100:g} %)", "warning": f"WARNING (±{warn * 100:g}–{window * 100:g} %)",
                     "fail": f"FAIL (beyond ±{window * 100:g} %)"}[result]
            self.plot([p.t_s for p in chosen], [p.k_out for p in chosen], pen=None, symbol=symbol, symbolSize=size,
                      symbolBrush=pg.mkBrush(colour), symbolPen=pg.mkPen(colour, width=2), name=label)
        ys = [p.k_out for p in points] + [1 - window, 1 + window]
        self.setYRange(min(ys) - 0.01, max(ys) + 0.01, padding=0.05)
        self.setLabel("left", "k_out")
        self._x_range([p.t_s for p in points], since, until)


class IsotropyTrendPlot(_TrendPlot):
    """Per-direction isotropy deviation (%) over time with the ±tolerance band."""

    def set_data(self, points: list[IsotropyPoint], policy: QaPolicy, *, since: date | None = None,
                 until: date | None = None) -> None:
        self.clear()
        self.points = list(points)
        tol = policy.isotropy_tolerance_fraction * 100
        self._band(-tol, tol, theme.OK_GREEN, "pass")
        self.bands = {"low_percent": -tol, "high_percent": tol}
        for y in (-tol, tol):
            self.addItem(pg.InfiniteLine(pos=y, angle=0, pen=_pen(theme.DANGER_RED, 2, dashed=True)))
        for d in DIRECTIONS:
            xs = [p.performed_at.timestamp() for p in points if d in p.deviations]
            ys = [p.deviations[d] * 100 for p in points if d in p.deviations]
            self.plot(xs, ys, pen=_pen(DIRECTION_COLOURS[d], 1.5), symbol="o", symbolSize=8,
                      symbolBrush=pg.mkBrush(DIRECTION_COLOURS[d]), name=DIRECTION_LABELS[d])
        failed = [p for p in points if not p.passed]
        if failed:
            self.plot([p.performed_at.timestamp() for p in failed],
                      [max(p.deviations.values(), key=abs) * 100 for p in failed], pen=None, symbol="x",
                      symbolSize=20, symbolPen=pg.mkPen(theme.DANGER_RED, width=3), name="FAIL")
        ys = [v * 100 for p in points for v in p.deviations.values()] + [-tol, tol]
        self.setYRange(min(ys) - 0.5, max(ys) + 0.5, padding=0.05)
        self.setLabel("left", "isotropy deviation (%)")
        self._x_range([p.performed_at.timestamp() for p in points], since, until)


class QaHistoryScreen(QWidget):
    """Trends of one source; the table lists every output check with warnings and fails in words."""

    title = "QA history and trends"

    def __init__(self, ctx: Context, *, policy: QaPolicy | None = None, today=date.today,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        config = getattr(ctx.service, "config", None)
        self.policy = policy or (QaPolicy.from_site(config) if config is not None else QaPolicy())
        self._today = today
        self.k_points: list[KOutPoint] = []
        self.iso_points: list[IsotropyPoint] = []
        root = QVBoxLayout(self)
        bar = QHBoxLayout()
        bar.addWidget(make_label("Source"))
        self.source = QComboBox(objectName="qaHistorySource")
        self.source.setMinimumWidth(260)
        bar.addWidget(self.source)
        bar.addWidget(make_label("Period"))
        self.period = QComboBox(objectName="qaHistoryPeriod")
        for text, days in PERIODS:
            self.period.addItem(text, days)
        self.period.setCurrentIndex(1)
        bar.addWidget(self.period)
        self.refresh_button = make_button("Refresh", name="qaHistoryRefresh")
        bar.addWidget(self.refresh_button)
        bar.addStretch(1)
        self.csv_path = QLineEdit(objectName="qaHistoryCsvPath")
        self.csv_path.setPlaceholderText("CSV file to write, e.g. /home/physics/qa-history.csv")
        self.csv_path.setMinimumWidth(420)
        bar.addWidget(self.csv_path)
        self.export_button = make_button("Export CSV", name="qaHistoryExport")
        bar.addWidget(self.export_button)
        root.addLayout(bar)
        self.summary = make_label("", "info", wrap=True)
        self.summary.setObjectName("qaHistorySummary")
        root.addWidget(self.summary)
        plots = QHBoxLayout()
        kf, kl = panel()
        kl.addWidget(make_label("Output factor k_out", "heading"))
        self.k_plot = KOutTrendPlot()
        self.k_plot.setMinimumHeight(330)
        kl.addWidget(self.k_plot)
        plots.addWidget(kf, 3)
        isf, isl = panel()
        isl.addWidget(make_label("Isotropy", "heading"))
        self.iso_plot = IsotropyTrendPlot()
        self.iso_plot.setMinimumHeight(330)
        isl.addWidget(self.iso_plot)
        plots.addWidget(isf, 2)
        root.addLayout(plots, 3)
        self.table = QTableWidget(0, 6, objectName="qaHistoryTable")
        self.table.setHorizontalHeaderLabels(["date", "k_out", "deviation", "result", "signed", "acknowledged"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        root.addWidget(self.table, 2)
        self.message = make_label("", "info", wrap=True)
        self.message.setObjectName("qaHistoryMessage")
        root.addWidget(self.message)
        self.refresh_button.clicked.connect(self.refresh)
        self.period.currentIndexChanged.connect(lambda _i: self.refresh())
        self.source.activated.connect(lambda _i: self.refresh())
        self.export_button.clicked.connect(self.export_csv)

    def focus_first(self) -> None:
        self.refresh()

    def show_status(self, status) -> None:
        pass

    def _period(self) -> tuple[date | None, date]:
        days = self.period.currentData()
        today = self._today()
        return (today - timedelta(days=days - 1) if days else None), today

    def refresh(self) -> None:
        repo = StoreQaRepository(self.ctx.store)
        chosen = self.source.currentText() or None
        self.ctx.run(lambda: (repo.records(), chosen), self._loaded)

    def _loaded(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.message.setText(f"The QA history could not be read: {outcome.message}")
            return
        stored, chosen = outcome.value
        serials = sorted({s.record.source_serial for s in stored})
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(serials)
        if chosen in serials:
            self.source.setCurrentText(chosen)
        self.source.blockSignals(False)
        serial = self.source.currentText()
        since, until = self._period()
        self.k_points, self.iso_points = trend_points([s for s in stored if s.record.source_serial == serial],
                                                      since=since, until=until)
        self.k_plot.set_data(self.k_points, self.policy, since=since, until=until)
        self.iso_plot.set_data(self.iso_points, self.policy, since=since, until=until)
        self._fill_table()
        warnings = sum(p.result == "warning" for p in self.k_points)
        fails = sum(p.result == "fail" for p in self.k_points)
        period = f"{since.isoformat()} to {until.isoformat()}" if since else f"all, to {until.isoformat()}"
        self.summary.setText(
            (f"Source {serial} · {period}: {len(self.k_points)} output check(s), {warnings} WARNING, {fails} FAIL; "
             f"{len(self.iso_points)} isotropy check(s). Bands: pass ±{self.policy.k_out_warning_fraction * 100:g} %, "
             f"fail beyond ±{self.policy.k_out_window_fraction * 100:g} %, isotropy "
             f"±{self.policy.isotropy_tolerance_fraction * 100:g} %.") if serial else "No QA results stored yet.")

    def _fill_table(self) -> None:
        rows = list(reversed(self.k_points))   # newest first
        self.table.setRowCount(len(rows))
        for i, p in enumerate(rows):
            values = [p.performed_at.astimezone().strftime("%Y-%m-%d %H:%M"), f"{p.k_out:.4f}",
                      f"{(p.k_out - 1) * 100:+.2f} %", p.result.upper(), "yes" if p.signed else "NOT SIGNED",
                      "yes" if p.acknowledged else ("NEEDED" if p.result == "warning" else "—")]
            for j, text in enumerate(values):
                item = QTableWidgetItem(text)
                if p.result != "pass":
                    item.setBackground(QBrush(QColor(RESULT_STYLE[p.result][1])))
                    item.setForeground(QBrush(QColor("#000000" if p.result == "warning" else "#ffffff")))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def export_csv(self) -> None:
        path = self.csv_path.text().strip()
        if not path:
            self.message.setText("Enter the path of the CSV file to write.")
            return
        repo, serial = StoreQaRepository(self.ctx.store), self.source.currentText() or None
        self.ctx.run(lambda: export_history_csv(repo, path, source_serial=serial), self._exported)

    def _exported(self, outcome: Outcome) -> None:
        self.message.setText(f"Wrote {outcome.value} QA record(s) to {self.csv_path.text().strip()}."
                             if outcome.ok else f"The CSV was not written: {outcome.message}")

