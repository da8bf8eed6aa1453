"""The memory strip under the panels: device, model, and the worker's memory right now (RSS, KV cache, GPU).

It is not in the status bar: that stays free for messages.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel

from app import formatting as fmt
from app.model_choice import ModelChoice
from app.widgets.elided_label import ElidedLabel

NO_GPU = "GPU memory: {reason}; showing process memory and KV-cache bytes"


def gpu_text(gpu: dict | None, sample: dict | None) -> str:
    """The honest GPU caption: a number when the driver gives one, otherwise why not."""
    gpu = gpu or {}
    if not gpu.get("available"):
        return NO_GPU.format(reason=gpu.get("reason") or "no NVIDIA GPU found")
    name = gpu.get("name") or "GPU"
    sample = sample or {}
    used = sample.get("process_device_bytes") or sample.get("torch_reserved_bytes")
    total = sample.get("device_total_bytes")
    if used is None:
        return f"GPU memory ({name}): not in use"
    return f"GPU memory ({name}): {fmt.nbytes(used)}" + (f" of {fmt.nbytes(total)}" if total else "")


class MemoryStatus(QFrame):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.device = QLabel("Device: starting…")
        self.model = QLabel("Model: —")
        self.rss = QLabel("RSS: —")
        self.kv = QLabel("KV cache: —")
        self.gpu = ElidedLabel("GPU memory: checking…", Qt.TextElideMode.ElideRight)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        for i, w in enumerate((self.device, self.model, self.rss, self.kv, self.gpu)):
            if i:
                sep = QFrame()
                sep.setFrameShape(QFrame.Shape.VLine)
                sep.setFrameShadow(QFrame.Shadow.Sunken)
                layout.addWidget(sep)
            layout.addWidget(w, 1 if w is self.gpu else 0)
        self.rss.setToolTip("Resident memory of the transcription process (model, audio, activations)")
        self.kv.setToolTip("Bytes held right now by the decoder's key/value cache, read from the cache tensors")
        self.setAccessibleName("Memory status")
        self._gpu: dict | None = None
        self._kv_peak = 0

    def set_choice(self, choice: ModelChoice) -> None:
        self.model.setText(f"Model: {choice.label()}")

    def set_loaded(self, label: str, device: str) -> None:
        self.model.setText(f"Model: {label}")
        self.device.setText(f"Device: {device.upper() if device == 'cpu' else device}")

    def set_gpu(self, gpu: dict) -> None:
        self._gpu = gpu
        self.gpu.set_full_text(gpu_text(gpu, None))
        if self.device.text().endswith("starting…"):
            self.device.setText("Device: " + (gpu.get("name") or "GPU" if gpu.get("available") else "CPU"))

    def set_sample(self, sample: dict) -> None:
        self.rss.setText(f"RSS: {fmt.nbytes(sample.get('rss_bytes'))}")
        kv = int(sample.get("kv_bytes") or 0)
        self._kv_peak = max(self._kv_peak, kv)
        self.kv.setText(f"KV cache: {fmt.nbytes(kv)} (peak {fmt.nbytes(self._kv_peak)})")
        self.gpu.set_full_text(gpu_text(self._gpu, sample))
