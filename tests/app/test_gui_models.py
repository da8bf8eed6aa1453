"""MLA from the GUI: convert a model in the background, use it in the queue, compare it with stock."""
from __future__ import annotations

from pathlib import Path

from gui_helpers import SHORT, wait_finished

from app.jobs.job import Status


def test_convert_in_background_then_transcribe_with_mla(qtbot, make_window, settings):
    w = make_window()
    panel = w.model_panel
    panel.cache.setCurrentIndex(panel.cache.findData("mla"))
    panel.preset.setCurrentIndex(0)  # 75%: nearly lossless with calibration
    assert w.controller.choice.kv_text() == "MLA 75%"
    with qtbot.waitSignal(w.conversion.finished, timeout=240_000) as done:
        panel.convert_button.click()
        assert w.task_row.isVisibleTo(w) and not panel.convert_button.isEnabled()
    folder = Path(done.args[0])
    assert (folder / "mla_config.json").is_file() and folder.parent == settings.models_dir
    assert "Converted" in w.task_row.label.text() and panel.convert_button.isEnabled() is False  # MLA folder chosen
    # the result is in the model list, selected, marked as MLA and remembered
    assert panel.source.currentData() == str(folder)
    assert panel.source.currentText().endswith("(MLA)")
    assert str(folder) in settings.custom_models
    [job] = w.add_paths([SHORT])
    wait_finished(qtbot, job)
    assert job.status is Status.DONE, job.error
    assert "wait no longer" in job.text.lower()
    assert "MLA" in job.model_label and "r=192" in job.model_label  # d=384 -> r = d/2 for 75%
    assert "(75.0%)" in w.memory_status.model.text()


def test_comparison_shows_both_runs_and_a_lower_mla_kv_peak(qtbot, settings, make_window):
    from app.compare.window import CompareWindow
    from app.model_choice import ModelChoice

    main = make_window()
    win = CompareWindow(settings, main)
    qtbot.addWidget(win)
    win.set_file(SHORT)
    win.set_choice(ModelChoice(kv_mode="mla", kv_reduction=0.75))
    with qtbot.waitSignal(win.runner.finished, timeout=240_000):
        win.run_button.click()
        assert win.cancel_button.isEnabled() and not win.run_button.isEnabled()
    report = win.report
    assert report["complete"]
    assert win.samples_seen["stock"] > 0 and win.samples_seen["mla"] > 0  # live samples from both runs
    stock_kv = report["stock"]["kv_cache_peak_bytes"]["self"]
    mla_kv = report["mla"]["kv_cache_peak_bytes"]["self"]
    assert 0 < mla_kv < stock_kv
    assert win.kv_chart.peak("mla") < win.kv_chart.peak("stock")  # the live curves agree
    assert "smaller" in win.summary.headline.text()
    assert win.summary.cells[("speed", "stock")].text().endswith("×")
    assert "wait no longer" in win.diff.views["mla"].toPlainText()
    assert win.run_button.isEnabled() and not win.cancel_button.isEnabled()
    win.close()
    assert not win.runner.worker.alive


def test_cache_picker_defaults_to_8bit_and_runs_the_exact_mode_when_chosen(qtbot, make_window):
    w = make_window()
    panel = w.model_panel
    modes = [panel.cache.itemData(i) for i in range(panel.cache.count())]
    assert modes == ["compressed", "exact", "stock", "mla"] and panel.cache.currentData() == "compressed"
    assert panel.cache.currentText() == "Compressed, 8-bit (default)"
    panel.cache.setCurrentIndex(panel.cache.findData("exact"))
    assert w.controller.choice.kv_cache == "exact"
    [job] = w.add_paths([SHORT])
    wait_finished(qtbot, job)
    assert job.status is Status.DONE, job.error
    assert job.model_label.endswith("compressed (exact)")
