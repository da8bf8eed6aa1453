"""Model settings: which Whisper, stock or MLA cache, KV reduction, cross-attention, device, beam, language, task."""
from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QInputDialog,
                               QLabel, QPushButton, QSpinBox, QVBoxLayout)

from app import languages
from app.model_choice import BUNDLED_MODELS, ModelChoice, is_english_only, is_mla_folder

BUNDLED_LABELS = {"tiny.en": "Whisper tiny.en (bundled)", "base": "Whisper base, multilingual (bundled)"}
PRESETS = ((0.75, "75% smaller (r = d/2)"), (0.875, "87.5% smaller (r = d/4)"), (None, "Custom rank"))
DEVICES = (("auto", "Auto (GPU if available)"), ("cpu", "CPU"), ("cuda", "NVIDIA GPU (CUDA)"))
TASKS = (("transcribe", "Transcribe"), ("translate", "Translate to English"))
ENGLISH_ONLY_TIP = ("{model} is English-only: it cannot translate. Choose the multilingual "
                    "\"Whisper base\" (bundled) to translate other languages into English")
MLA_HINT = ("Whisper-MLA caches one small latent per token instead of full keys and values. "
            "75% is close to stock accuracy; 87.5% saves more and benefits from fine-tuning.")


class ModelPanel(QGroupBox):
    changed = Signal(object)  # ModelChoice
    convertRequested = Signal(object)  # ModelChoice to convert and save
    finetuneRequested = Signal(str)  # the MLA folder to fine-tune on the user's recordings
    customModelsChanged = Signal(list)

    def __init__(self, choice: ModelChoice, custom: list[str], parent=None) -> None:
        super().__init__("Model", parent)
        self._loading = True
        self._busy = False
        self._custom: list[str] = list(custom)
        self.source = QComboBox()
        self.source.setAccessibleName("Model")

        self.add_folder = QPushButton("Folder…")
        self.add_folder.setToolTip("Use a local model folder (Hugging Face, CTranslate2 or Whisper-MLA)")
        self.add_folder.setAccessibleName("Add model folder")
        self.add_hub = QPushButton("Hub id…")
        self.add_hub.setToolTip("Use a Hugging Face hub model, e.g. openai/whisper-small (downloads once)")
        self.add_hub.setAccessibleName("Add hub model")
        self.cache = QComboBox()
        self.cache.addItem("Compressed, 8-bit (default)", "compressed")
        self.cache.addItem("Compressed, exact", "exact")
        self.cache.addItem("Stock Whisper (full KV cache)", "stock")
        self.cache.addItem("Whisper-MLA, smaller (converted)", "mla")
        self.cache.setItemData(0, "An eighth of stock's self-attention cache and no cross-attention cache, made "
                                  "from the model's own weights when it loads; it moves the model's next-word "
                                  "probabilities 17x less than running stock Whisper in 16 bits does", Qt.ItemDataRole.ToolTipRole)
        self.cache.setItemData(1, "Half the self-attention cache and no cross-attention cache: the same "
                                  "transcript as stock Whisper", Qt.ItemDataRole.ToolTipRole)
        self.cache.setItemData(3, "A deeper latent (75% or 87.5% smaller self-attention cache) made by a "
                                  "calibrated conversion: saves more, may change some words",
                               Qt.ItemDataRole.ToolTipRole)
        self.cache.setAccessibleName("KV cache mode")
        self.preset = QComboBox()
        for value, text in PRESETS:
            self.preset.addItem(text, value)
        self.preset.setAccessibleName("KV reduction")
        self.rank = QSpinBox()
        self.rank.setRange(1, 2560)
        self.rank.setValue(96)
        self.rank.setPrefix("r = ")
        self.rank.setAccessibleName("Custom latent rank")
        self.exact_cross = QCheckBox("Exact cross-attention")
        self.exact_cross.setToolTip("No cross-attention K/V cache: attend over the encoder output directly. "
                                    "Exact, and the biggest cache for 30 s windows disappears")
        self.device = QComboBox()
        for value, text in DEVICES:
            self.device.addItem(text, value)
        self.device.setAccessibleName("Device")
        self.beam = QSpinBox()
        self.beam.setRange(1, 10)
        self.beam.setAccessibleName("Beam size")
        self.beam.setToolTip("5 = beam search (default, as faster-whisper and openai-whisper); "
                             "1 = greedy: about half the time on a CPU, less accurate")
        self.word_timestamps = QCheckBox("Word timings")
        self.word_timestamps.setToolTip("Time every word from the model's own attention (exports can then cut "
                                        "subtitles per word); the words themselves do not change")
        self.language = QComboBox()
        self.language.setEditable(True)
        self.language.addItem("Auto-detect", None)
        for code in languages.picker_order():
            self.language.addItem(languages.label(code), code)
        self.language.setAccessibleName("Language")
        self.language.setToolTip("The language spoken in the recording; Auto-detect lets a multilingual model "
                                 "find it (each job then shows what it found and how sure it is)")
        self.task = QComboBox()
        for value, text in TASKS:
            self.task.addItem(text, value)
        self.task.setAccessibleName("Task")
        for combo in (self.source, self.cache, self.preset, self.device, self.language, self.task):
            # narrow sidebars elide the closed combo; the popup still shows full names
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.hint = QLabel(MLA_HINT)
        self.hint.setWordWrap(True)
        self.hint.setEnabled(False)
        self.convert_button = QPushButton("Convert to MLA")
        self.convert_button.setToolTip("Convert the selected model with these MLA settings into a model folder "
                                       "that appears in the model list")
        self.convert_button.setAccessibleName("Convert model to MLA")
        self.finetune_button = QPushButton("Fine-tune on my recordings…")
        self.finetune_button.setToolTip("Recover the accuracy a converted model lost: it learns to match stock "
                                        "Whisper on the recordings in your queue (no transcripts needed). "
                                        "The result appears in the model list")
        self.finetune_button.setAccessibleName("Fine-tune the MLA model on my recordings")

        sources = QHBoxLayout()
        sources.addWidget(self.add_folder)
        sources.addWidget(self.add_hub)
        sources.addStretch(1)
        reduction = QHBoxLayout()
        reduction.addWidget(self.preset, 1)
        reduction.addWidget(self.rank)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Whisper:", self.source)
        form.addRow("", sources)
        form.addRow("KV cache:", self.cache)
        form.addRow("Reduction:", reduction)
        form.addRow("", self.exact_cross)
        form.addRow("Device:", self.device)
        form.addRow("Beam size:", self.beam)
        form.addRow("", self.word_timestamps)
        form.addRow("Language:", self.language)
        form.addRow("Task:", self.task)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addWidget(self.convert_button)
        layout.addWidget(self.finetune_button)

        self._fill_sources(choice.source)
        self.set_choice(choice)
        for sig in (self.source.currentIndexChanged, self.cache.currentIndexChanged, self.preset.currentIndexChanged,
                    self.rank.valueChanged, self.exact_cross.toggled, self.device.currentIndexChanged,
                    self.beam.valueChanged, self.language.currentTextChanged, self.word_timestamps.toggled,
                    self.task.currentIndexChanged):
            sig.connect(self._emit)
        self.add_folder.clicked.connect(self._choose_folder)
        self.add_hub.clicked.connect(self._choose_hub)
        self.convert_button.clicked.connect(lambda: self.convertRequested.emit(self.choice()))
        self.finetune_button.clicked.connect(lambda: self.finetuneRequested.emit(self.source.currentData() or ""))
        self._loading = False
        self._sync_enabled()

    # -- sources ---------------------------------------------------------------------------------
    def _fill_sources(self, current: str) -> None:
        self.source.blockSignals(True)
        self.source.clear()
        for name in BUNDLED_MODELS:
            self.source.addItem(BUNDLED_LABELS.get(name, name), name)
        specs = list(self._custom)
        if current and current not in BUNDLED_MODELS and current not in specs:
            specs.insert(0, current)
        for spec in specs:
            label = ModelChoice(source=spec).source_text() + ("  (MLA)" if is_mla_folder(spec) else "")
            self.source.addItem(label, spec)
            self.source.setItemData(self.source.count() - 1, spec, Qt.ItemDataRole.ToolTipRole)
        idx = self.source.findData(current)
        self.source.setCurrentIndex(max(0, idx))
        self.source.blockSignals(False)

    def add_source(self, spec: str, select: bool = True) -> None:
        """Add a model folder or hub id to the list (and remember it)."""
        self._custom = [spec] + [s for s in self._custom if s != spec]
        current = spec if select else self.choice().source
        self._fill_sources(current)
        self.customModelsChanged.emit(list(self._custom))
        self._emit()

    def set_bundled_available(self, bundled: dict[str, bool]) -> None:
        """Grey out bundled models whose packages are not installed (told by the worker)."""
        for i in range(self.source.count()):
            name = self.source.itemData(i)
            if name in bundled and not bundled[name]:
                item = self.source.model().item(i)
                if item is not None:
                    item.setEnabled(False)
                    item.setToolTip("Not installed: pip install 'whisper-mla[base]'")

    def set_gpu_available(self, available: bool, reason: str) -> None:
        """Grey out the CUDA choice when the worker found no usable NVIDIA GPU (Auto then means CPU)."""
        i = self.device.findData("cuda")
        item = self.device.model().item(i) if i >= 0 else None
        if item is not None:
            item.setEnabled(available)
            item.setToolTip("" if available else f"Not available here: {reason}")

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Whisper model folder")
        if path:
            self.add_source(path)

    def _choose_hub(self) -> None:
        text, ok = QInputDialog.getText(self, "Hugging Face model", "Hub id (e.g. openai/whisper-small):")
        if ok and text.strip():
            self.add_source(text.strip())

    # -- choice ----------------------------------------------------------------------------------
    def choice(self) -> ModelChoice:
        preset = self.preset.currentData()
        text = self.language.currentText().strip()
        idx = self.language.findText(text)
        lang = self.language.itemData(idx) if idx >= 0 else languages.code_for(text)
        return ModelChoice(
            source=self.source.currentData() or "tiny.en",
            kv_mode=self.cache.currentData(),
            kv_reduction=preset if preset is not None else None,
            rank=None if preset is not None else self.rank.value(),
            exact_cross=self.exact_cross.isChecked(),
            device=self.device.currentData(),
            beam_size=self.beam.value(),
            language=lang,
            task=self.task.currentData(),
            word_timestamps=self.word_timestamps.isChecked(),
        )

    def set_choice(self, c: ModelChoice) -> None:
        loading, self._loading = self._loading, True
        idx = self.source.findData(c.source)
        if idx < 0:
            self._fill_sources(c.source)
            idx = self.source.findData(c.source)
        self.source.setCurrentIndex(max(0, idx))
        self.cache.setCurrentIndex(max(0, self.cache.findData(c.kv_mode)))
        if c.rank:
            self.preset.setCurrentIndex(len(PRESETS) - 1)
            self.rank.setValue(c.rank)
        else:
            match = [i for i, (v, _t) in enumerate(PRESETS) if v is not None and abs(v - (c.kv_reduction or 0)) < 1e-6]
            self.preset.setCurrentIndex(match[0] if match else 1)
        self.exact_cross.setChecked(c.exact_cross)
        self.device.setCurrentIndex(max(0, self.device.findData(c.device)))
        self.beam.setValue(c.beam_size)
        self.word_timestamps.setChecked(c.word_timestamps)
        self.task.setCurrentIndex(max(0, self.task.findData(c.task)))
        li = self.language.findData(c.language) if c.language else 0
        if li >= 0:
            self.language.setCurrentIndex(li)
        else:
            self.language.setEditText(c.language or "")
        self._loading = loading
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        folder_is_mla = is_mla_folder(self.source.currentData() or "")
        mla = self.cache.currentData() == "mla" and not folder_is_mla
        self.cache.setEnabled(not folder_is_mla)
        if folder_is_mla:
            self.cache.setToolTip("This folder is already a Whisper-MLA model")
        self.preset.setEnabled(mla)
        self.rank.setEnabled(mla and self.preset.currentData() is None)
        self.rank.setVisible(self.preset.currentData() is None)
        self.exact_cross.setEnabled(mla)
        source = self.source.currentData() or ""
        english_only = is_english_only(source)
        self.task.setEnabled(not english_only)
        if english_only and self.task.currentIndex() != 0:
            self.task.blockSignals(True)  # shows what will run; _emit reports the choice once
            self.task.setCurrentIndex(0)
            self.task.blockSignals(False)
        self.task.setToolTip(ENGLISH_ONLY_TIP.format(model=self.source.currentText()) if english_only else
                             "Translate: English text of speech in any language Whisper knows")
        self.convert_button.setEnabled(not folder_is_mla and not self._busy)
        self.finetune_button.setEnabled(folder_is_mla and not self._busy)
        self.finetune_button.setVisible(folder_is_mla)

    def set_converting(self, busy: bool) -> None:
        self._busy = busy
        self._sync_enabled()

    def _emit(self, *_args) -> None:
        self._sync_enabled()
        if not self._loading:
            self.changed.emit(self.choice())

    def compare_choice(self) -> ModelChoice:
        """What the comparison runs against stock: the current cache mode, or the default when stock is chosen."""
        c = self.choice()
        return replace(c, kv_mode="compressed") if c.kv_mode == "stock" else c
