"""Nothing the user owns is destroyed (issue 18): model folders, exports and recordings."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.atomic import OutputDirError, replace_dir
from engine.export import export
from engine.mla.storage import MLA_CONFIG, WEIGHTS, check_model_out
from engine.output_ledger import OverwriteRefused, ledger_path
from engine.results import ModelInfo, Segment, Transcript
from tests.engine.test_cli import run_cli


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "stuff"
    (folder / "photos").mkdir(parents=True)
    (folder / "letter.odt").write_bytes(b"my letter")
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    return folder


def fake_model_folder(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MLA_CONFIG, WEIGHTS, "config.json"):
        (folder / name).write_text(tag)
    return folder


@pytest.mark.parametrize("command", [
    ["convert", "--kv-reduction", "0.75"],
    ["finetune", "--model", "whatever", "--audio", "x.flac", "--minutes", "1"],
])
def test_model_out_into_a_users_folder_is_refused_before_any_work(tmp_path, command):
    folder = users_folder(tmp_path)
    before = tree_hash(folder)
    out = run_cli(*command, "--out", str(folder), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"error: {folder}: the folder is not empty and is not a Whisper-MLA model folder" in out.stderr
    assert "Traceback" not in out.stderr
    assert tree_hash(folder) == before


def test_model_out_into_a_file_is_refused(tmp_path):
    f = tmp_path / "model"
    f.write_text("a file")
    with pytest.raises(OutputDirError, match="not a folder"):
        check_model_out(f)
    assert f.read_text() == "a file"


def test_an_empty_or_new_folder_and_an_old_model_folder_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    check_model_out(tmp_path / "empty")
    check_model_out(tmp_path / "new")
    check_model_out(fake_model_folder(tmp_path / "old", "old"))


def test_replacing_a_model_folder_swaps_whole_folders(tmp_path):
    old = fake_model_folder(tmp_path / "model", "old")
    new = fake_model_folder(tmp_path / ".model.tmp", "new")
    replace_dir(new, old, lambda p: (p / MLA_CONFIG).is_file(), "model folder")
    assert (old / WEIGHTS).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old one and the temp are gone


def test_replace_dir_rechecks_a_folder_that_became_the_users(tmp_path):
    final = tmp_path / "model"
    new = fake_model_folder(tmp_path / ".model.tmp", "new")
    users = users_folder(tmp_path)
    users.rename(final)  # appeared while the new model was being written
    with pytest.raises(OutputDirError):
        replace_dir(new, final, lambda p: (p / MLA_CONFIG).is_file(), "model folder")
    assert (final / "letter.odt").read_bytes() == b"my letter"
    assert (new / WEIGHTS).read_text() == "new"  # the caller removes its own temp folder


def transcript_of(audio: Path) -> Transcript:
    return Transcript(str(audio), 2.0, "en", ModelInfo(source="t", name="t", multilingual=False),
                      [Segment(0, 0.0, 1.0, " Hello there.")])


def test_exports_replace_only_their_own_unchanged_files(tmp_path):
    audio = tmp_path / "talk.flac"
    audio.write_bytes(b"audio")
    out = tmp_path / "out"
    first = export(transcript_of(audio), out, "txt,srt")
    assert sorted(p.name for p in out.iterdir()) == ["talk.srt", "talk.txt"]  # nothing of ours beside them
    assert {str(p.absolute()) for p in first} <= json.loads(ledger_path().read_text()).keys()
    assert export(transcript_of(audio), out, "txt,srt") == first  # a rerun replaces what it wrote
    (out / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nHello there, corrected by hand.\n")
    edited = (out / "talk.srt").read_bytes()
    with pytest.raises(OverwriteRefused, match="talk.srt exists and was not written by whisper-mla"):
        export(transcript_of(audio), out, "txt,srt")
    assert (out / "talk.srt").read_bytes() == edited
    export(transcript_of(audio), out, "txt,srt", overwrite=True)
    assert b"corrected" not in (out / "talk.srt").read_bytes()


def test_a_users_file_of_the_export_name_is_kept(tmp_path):
    (tmp_path / "talk.json").write_text('{"mine": true}')
    with pytest.raises(OverwriteRefused):
        export(transcript_of(tmp_path / "talk.flac"), tmp_path, "json")
    assert (tmp_path / "talk.json").read_text() == '{"mine": true}'


def test_the_recording_itself_is_never_replaced_even_with_overwrite(tmp_path):
    audio = tmp_path / "talk.txt"  # a recording whose name is that of its own TXT export
    audio.write_bytes(b"audio bytes")
    with pytest.raises(OverwriteRefused, match="is the recording being transcribed"):
        export(transcript_of(audio), tmp_path, "txt", overwrite=True)
    assert audio.read_bytes() == b"audio bytes"


def test_cli_keeps_a_recording_named_like_its_export_and_still_does_the_others(tiny, sample_path, tmp_path):
    clash = tmp_path / "interview.txt"
    clash.write_bytes(sample_path.read_bytes())  # FFmpeg reads it by content; its TXT export is itself
    good = tmp_path / "good.flac"
    good.write_bytes(sample_path.read_bytes())
    before = hashlib.sha256(clash.read_bytes()).hexdigest()
    out = run_cli("transcribe", str(clash), str(good), "--format", "txt", "--out", str(tmp_path), "-q",
                  "--overwrite", cwd=tmp_path)
    assert out.returncode == 1
    assert f"error: {clash}: not transcribed: {clash} is the recording being transcribed" in out.stderr
    assert "Traceback" not in out.stderr
    assert hashlib.sha256(clash.read_bytes()).hexdigest() == before
    assert "ask not what your country" in (tmp_path / "good.txt").read_text()
