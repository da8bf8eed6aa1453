"""A live memory chart: one curve per run (stock, MLA) on a shared axis, with peak markers."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from app import formatting as fmt
from app.theme import MLA_COLOR, STOCK_COLOR

COLORS = {"stock": STOCK_COLOR, "mla": MLA_COLOR}
NAMES = {"stock": "stock Whisper", "mla": "Whisper-MLA"}


class _Series:
    def __init__(self, plot: pg.PlotItem, label: str) -> None:
        color = COLORS.get(label, QColor(120, 120, 120))
        self.t: list[float] = []
        self.y: list[float] = []
        self.peak_i = -1
        self.low: float | None = None
        self.exact_peak: float | None = None  # from the run's report, when finished
        self.dirty = False
        self.curve = plot.plot([], [], pen=pg.mkPen(color, width=2), name=NAMES.get(label, label))
        self.marker = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(color), pen=pg.mkPen("w", width=1), symbol="o")
        self.text = pg.TextItem(color=color, anchor=(0.5, 1.3))
        plot.addItem(self.marker)
        plot.addItem(self.text)

    def add(self, t: float, value: float) -> None:
        self.t.append(t)
        self.y.append(value)
        self.low = value if self.low is None else min(self.low, value)
        if self.peak_i < 0 or value > self.y[self.peak_i]:
            self.peak_i = len(self.y) - 1
        self.dirty = True

    @property
    def peak(self) -> float:
        return self.y[self.peak_i] if self.peak_i >= 0 else 0.0

    def redraw(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        self.curve.setData(self.t, self.y)
        if self.peak_i >= 0:
            tp, vp = self.t[self.peak_i], self.y[self.peak_i]
            self.marker.setData([tp], [vp])
            self.text.setText(f"peak {fmt.nbytes(self.exact_peak if self.exact_peak is not None else vp)}")
            self.text.setPos(tp, vp)

    def place_label(self, x_max: float, line: int = 0) -> None:
        """Keep the peak label inside the plot (right-aligned near the right edge); line 1 goes below the marker."""
        if self.peak_i >= 0 and x_max > 0:
            frac = self.t[self.peak_i] / x_max
            self.text.setAnchor((1.0 if frac > 0.75 else 0.0 if frac < 0.1 else 0.5, 1.2 if line == 0 else -0.3))


class MemoryChart(QWidget):
    """`add(label, t_seconds, value_bytes)`; redraws at most every 100 ms.

    The axes are ranged here, not by pyqtgraph's auto-range, which collapses towards zero
    height while a curve is flat (a KV cache is empty until decoding starts) and then
    stops following the data. `zero_based` charts start at 0 bytes (KV cache); the others
    fit the data with some headroom (process memory, where the interesting part is on top).
    """

    def __init__(self, title: str, zero_based: bool = True, parent=None) -> None:
        super().__init__(parent)
        pal = self.palette()
        self.plot_widget = pg.PlotWidget(background=pal.color(QPalette.ColorRole.Base))
        self.plot_widget.setAccessibleName(title)
        self.plot: pg.PlotItem = self.plot_widget.getPlotItem()
        fg = pal.color(QPalette.ColorRole.Text)
        self.plot.setTitle(title, color=fg.name(), size="10pt")
        self.plot.setLabel("left", "", units="B", color=fg.name())
        self.plot.setLabel("bottom", "seconds since the run started", color=fg.name())
        for axis in ("left", "bottom"):
            ax = self.plot.getAxis(axis)
            ax.setPen(pg.mkPen(fg))
            ax.setTextPen(pg.mkPen(fg))
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.disableAutoRange()
        self.plot.setDownsampling(auto=True, mode="peak")  # hours of 20 Hz samples stay cheap to draw
        self.plot.setClipToView(True)
        self.zero_based = zero_based
        self.series: dict[str, _Series] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    def set_title(self, title: str) -> None:
        self.plot.setTitle(title, color=self.palette().color(QPalette.ColorRole.Text).name(), size="10pt")
        self.plot_widget.setAccessibleName(title)

    def add(self, label: str, t: float, value: float | None) -> None:
        if value is None:
            return
        if label not in ("stock", "mla"):
            return
        if label not in self.series:
            self.series[label] = _Series(self.plot, label)
        self.series[label].add(float(t), float(value))

    def peak(self, label: str) -> float | None:
        s = self.series.get(label)
        return s.peak if s and s.y else None

    def set_exact_peak(self, label: str, value: float | None) -> None:
        """Label the peak with the run's exact maximum (the chart samples at 20 Hz and may miss it)."""
        s = self.series.get(label)
        if s is not None and value is not None:
            s.exact_peak = float(value)
            s.dirty = True

    def redraw(self) -> None:
        if not any(s.dirty for s in self.series.values()):
            return
        x_max = max((s.t[-1] for s in self.series.values() if s.t), default=0.0)
        for s in self.series.values():
            s.redraw()
        self._fit(x_max)
        self._place_labels(x_max)

    def _place_labels(self, x_max: float) -> None:
        """Peak labels one above the other when the two peaks are close together."""
        placed: list[tuple[float, float]] = []
        y_lo, y_hi = self.plot.getViewBox().viewRange()[1]
        for s in self.series.values():
            if s.peak_i < 0:
                continue
            x, y = s.t[s.peak_i] / max(x_max, 1e-9), (s.peak - y_lo) / max(y_hi - y_lo, 1e-9)
            line = sum(1 for px, py in placed if abs(px - x) < 0.3 and abs(py - y) < 0.12)
            s.place_label(x_max, line)
            placed.append((x, y))

    def _fit(self, x_max: float) -> None:
        values = [v for s in self.series.values() if s.y for v in (s.low, s.peak)]
        if not values:
            return
        hi = max(values)
        lo = 0.0 if self.zero_based else min(values)
        pad = max((hi - lo) * 0.15, abs(hi) * 0.02, 1.0)
        self.plot.setYRange(lo if self.zero_based else lo - pad, hi + pad, padding=0)
        self.plot.setXRange(0.0, max(x_max * 1.03, 1.0), padding=0)

    def clear(self) -> None:
        for s in self.series.values():
            for item in (s.curve, s.marker, s.text):
                self.plot.removeItem(item)
        self.series.clear()
