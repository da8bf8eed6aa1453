"""Settings and window geometry survive a restart; keyboard shortcuts and accessibility."""
from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtGui import QKeySequence

from app.model_choice import ModelChoice
from app.settings import AppSettings


def test_settings_persist_across_a_restart(qtbot, make_window, settings, tmp_path):
    w1 = make_window()
    assert w1.width() == 1200 and w1.height() == 780  # the default size on first start
    w1.show()
    panel = w1.model_panel
    panel.cache.setCurrentIndex(panel.cache.findData("mla"))
    panel.preset.setCurrentIndex(1)  # 87.5%
    panel.exact_cross.setChecked(True)
    panel.beam.setValue(4)
    assert panel.word_timestamps.isChecked()  # on by default: it costs 4-11% of a CPU run
    panel.word_timestamps.setChecked(False)
    panel.language.setEditText("de")
    panel.add_source(str(tmp_path / "my-model"))  # a folder the user picked
    w1.output_folder.set_output_dir(tmp_path / "elsewhere")
    w1.resize(760, 590)  # fits the offscreen platform's 800x600 screen, which restoreGeometry clamps to
    qtbot.waitUntil(lambda: w1.width() == 760)
    size = (w1.width(), w1.height())  # the height may be raised to the layout's minimum
    w1.main_split.setSizes([320, 400])
    left = w1.main_split.sizes()[0]
    expected = panel.choice()
    assert expected == ModelChoice(source=str(tmp_path / "my-model"), kv_mode="mla", kv_reduction=0.875,
                                   exact_cross=True, beam_size=4, language="de", word_timestamps=False)
    w1.close()

    fresh = AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat))  # as after a restart
    w2 = make_window(settings=fresh)
    w2.show()
    assert w2.model_panel.choice() == expected
    assert w2.controller.choice == expected
    assert w2.output_folder.output_dir == tmp_path / "elsewhere"
    assert w2.controller.output_dir == tmp_path / "elsewhere"
    assert (w2.width(), w2.height()) == size
    assert w2.main_split.sizes()[0] == left
    assert w2.model_panel.source.findData(str(tmp_path / "my-model")) >= 0


def test_shortcuts_and_accessible_names(make_window):
    w = make_window()
    shortcuts = {a.shortcut().toString() for a in w.actions()}
    for key in ("Ctrl+O", "Ctrl+E", "Ctrl+F", "Ctrl+Shift+C", "Ctrl+Q"):
        assert QKeySequence(key).toString() in shortcuts, key
    for widget in (w.drop_zone, w.job_panel.table, w.transcript.search, w.transcript.browser,
                   w.model_panel.source, w.model_panel.cache, w.export_bar.all_button, w.memory_status):
        assert widget.accessibleName(), widget
    w.find_action.trigger()
    assert w.transcript.search.hasFocus() or not w.isActiveWindow()


def test_status_bar_is_honest_about_the_gpu(qtbot, make_window, shared_worker):
    w = make_window()
    if not shared_worker.info:
        shared_worker.start()
        qtbot.waitUntil(lambda: bool(shared_worker.info), timeout=60_000)
    w._hello(shared_worker.info)
    text = w.memory_status.gpu.full_text()
    if shared_worker.info["gpu"].get("available"):
        assert text.startswith("GPU memory (")
    else:
        assert text.endswith("showing process memory and KV-cache bytes")
        assert "GPU memory:" in text


def test_status_messages_are_not_hidden_by_the_memory_readout(qtbot, make_window):
    """Issue 22: 'Added 3 files' and 'Wrote talk.srt' used to be drawn under the memory readout."""
    w = make_window()
    w.resize(800, 500)
    w.show()
    qtbot.waitExposed(w)
    bar = w.statusBar()
    assert not bar.isAncestorOf(w.memory_status)  # its own strip, above the status bar
    assert w.memory_status.isVisible()
    w.add_paths([])  # nothing added: the app says so in the status bar
    message = bar.currentMessage()
    assert message == "No new audio or video files found there"
    # the whole message fits in the bar (nothing permanent takes its room) and is painted
    assert bar.fontMetrics().horizontalAdvance(message) < bar.width() - 20
    from PySide6.QtCore import QPoint

    strip_bottom = w.memory_status.mapTo(w, QPoint(0, w.memory_status.height())).y()
    assert strip_bottom <= bar.mapTo(w, QPoint(0, 0)).y()  # the strip sits above the bar, not over it
    image = bar.grab().toImage()
    colours = {image.pixel(x, image.height() // 2) for x in range(0, min(image.width(), 300), 2)}
    assert len(colours) > 2  # text drawn, not an empty bar
