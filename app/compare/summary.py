"""The comparison's numbers: KV-cache saving (% and bytes), memory peaks and speed of each run."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from app import formatting as fmt
from app.compare.charts import COLORS, NAMES

ROWS = (
    ("kv_self", "Self-attention KV peak"),
    ("kv_total", "All KV caches, peak"),
    ("memory", "Peak RSS"),
    ("memory_delta", "RSS growth in run"),
    ("speed", "Speed (× real time)"),
    ("wall", "Wall time"),
)


def saving_text(stock: float | None, mla: float | None) -> tuple[str, float | None]:
    """('75.0% smaller (0.92 MB less)', fraction) or a dash while unknown."""
    if not stock or mla is None:
        return "—", None
    frac = 1.0 - mla / stock
    word = "smaller" if frac >= 0 else "larger"
    return f"{abs(100 * frac):.1f}% {word} ({fmt.nbytes(abs(stock - mla))} {'less' if frac >= 0 else 'more'})", frac


class SummaryPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.headline = QLabel("KV-cache saving: run a comparison to measure it")
        self.headline.setAccessibleName("KV-cache saving")
        font = self.headline.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.headline.setFont(font)
        self.headline.setWordWrap(True)
        self.subline = QLabel("")
        self.subline.setWordWrap(True)
        self.subline.setTextFormat(Qt.TextFormat.PlainText)
        self.conditions = QLabel("")
        self.conditions.setWordWrap(True)
        self.conditions.setEnabled(False)  # muted
        self.cells: dict[tuple[str, str], QLabel] = {}
        self.row_labels: dict[str, QLabel] = {}
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        for col, label in enumerate(("stock", "mla"), start=1):
            head = QLabel(f'<b style="color:{COLORS[label].name()}">{NAMES[label]}</b>')
            head.setAlignment(Qt.AlignmentFlag.AlignRight)
            grid.addWidget(head, 0, col)
        for row, (key, text) in enumerate(ROWS, start=1):
            name = QLabel(text)
            self.row_labels[key] = name
            grid.addWidget(name, row, 0)
            for col, label in enumerate(("stock", "mla"), start=1):
                cell = QLabel("—")
                cell.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                cell.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                self.cells[(key, label)] = cell
                grid.addWidget(cell, row, col)
        grid.setColumnStretch(0, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.headline)
        layout.addSpacing(6)
        layout.addLayout(grid)
        layout.addSpacing(6)
        layout.addWidget(self.subline)
        layout.addSpacing(6)
        layout.addWidget(self.conditions)
        layout.addStretch(1)
        self.kv_self_fraction: float | None = None

    def clear(self) -> None:
        for cell in self.cells.values():
            cell.setText("—")
        self.headline.setText("KV-cache saving: measuring…")
        self.subline.setText("")
        self.conditions.setText("")
        self.kv_self_fraction = None

    def set_memory_kind(self, gpu: bool) -> None:
        self.row_labels["memory"].setText("Peak GPU memory" if gpu else "Peak RSS")

    def set_cell(self, key: str, label: str, text: str) -> None:
        self.cells[(key, label)].setText(text)

    def live(self, kv_self: dict[str, float | None], kv_total: dict[str, float | None],
             memory: dict[str, float | None]) -> None:
        """Update from the running peaks seen on the charts."""
        for label in ("stock", "mla"):
            if kv_self.get(label) is not None:
                self.set_cell("kv_self", label, fmt.nbytes(kv_self[label]))
            if kv_total.get(label) is not None:
                self.set_cell("kv_total", label, fmt.nbytes(kv_total[label]))
            if memory.get(label) is not None:
                self.set_cell("memory", label, fmt.nbytes(memory[label]))
        text, frac = saving_text(kv_self.get("stock"), kv_self.get("mla"))
        if frac is not None:
            self.headline.setText(f"KV-cache saving (self-attention): {text} so far")

    def final(self, report: dict) -> None:
        """Fill everything from ComparisonReport.to_dict()."""
        runs = {"stock": report.get("stock") or {}, "mla": report.get("mla") or {}}
        gpu = any(r.get("peak_device_bytes") for r in runs.values())
        self.set_memory_kind(gpu)
        for label, r in runs.items():
            if not r:
                continue
            kv = r.get("kv_cache_peak_bytes") or {}
            self.set_cell("kv_self", label, fmt.nbytes(kv.get("self", 0)))
            self.set_cell("kv_total", label, fmt.nbytes(kv.get("self", 0) + kv.get("cross", 0)))
            peak = r.get("peak_device_bytes") if gpu else r.get("peak_rss_bytes")
            self.set_cell("memory", label, fmt.nbytes(peak))
            base = r.get("rss_baseline_bytes")
            if base is not None and r.get("peak_rss_bytes") is not None:
                self.set_cell("memory_delta", label, "+" + fmt.nbytes(max(0, r["peak_rss_bytes"] - base)))
            audio_s, wall_s = r.get("audio_s") or 0.0, r.get("wall_s") or 0.0
            self.set_cell("speed", label, f"{audio_s / wall_s:.2f}×" if wall_s > 0 else "—")
            self.set_cell("wall", label, f"{wall_s:.1f} s")
        if report.get("conditions"):
            self.conditions.setText(f"How it was measured: {report['conditions']}. RSS includes what the "
                                    "first run left allocated; the KV-cache bytes are exact.")
        saving = report.get("kv_saving") or {}
        s_kv = (runs["stock"].get("kv_cache_peak_bytes") or {})
        m_kv = (runs["mla"].get("kv_cache_peak_bytes") or {})
        if saving.get("self_pct") is not None:
            self.kv_self_fraction = saving["self_pct"] / 100.0
            self.headline.setText(f"KV-cache saving (self-attention): {saving['self_pct']:.1f}% smaller, "
                                  f"{fmt.nbytes(saving.get('self_bytes'))} less at the peak")
        else:
            self.headline.setText("KV-cache saving: not measured (the run was cancelled)")
        if saving.get("total_pct") is not None:
            cross_note = ("cross-attention cache removed (exact cross-attention)"
                          if s_kv.get("cross") and not m_kv.get("cross") else
                          "the cross-attention cache is unchanged unless exact cross-attention is on")
            self.subline.setText(f"Including the cross-attention cache: {saving['total_pct']:.1f}% smaller "
                                 f"({fmt.nbytes(saving.get('total_bytes'))} less); {cross_note}. "
                                 f"MLA model: {runs['mla'].get('model', {}).get('kv_mode', '')}.")
