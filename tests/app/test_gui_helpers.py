"""Helpers without Qt: human strings, the model choice record, file discovery."""
from __future__ import annotations

from pathlib import Path

from app import formatting as fmt
from app.audio_files import dialog_filter, expand, is_media
from app.model_choice import ModelChoice


def test_durations_and_bytes():
    assert fmt.duration(0) == "0:00"
    assert fmt.duration(59.6) == "1:00"
    assert fmt.duration(3725) == "1:02:05"
    assert fmt.duration(None) == "—"
    assert fmt.timestamp(62.34) == "1:02.3"
    assert fmt.timestamp(3600) == "1:00:00.0"
    assert fmt.nbytes(512) == "512 B"
    assert fmt.nbytes(1_500_000) == "1.50 MB"
    assert fmt.nbytes(25_300_000) == "25.3 MB"
    assert fmt.nbytes(3.2e9) == "3.20 GB"
    assert fmt.percent(0.875, 1) == "87.5%"


def test_model_choice_round_trip_and_keys():
    c = ModelChoice(source="tiny.en", kv_mode="mla", kv_reduction=0.875, beam_size=3, language="en")
    assert ModelChoice.from_dict(c.to_dict()) == c
    assert c.kv_text() == "MLA 87.5%"
    assert ModelChoice(kv_mode="mla", rank=64, exact_cross=True).kv_text() == "MLA r=64 + exact cross"
    assert ModelChoice().kv_text() == "compressed (8-bit)"  # the default mode (issue 21)
    assert ModelChoice(kv_mode="exact").kv_text() == "compressed (exact)"
    assert ModelChoice(kv_mode="exact").kv_cache == "exact" and ModelChoice().kv_cache == "compressed"
    assert ModelChoice(kv_mode="exact").model_key() != ModelChoice().model_key()  # a different loaded model
    assert ModelChoice(kv_mode="stock").kv_text() == "stock"
    # beam size and language do not change the loaded weights; the KV mode does
    assert c.model_key() == ModelChoice(source="tiny.en", kv_mode="mla", kv_reduction=0.875).model_key()
    assert c.model_key() != ModelChoice(source="tiny.en").model_key()
    assert c.conversion_name() != ModelChoice(source="tiny.en", kv_mode="mla", kv_reduction=0.75).conversion_name()
    # garbage from an old settings file falls back to defaults instead of crashing
    assert ModelChoice.from_dict({"kv_mode": "weird", "beam_size": 2}) == ModelChoice()
    assert ModelChoice.from_dict({"beam_size": "x"}) == ModelChoice()
    assert ModelChoice.from_dict(None) == ModelChoice()
    assert ModelChoice(source="/models/my-whisper/").source_text() == "my-whisper"
    assert ModelChoice(source="openai/whisper-small").source_text() == "openai/whisper-small"


def test_a_saved_mla_folder_is_labelled_mla_before_it_loads(tmp_path):
    folder = tmp_path / "tiny-mla875"
    folder.mkdir()
    assert ModelChoice(source=str(folder), kv_mode="stock").label() == "tiny-mla875 · stock"  # plain folder
    assert ModelChoice(source=str(folder)).label() == "tiny-mla875 · compressed (8-bit)"  # the default mode
    (folder / "mla_config.json").write_text("{}")
    assert ModelChoice(source=str(folder)).label() == "tiny-mla875 · MLA (folder)"



def test_expand_recurses_folders_for_media_only(tmp_path: Path, data_dir: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp3", "a/b/two.MKV", "a/b/notes.txt", "a/.hidden.wav", "three.flac"):
        (tmp_path / name).write_bytes(b"x")
    found = expand([tmp_path / "a", tmp_path / "three.flac", tmp_path / "three.flac"])
    assert [p.name for p in found] == ["one.mp3", "two.MKV", "three.flac"]
    assert is_media(Path("x.OPUS")) and not is_media(Path("x.txt"))
    assert len(expand([data_dir])) == 5  # 4 flac + 1 wav; the .txt references are skipped
    assert expand([tmp_path / "gone.wav"]) == []  # a drop never queues a file that is not there
    assert "*.flac" in dialog_filter() and "*.mkv" in dialog_filter()


def test_gui_process_never_imports_torch_and_worker_never_imports_qt():
    """The layering rule: torch lives only in the worker process, Qt only in the GUI process."""
    import subprocess
    import sys

    from gui_helpers import REPO

    code = ("import sys, app.main_window, app.compare.window, app.self_test; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "import app.worker.process as p; p._handlers(); import app.worker.memory_feed; "
            "print('ok')")
    gui = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert gui.returncode == 0 and "ok" in gui.stdout, gui.stderr
    code = ("import sys, app.worker.process as p; p._handlers(); import app.worker.memory_feed; "
            "assert not any(m.startswith('PySide6') for m in sys.modules); print('ok')")
    worker = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0 and "ok" in worker.stdout, worker.stderr


def test_default_beam_mirrors_the_engine():
    import app.model_choice as mc
    from engine.transcribe import DEFAULT_BEAM

    assert mc.DEFAULT_BEAM == DEFAULT_BEAM == ModelChoice().beam_size == 5
