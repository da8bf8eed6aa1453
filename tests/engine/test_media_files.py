"""Which paths count as recordings, for the app and every command line."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.export import unique_stem
from engine.media_files import MediaInputError, expand, is_media, recordings


def test_expand_walks_folders_for_media_and_keeps_named_files(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".cache").mkdir()
    for name in ("a/one.mp3", "a/b/two.MKV", "a/b/notes.txt", "a/.hidden.wav", "a/.cache/x.flac", "three.flac"):
        (tmp_path / name).write_bytes(b"x")
    found = expand([tmp_path / "a", tmp_path / "three.flac", tmp_path / "a" / "one.mp3", tmp_path / "gone.wav"])
    # folder contents sorted, hidden skipped; a file named twice appears once; a missing file is
    # kept so the command reports it by name
    assert [p.name for p in found] == ["one.mp3", "two.MKV", "three.flac", "gone.wav"]
    assert is_media(Path("x.OPUS")) and not is_media(Path("x.txt"))


def test_a_folder_without_media_is_an_error_only_when_asked(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    assert expand([tmp_path / "docs"]) == []
    with pytest.raises(MediaInputError, match="docs: no audio or video files in this folder"):
        expand([tmp_path / "docs"], require_media=True)
    (tmp_path / "a.flac").write_bytes(b"x")
    assert recordings([tmp_path / "a.flac"]) == [tmp_path / "a.flac"]
    with pytest.raises(MediaInputError, match="gone.wav: audio file not found"):
        recordings([tmp_path / "a.flac", tmp_path / "gone.wav"])


def test_unique_stem_numbers_repeated_names():
    taken: list[str] = []
    for path in ("day1/talk.flac", "day2/talk.mp3", "x/talk.wav", "other.flac"):
        taken.append(unique_stem(path, taken))
    assert taken == ["talk", "talk (2)", "talk (3)", "other"]
