"""The comparison window: pick a file, run stock then MLA, watch both memory curves live."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QVBoxLayout,
                               QWidget)

from app import APP_NAME
from app.audio_files import dialog_filter
from app.compare.charts import COLORS, NAMES, MemoryChart
from app.compare.diff_view import DiffView
from app.compare.runner import CompareRunner
from app.compare.summary import SummaryPanel
from app.model_choice import ModelChoice
from app.settings import AppSettings
from app.widgets.elided_label import ElidedLabel

KV_TITLE = "Decoder self-attention KV cache (what MLA compresses)"
RSS_TITLE = "Process memory (RSS)"
GPU_TITLE = "GPU memory (torch allocated)"
RUN_SPAN = {"stock": (0.0, 0.5), "mla": (0.5, 1.0)}


class CompareWindow(QWidget):
    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.settings = settings
        self.setWindowTitle(f"{APP_NAME} — stock Whisper vs Whisper-MLA")
        self.path: Path | None = None
        self.choice = ModelChoice()  # the default compressed mode
        self.runner = CompareRunner(settings.models_dir, self)
        self.report: dict | None = None
        self.samples_seen: dict[str, int] = {"stock": 0, "mla": 0}
        self._kv_total: dict[str, float] = {}
        self._gpu = False
        self._build()
        self._connect()
        geometry = settings.state("compare_geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(QSize(1150, 800))

    def _build(self) -> None:
        self.file_label = ElidedLabel("No file chosen")
        self.choose_button = QPushButton("Choose file…")
        self.choose_button.setAccessibleName("Choose file to compare")
        self.models_label = QLabel()
        self.run_button = QPushButton("Run comparison")
        self.run_button.setDefault(True)
        self.run_button.setAccessibleName("Run comparison")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel comparison")
        self.cancel_button.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(self.file_label, 1)
        top.addWidget(self.choose_button)
        top.addSpacing(12)
        top.addWidget(self.models_label)
        top.addSpacing(12)
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)

        self.stage_label = QLabel("Runs stock Whisper, then Whisper-MLA, on the same file in one process.")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(12)
        status = QHBoxLayout()
        status.addWidget(self.stage_label, 1)
        status.addWidget(self.progress, 1)

        self.kv_chart = MemoryChart(KV_TITLE)
        self.mem_chart = MemoryChart(RSS_TITLE, zero_based=False)
        self.kv_chart.plot.setXLink(self.mem_chart.plot)
        charts = QWidget()
        charts_layout = QVBoxLayout(charts)
        charts_layout.setContentsMargins(0, 0, 0, 0)
        key = QLabel("   ".join(f'<span style="color:{COLORS[k].name()}; font-weight:bold">━━</span> {NAMES[k]}'
                                  for k in ("stock", "mla")))
        key.setAccessibleName("Chart legend")
        charts_layout.addWidget(key)
        charts_layout.addWidget(self.kv_chart, 1)
        charts_layout.addWidget(self.mem_chart, 1)
        self.summary = SummaryPanel()
        self.summary.setMinimumWidth(360)
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(charts)
        upper.addWidget(self.summary)
        upper.setStretchFactor(0, 3)
        upper.setStretchFactor(1, 2)
        upper.setChildrenCollapsible(False)
        self.diff = DiffView()
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(upper)
        self.split.addWidget(self.diff)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        self.split.setChildrenCollapsible(False)
        self.split.setSizes([540, 240])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(status)
        layout.addWidget(self.split, 1)
        QShortcut(QKeySequence("Ctrl+W"), self, self.close)

    def _connect(self) -> None:
        r = self.runner
        self.choose_button.clicked.connect(self.choose_file)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        r.sample.connect(self._sample)
        r.segment.connect(lambda label, seg: self.diff.append(label, seg.text))
        r.progress.connect(self._progress)
        r.stage.connect(self.stage_label.setText)
        r.finished.connect(self._finished)
        r.failed.connect(lambda text: self._over(f"Comparison failed: {text}"))
        r.cancelled.connect(lambda: self._over("Comparison cancelled"))

    # -- inputs ----------------------------------------------------------------------------------
    def set_file(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        text = f"File: {self.path.name}" if self.path else "No file chosen"
        self.file_label.set_full_text(text, str(self.path or ""))
        self._sync_buttons()

    def set_choice(self, choice: ModelChoice) -> None:
        self.choice = choice
        self.models_label.setText(f"{choice.source_text()}: stock vs {choice.kv_text()}")

    def choose_file(self) -> None:
        start = str(self.path.parent) if self.path else self.settings.last_open_dir
        path, _ = QFileDialog.getOpenFileName(self, "Recording to compare", start, dialog_filter())
        if path:
            self.set_file(Path(path))

    def _sync_buttons(self) -> None:
        busy = self.runner.busy
        self.run_button.setEnabled(not busy and self.path is not None)
        self.choose_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.runner.busy or self.path is None:
            return
        self.report = None
        self.samples_seen = {"stock": 0, "mla": 0}
        self._kv_total = {}
        self._gpu = False
        self.kv_chart.clear()
        self.mem_chart.clear()
        self.mem_chart.set_title(RSS_TITLE)
        self.summary.clear()
        self.diff.clear()
        self.progress.setValue(0)
        self.stage_label.setText("Starting the comparison process…")
        self.runner.start(self.path, self.choice)
        self._sync_buttons()

    def cancel(self) -> None:
        self.runner.cancel()
        self.stage_label.setText("Cancelling…")

    def _sample(self, label: str, s: dict) -> None:
        self.samples_seen[label] = self.samples_seen.get(label, 0) + 1
        t = float(s.get("t") or 0.0)
        self.kv_chart.add(label, t, s.get("kv_self_bytes"))
        self._kv_total[label] = max(self._kv_total.get(label, 0), float(s.get("kv_bytes") or 0))
        gpu = s.get("torch_allocated_bytes")
        if gpu is not None and not self._gpu:
            self._gpu = True
            self.mem_chart.clear()
            self.mem_chart.set_title(GPU_TITLE)
            self.summary.set_memory_kind(True)
        self.mem_chart.add(label, t, gpu if self._gpu else s.get("rss_bytes"))
        if sum(self.samples_seen.values()) % 10 == 1:
            labels = ("stock", "mla")
            self.summary.live({k: self.kv_chart.peak(k) for k in labels}, {k: self._kv_total.get(k) for k in labels},
                              {k: self.mem_chart.peak(k) for k in labels})

    def _progress(self, label: str, fraction: float, eta) -> None:
        lo, hi = RUN_SPAN.get(label, (0.0, 1.0))
        self.progress.setValue(int(1000 * (lo + (hi - lo) * fraction)))
        name = "stock Whisper" if label == "stock" else "Whisper-MLA"
        self.stage_label.setText(f"Transcribing with {name}: {100 * fraction:.0f}%")

    def _finished(self, report: dict) -> None:
        self.report = report
        for label in ("stock", "mla"):
            run = report.get(label) or {}
            self.kv_chart.set_exact_peak(label, (run.get("kv_cache_peak_bytes") or {}).get("self"))
            memory_peak = run.get("peak_device_bytes") if self._gpu else run.get("peak_rss_bytes")
            self.mem_chart.set_exact_peak(label, memory_peak)
        self.kv_chart.redraw()
        self.mem_chart.redraw()
        self.summary.final(report)
        if report.get("mla"):
            self.diff.show_diff(report.get("word_diff") or [], report.get("wer_mla_vs_stock"))
        done = "Comparison finished" if report.get("complete") else "Comparison stopped early (partial results)"
        self._over(done)
        self.progress.setValue(1000 if report.get("complete") else self.progress.value())

    def _over(self, text: str) -> None:
        self.stage_label.setText(text)
        self._sync_buttons()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.save_state("compare_geometry", self.saveGeometry())
        if self.runner.busy:
            self.runner.cancel()
        self.runner.shutdown()
        event.accept()
