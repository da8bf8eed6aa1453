"""Fine-tuning from the GUI: an MLA model learns from the queued recordings in the background."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from gui_helpers import DATA, SHORT, wait_finished

from app.jobs.job import Status


@pytest.fixture(scope="module")
def mla_folder(tmp_path_factory):
    """tiny.en at 87.5% (the reduction that needs fine-tuning), saved like a GUI conversion."""
    from engine.mla import convert_model, save_mla_model
    from engine.model_sources import resolve_model

    tiny = resolve_model(None)
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.875, source=tiny.info.source)
    return save_mla_model(model, cfg, tmp_path_factory.mktemp("models") / "tiny-mla875", tokenizer=tiny.tokenizer,
                          extra_files_from=tiny.folder, dtype=torch.float32)


def test_finetune_on_queued_recordings_adds_a_usable_model(qtbot, make_window, settings, mla_folder):
    w = make_window()
    panel = w.model_panel
    assert not panel.finetune_button.isVisibleTo(w)  # stock tiny.en: nothing to fine-tune
    panel.add_source(str(mla_folder))
    assert panel.finetune_button.isVisibleTo(w) and panel.finetune_button.isEnabled()
    w.controller.set_paused(True)  # the queue is only the training audio here
    clips = [DATA / "1089-134686-0000.flac", DATA / "2033-164914-0001.flac"]
    w.add_paths(clips + [clips[0]])
    assert w.queued_recordings() == clips  # queue order, no duplicates

    steps = {"steps": 3, "crops": 4, "batch_crops": 2, "micro_batch": 1, "holdout_fraction": 0.0,
             "conditioned": False, "eval_every": 100, "checkpoint_every": 2, "save_dtype": "float32"}
    fractions = []
    w.conversion.fraction.connect(fractions.append)
    with qtbot.waitSignal(w.conversion.finished, timeout=300_000) as done:
        w.start_finetune(str(mla_folder), clips, steps)
        assert w.task_row.isVisibleTo(w) and not panel.finetune_button.isEnabled()
    folder = Path(done.args[0])
    assert folder.parent == settings.models_dir and folder.name.startswith("tiny-mla875-tuned-")
    training = json.loads((folder / "mla_config.json").read_text())["training"]
    assert training["steps"] == 3
    assert fractions and fractions[-1] == pytest.approx(1.0)  # the bar went determinate and reached the end
    assert "Fine-tuned" in w.task_row.label.text() and "3 steps on 2 recordings" in w.task_row.label.text()
    # the result is selected in the model list and transcribes
    assert panel.source.currentData() == str(folder) and str(folder) in settings.custom_models
    w.controller.set_paused(False)
    [job] = w.add_paths([SHORT])
    wait_finished(qtbot, job)
    assert job.status is Status.DONE, job.error
    assert "MLA" in job.model_label and "r=96" in job.model_label
    assert job.text.strip()


def test_finetune_in_several_runs_adds_their_average(qtbot, make_window, settings, mla_folder):
    """A budget of several runs (what the dialog asks for from 10 minutes on): one model, their mean."""
    w = make_window()
    w.model_panel.add_source(str(mla_folder))
    clips = [DATA / "1089-134686-0000.flac", DATA / "2033-164914-0001.flac"]
    options = {"steps": 4, "runs": 2, "crops": 4, "batch_crops": 2, "micro_batch": 1, "holdout_fraction": 0.0,
               "conditioned": False, "eval_every": 100, "checkpoint_every": 2, "save_dtype": "float32"}
    events = []  # ("stage", text) and ("fraction", value), in the order the task row gets them
    w.conversion.stage.connect(lambda text: events.append(("stage", text)))
    w.conversion.fraction.connect(lambda value: events.append(("fraction", value)))
    with qtbot.waitSignal(w.conversion.finished, timeout=300_000) as done:
        w.start_finetune(str(mla_folder), clips, options)
    folder = Path(done.args[0])
    training = json.loads((folder / "mla_config.json").read_text())["training"]
    assert training["soup"]["runs"] == 2 and [m["steps"] for m in training["soup"]["members"]] == [2, 2]
    stages = [v for kind, v in events if kind == "stage"]
    assert any(s.startswith("Run 1/2:") for s in stages) and any(s.startswith("Run 2/2:") for s in stages)
    bar, text = {"Run 1/2": [], "Run 2/2": []}, ""
    for kind, value in events:  # the teacher's own bar comes first; training then fills one bar across both runs
        if kind == "stage":
            text = value
        elif text[:7] in bar:
            bar[text[:7]].append(value)
    first, second = bar["Run 1/2"], bar["Run 2/2"]
    assert first and second and first + second == sorted(first + second)
    assert first[-1] <= 0.5 + 1e-9 <= second[0] + 2e-9 and second[-1] == pytest.approx(1.0)
    assert "average of 2 runs, 4 steps on 2 recordings" in w.task_row.label.text()
    assert w.model_panel.source.currentData() == str(folder)  # selected, like a single run's result


def test_finetune_dialog_splits_twenty_minutes_into_four_runs(make_window, mla_folder, monkeypatch):
    from app import main_window

    w = make_window()
    w.controller.set_paused(True)
    w.add_paths([DATA / "1089-134686-0000.flac"])
    asked = {}
    monkeypatch.setattr(main_window.QInputDialog, "getInt", lambda *a, **k: (20, True))
    monkeypatch.setattr(w, "start_finetune", lambda model_dir, audio, options: asked.update(options))
    w.ask_finetune(str(mla_folder))
    assert asked == {"minutes": 20.0, "runs": 4}
