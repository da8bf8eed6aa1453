"""kill -9 while a model folder is written: the folder is complete or absent, never half-loadable,
and the next run cleans up what the killed one left."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.atomic import TEMP_PREFIX, sweep_abandoned, temp_dir_beside
from engine.mla.storage import is_mla_dir

REPO = Path(__file__).resolve().parents[2]


def _convert(out: Path, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "convert", "--kv-reduction", "0.75", "--init", "svd",
                             "--out", str(out)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def _loads(out: Path) -> None:
    from engine.mla.storage import load_mla_model

    model, cfg = load_mla_model(out)
    assert cfg.ranks and model.model.decoder.layers[0].self_attn.rank == 192


def test_kill_9_at_any_moment_of_convert_leaves_a_complete_folder_or_none(tmp_path):
    out = tmp_path / "tiny-mla"
    t0 = time.perf_counter()
    proc = _convert(out, tmp_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    full = time.perf_counter() - t0
    _loads(out)
    first = (out / "model.safetensors").stat().st_ino
    # kill the next conversions into the same folder at moments spread over a whole run, the last
    # ones inside the final write (weights being saved, folders being swapped)
    for frac in (0.3, 0.6, 0.85, 0.93, 0.97):
        proc = _convert(out, tmp_path)
        time.sleep(frac * full)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # what a reader sees under the final name is always a whole model: the old one or the new one
        assert is_mla_dir(out), f"killed at {frac:.0%}: {sorted(os.listdir(tmp_path))}"
        _loads(out)
        # and nothing half-written is visible under a name a user would pick
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["tiny-mla"]
    proc = _convert(out, tmp_path)  # the next run cleans up after the killed ones and completes
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    _loads(out)
    assert _leftovers(tmp_path) == [] and (out / "model.safetensors").stat().st_ino != first


def test_a_half_built_folder_of_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    final = tmp_path / "model"
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                              "from engine.atomic import temp_dir_beside; d = temp_dir_beside(sys.argv[2]);"
                              "(d / 'model.safetensors').write_bytes(b'half'); print(d, flush=True); time.sleep(60)",
                              str(REPO), str(final)], stdout=subprocess.PIPE, text=True)
    half = Path(child.stdout.readline().strip())
    assert half.is_dir() and half.name.startswith(TEMP_PREFIX + "model.new.")
    sweep_abandoned(final)
    assert half.is_dir()  # its writer is still at work
    child.send_signal(signal.SIGKILL)
    child.wait()
    mine = temp_dir_beside(final)  # sweeps first
    assert not half.exists() and mine.is_dir()
    shutil.rmtree(mine)


def test_the_old_folder_set_aside_when_a_swap_was_killed_is_put_back(tmp_path):
    # replace_dir renames the old folder aside, then the new one in; a kill between the two
    # renames leaves the final name empty and the old model under a hidden name
    final = tmp_path / "model"
    aside = tmp_path / f"{TEMP_PREFIX}model.old.abc123"
    aside.mkdir()
    (aside / "weights").write_bytes(b"the user's old model")
    sweep_abandoned(final)
    assert (final / "weights").read_bytes() == b"the user's old model" and not aside.exists()
