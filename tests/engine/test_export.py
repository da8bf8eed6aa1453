"""Exporters (TXT/SRT/VTT/JSON), the JSON reader, atomic writes and output-folder checks.

Transcripts are built by hand; no model is needed. SRT and VTT output is read back with
small strict parsers defined here.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import atomic, export
from engine.output_ledger import record
from engine.atomic import OutputDirError, atomic_write_bytes, atomic_write_text, check_writable_dir
from engine.export import FORMATS, format_timestamp, load_json, parse_formats, render, safe_stem
from engine.results import KVCacheBytes, ModelInfo, RunStats, Segment, Transcript

# --------------------------------------------------------------------------- helpers

MODEL = ModelInfo(
    source="bundled:tiny.en", name="whisper tiny.en", multilingual=False, kv_mode="mla r=96 (87.5%)",
    extra={"rank": 96},
)


def seg(i: int, start: float, end: float, text: str) -> Segment:
    return Segment(id=i, start=start, end=end, text=text)


def make(segments: list[Segment], *, file: str = "/recordings/talk.flac", duration: float = 50.0,
         stats: RunStats | None = None, language: str | None = "en", complete: bool = True) -> Transcript:
    return Transcript(file=file, duration=duration, language=language, model=MODEL, segments=segments,
                      stats=stats, complete=complete)


STATS = RunStats(
    wall_s=12.5, audio_s=50.0, peak_rss_bytes=734_003_200, peak_device_bytes=None,
    kv_cache_peak=KVCacheBytes(self_attn=1_048_576, cross_attn=3_145_728), device="cpu", windows=2,
)

SAMPLE = make(
    [
        seg(0, 0.0, 2.48, " And so, my fellow Americans,"),
        seg(1, 2.48, 6.0, " ask not what your country can do for you,"),
        seg(2, 6.0, 10.5, " ask what you can do for your country."),
    ],
    stats=STATS,
)

_TIME = r"(\d{{2,}}):([0-5]\d):([0-5]\d)[{sep}](\d{{3}})"


def _ms(h: str, m: str, s: str, f: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(f)


def parse_srt(text: str) -> list[tuple[int, int, str]]:
    """Strict SubRip reader: numbered from 1, one blank line between cues, newline at the end."""
    if text == "":
        return []
    assert text.endswith("\n") and not text.endswith("\n\n"), "SRT must end with exactly one newline"
    timing = re.compile(r"^" + _TIME.format(sep=",") + " --> " + _TIME.format(sep=",") + r"$")
    out = []
    for n, block in enumerate(text[:-1].split("\n\n"), start=1):
        lines = block.split("\n")
        assert len(lines) >= 3, f"cue {n} is incomplete: {block!r}"
        assert lines[0] == str(n), f"cue number {lines[0]!r}, expected {n}"
        m = timing.match(lines[1])
        assert m, f"bad timing line {lines[1]!r}"
        assert all(line.strip() for line in lines[2:]), "blank line inside cue text"
        out.append((_ms(*m.groups()[:4]), _ms(*m.groups()[4:]), "\n".join(lines[2:])))
    return out


def parse_vtt(text: str) -> list[tuple[int, int, str]]:
    """Strict WebVTT reader for what the exporter writes (no cue ids, settings or notes)."""
    assert text.startswith("WEBVTT\n"), "missing WEBVTT header"
    rest = text[len("WEBVTT\n"):]
    if rest == "":
        return []
    assert rest.startswith("\n") and rest.endswith("\n") and not rest.endswith("\n\n")
    timing = re.compile(r"^" + _TIME.format(sep=".") + " --> " + _TIME.format(sep=".") + r"$")
    out = []
    for block in rest[1:-1].split("\n\n"):
        lines = block.split("\n")
        m = timing.match(lines[0])
        assert m, f"bad timing line {lines[0]!r}"
        body = "\n".join(lines[1:])
        assert body and "-->" not in body and "<" not in body and re.search(r"&(?!amp;|lt;|gt;)", body) is None
        body = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        out.append((_ms(*m.groups()[:4]), _ms(*m.groups()[4:]), body))
    return out


def expected_cue_text(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(atomic.TEMP_PREFIX))


# --------------------------------------------------------------------------- SRT / VTT


def test_srt_exact_output() -> None:
    assert render(SAMPLE, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,480\nAnd so, my fellow Americans,\n"
        "\n"
        "2\n00:00:02,480 --> 00:00:06,000\nask not what your country can do for you,\n"
        "\n"
        "3\n00:00:06,000 --> 00:00:10,500\nask what you can do for your country.\n"
    )


def test_vtt_exact_output() -> None:
    assert render(SAMPLE, "vtt") == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:02.480\nAnd so, my fellow Americans,\n"
        "\n"
        "00:00:02.480 --> 00:00:06.000\nask not what your country can do for you,\n"
        "\n"
        "00:00:06.000 --> 00:00:10.500\nask what you can do for your country.\n"
    )


_cue_chars = st.one_of(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
    st.sampled_from(["\n", " ", "<", ">", "&", "-->", "&amp;", "<i>"]),
)


@st.composite
def well_formed_segments(draw: st.DrawFn) -> list[Segment]:
    """Ordered segments with end > start, times on whole milliseconds."""
    n = draw(st.integers(0, 12))
    t = draw(st.integers(0, 10_000_000))
    segments = []
    for i in range(n):
        start = t + draw(st.integers(0, 5_000))
        end = start + draw(st.integers(1, 30_000))
        text = draw(st.lists(_cue_chars, max_size=40).map("".join))
        segments.append(seg(i, start / 1000, end / 1000, text))
        t = start
    return segments


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed_segments())
def test_srt_and_vtt_parse_back_to_same_times_and_texts(segments: list[Segment]) -> None:
    t = make(segments, duration=max((s.end for s in segments), default=0.0) + 1.0)  # all inside the recording
    expected = [
        (round(s.start * 1000), round(s.end * 1000), expected_cue_text(s.text))
        for s in segments if expected_cue_text(s.text)
    ]
    assert parse_srt(render(t, "srt")) == expected
    assert parse_vtt(render(t, "vtt")) == expected


def test_no_cue_ends_after_the_recording() -> None:
    t = make([seg(0, 48.0, 52.5, "last words")], duration=50.0)  # Whisper's last timestamp past the end
    assert parse_srt(render(t, "srt")) == [(48000, 50000, "last words")]
    assert parse_vtt(render(t, "vtt")) == [(48000, 50000, "last words")]


def test_times_round_to_nearest_millisecond() -> None:
    t = make([seg(0, 1.2344, 1.2346, "a"), seg(1, 59.9996, 61.0, "b")])
    assert parse_srt(render(t, "srt")) == [(1234, 1235, "a"), (60000, 61000, "b")]


def test_hours_formatting() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(3_725_500) == "01:02:05,500"
    assert format_timestamp(3_725_500, ".") == "01:02:05.500"
    assert format_timestamp(99 * 3_600_000 + 3_599_999) == "99:59:59,999"
    assert format_timestamp(123 * 3_600_000 + 1) == "123:00:00,001"
    t = make([seg(0, 3725.5, 3727.25, "one hour in"), seg(1, 36_000.0, 36_001.0, "ten hours in")],
             duration=36_002.0)
    srt = render(t, "srt")
    assert "01:02:05,500 --> 01:02:07,250" in srt
    assert "10:00:00,000 --> 10:00:01,000" in srt
    assert "01:02:05.500 --> 01:02:07.250" in render(t, "vtt")
    assert parse_srt(srt) == [(3_725_500, 3_727_250, "one hour in"), (36_000_000, 36_001_000, "ten hours in")]


def test_end_not_after_start_and_backwards_starts_are_fixed() -> None:
    t = make([
        seg(0, 5.0, 5.0, "zero length"),
        seg(1, 6.0, 5.5, "end before start"),
        seg(2, 4.0, 7.0, "starts before previous"),
        seg(3, -1.0, float("nan"), "negative and NaN"),
    ])
    for parsed in (parse_srt(render(t, "srt")), parse_vtt(render(t, "vtt"))):
        assert [c[2] for c in parsed] == ["zero length", "end before start", "starts before previous",
                                          "negative and NaN"]
        starts = [c[0] for c in parsed]
        assert starts == sorted(starts), "cue starts must not go backwards"
        assert all(end > start for start, end, _ in parsed)
        assert parsed[0][:2] == (5000, 5001)
        assert parsed[1][:2] == (6000, 6001)
        assert parsed[2][:2] == (6000, 7000)


def test_empty_and_blank_segments_are_skipped_and_numbering_stays_dense() -> None:
    t = make([seg(0, 0, 1, "  "), seg(1, 1, 2, " first "), seg(2, 2, 3, ""), seg(3, 3, 4, "second\n\n  line2 ")])
    srt = render(t, "srt")
    assert parse_srt(srt) == [(1000, 2000, "first"), (3000, 4000, "second\nline2")]
    assert srt.startswith("1\n") and "\n2\n" in srt and "\n3\n" not in srt
    assert render(t, "txt") == "first\nsecond line2\n"


def test_vtt_escapes_markup_and_arrows() -> None:
    t = make([seg(0, 0, 1, "a <b> & c --> d")])
    vtt = render(t, "vtt")
    assert "a &lt;b&gt; &amp; c --&gt; d" in vtt
    assert parse_vtt(vtt) == [(0, 1000, "a <b> & c --> d")]


# --------------------------------------------------------------------------- TXT / JSON


def test_txt_one_stripped_segment_per_line() -> None:
    assert render(SAMPLE, "txt") == (
        "And so, my fellow Americans,\n"
        "ask not what your country can do for you,\n"
        "ask what you can do for your country.\n"
    )


def test_json_stable_key_set() -> None:
    d = json.loads(render(SAMPLE, "json"))
    assert set(d) == {"file", "duration", "language", "model", "text", "segments", "stats", "complete",
                      "uncovered_speech",  # issue 20: speech the transcript lacks (None: not checked)
                      "audio_track",  # issue 18: which of several audio tracks (None: the file has one)
                      "language_probability", "task"}  # issue 23: how sure the detection was; translated or not
    assert d["uncovered_speech"] is None and d["audio_track"] is None
    assert d["language_probability"] is None and d["task"] == "transcribe"
    assert d["file"] == "/recordings/talk.flac"
    assert d["duration"] == 50.0 and d["language"] == "en"
    assert d["model"] == {"source": "bundled:tiny.en", "name": "whisper tiny.en", "multilingual": False,
                          "kv_mode": "mla r=96 (87.5%)", "rank": 96}
    assert d["text"] == SAMPLE.text
    assert all({"start", "end", "text"} <= set(s) for s in d["segments"])
    assert [(s["start"], s["end"]) for s in d["segments"]] == [(0.0, 2.48), (2.48, 6.0), (6.0, 10.5)]
    assert {"wall_s", "rtf", "peak_rss_bytes", "peak_device_bytes", "kv_cache_peak_bytes"} <= set(d["stats"])
    assert d["stats"]["rtf"] == 0.25
    assert d["stats"]["kv_cache_peak_bytes"] == {"self": 1_048_576, "cross": 3_145_728}
    assert d["complete"] is True


def test_json_round_trip(tmp_path: Path) -> None:
    full = Transcript(
        file="/recordings/talk.flac", duration=50.0, language="en", model=MODEL,
        segments=[Segment(id=0, start=0.0, end=2.48, text=" Hi", tokens=(50257, 123, 456), avg_logprob=-0.25,
                          compression_ratio=1.5, no_speech_prob=0.01, temperature=0.2)],
        stats=RunStats(12.5, 50.0, 1000, 2048, KVCacheBytes(10, 20), "cuda:0", 2),
    )
    for t in (SAMPLE, full, make([], stats=None, language=None, complete=False)):
        (path,) = export.export(t, tmp_path, "json")
        back = load_json(path)
        assert back == t
        assert render(back, "json") == path.read_text(encoding="utf-8")


def test_load_json_without_duration_recovers_audio_seconds_from_rtf(tmp_path: Path) -> None:
    t = make([], duration=0.0, stats=RunStats(3.0, 12.0, 1, None))
    (path,) = export.export(t, tmp_path, "json")
    assert load_json(path).stats.audio_s == pytest.approx(12.0)


def test_load_json_rejects_other_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a Whisper-MLA transcript"):
        load_json(p)
    p.write_text('{"segments": [{"start": 0}]}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid"):
        load_json(p)


# --------------------------------------------------------------------------- unicode / empty


UNICODE = make([
    seg(0, 0.0, 1.0, " 我们选择登月。"),
    seg(1, 1.0, 2.0, " Ça coûte 5 € — naïve façade 🎙️"),
    seg(2, 2.0, 3.0, " مرحبا بالعالم"),
], file="/录音/采访 2026.wav", language="zh")


def test_unicode_text_in_every_format(tmp_path: Path) -> None:
    paths = export.export(UNICODE, tmp_path, FORMATS)
    assert [p.name for p in paths] == [f"采访 2026.{f}" for f in FORMATS]
    texts = ["我们选择登月。", "Ça coûte 5 € — naïve façade 🎙️", "مرحبا بالعالم"]
    contents = {p.suffix: p.read_bytes().decode("utf-8") for p in paths}
    assert contents[".txt"].splitlines() == texts
    assert [c[2] for c in parse_srt(contents[".srt"])] == texts
    assert [c[2] for c in parse_vtt(contents[".vtt"])] == texts
    assert "我们选择登月" in contents[".json"]  # ensure_ascii=False: stored as is, not \u escapes
    assert load_json(paths[-1]) == UNICODE


def test_empty_transcript(tmp_path: Path) -> None:
    t = make([], duration=0.0)
    assert render(t, "txt") == ""
    assert render(t, "srt") == ""
    assert render(t, "vtt") == "WEBVTT\n"
    d = json.loads(render(t, "json"))
    assert d["segments"] == [] and d["text"] == "" and d["stats"] is None
    paths = export.export(t, tmp_path / "out", "txt,srt,vtt,json")
    assert [p.name for p in paths] == ["talk.txt", "talk.srt", "talk.vtt", "talk.json"]
    assert all(p.is_file() for p in paths)
    assert parse_srt(paths[1].read_text(encoding="utf-8")) == []
    assert parse_vtt(paths[2].read_text(encoding="utf-8")) == []


# --------------------------------------------------------------------------- export / names


def test_export_names_and_return_value(tmp_path: Path) -> None:
    paths = export.export(SAMPLE, tmp_path / "new" / "dir", ["srt", "TXT"])
    assert paths == [tmp_path / "new" / "dir" / "talk.srt", tmp_path / "new" / "dir" / "talk.txt"]
    assert paths[0].read_text(encoding="utf-8") == render(SAMPLE, "srt")
    assert paths[1].read_bytes() == render(SAMPLE, "txt").encode("utf-8")  # no newline translation
    assert export.export(SAMPLE, tmp_path, "vtt", stem="custom name")[0] == tmp_path / "custom name.vtt"
    windows_file = make([], file="C:\\Users\\me\\Music\\interview.final.m4a")
    assert export.export(windows_file, tmp_path, "txt")[0].name == "interview.final.txt"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("stem", [
    "../../evil", "..", ".", "/etc/passwd", "..\\..\\evil", "a/../../b", "nul\x00byte", "\x00", "",
    "sub/dir/name", "C:\\Windows\\evil", " ..  ", "con", "a\u202etxt.exe",
])
def test_stem_can_never_escape_out_dir(tmp_path: Path, stem: str) -> None:
    out = tmp_path / "out"
    (path,) = export.export(SAMPLE, out, "txt", stem=stem)
    assert path.parent == out
    assert path.resolve().parent == out.resolve()
    name = path.name
    assert "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == [name]


@given(st.text(max_size=300))
def test_safe_stem_is_always_one_plain_component(name: str) -> None:
    s = safe_stem(name)
    assert s and s == s.strip(" .")
    assert not set(s) & set('/\\\x00<>:"|?*')
    assert ".." not in s
    assert len(s.encode("utf-8")) <= 200
    assert Path(s).name == s and len(Path(s).parts) == 1


def test_stem_from_audio_file_is_sanitised(tmp_path: Path) -> None:
    for file in ["", "/", "..", "/a/b/..", "/a/b/.hidden.wav"]:
        (path,) = export.export(make([], file=file), tmp_path, "txt")
        assert path.parent == tmp_path and ".." not in path.name
    assert (tmp_path / "transcript.txt").exists()
    assert (tmp_path / "hidden.txt").exists()


# --------------------------------------------------------------------------- parse_formats


def test_parse_formats() -> None:
    assert parse_formats("txt,srt") == ("txt", "srt")
    assert parse_formats(" SRT , .vtt,srt,, json ") == ("srt", "vtt", "json")
    assert parse_formats(["json", "txt"]) == ("json", "txt")
    assert parse_formats(",".join(FORMATS)) == FORMATS


@pytest.mark.parametrize("spec, named", [
    ("txt,docx", "'docx'"), ("pdf", "'pdf'"), ("txt, Word ,srt", "'Word'"), (["srt", "ass"], "'ass'"),
])
def test_parse_formats_names_the_bad_format(spec: object, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)) as info:
        parse_formats(spec)  # type: ignore[arg-type]
    assert "txt, srt, vtt, json" in str(info.value)


@pytest.mark.parametrize("spec", ["", " , ,", []])
def test_parse_formats_rejects_nothing(spec: object) -> None:
    with pytest.raises(ValueError, match="no output format"):
        parse_formats(spec)  # type: ignore[arg-type]


def test_render_and_export_reject_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'docx'"):
        render(SAMPLE, "docx")
    with pytest.raises(ValueError, match="'docx'"):
        export.export(SAMPLE, tmp_path, "txt,docx")
    assert list(tmp_path.iterdir()) == []  # formats are checked before anything is written


# --------------------------------------------------------------------------- atomicity


def test_atomic_write_replaces_and_returns_path(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    assert atomic_write_text(p, "one\n") == p
    assert atomic_write_text(p, "two\r\nzwei\n") == p
    assert p.read_bytes() == b"two\r\nzwei\n"
    assert atomic_write_bytes(p, b"\x00\xff") == p and p.read_bytes() == b"\x00\xff"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_atomic_write_permissions(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    atomic_write_text(p, "x")
    assert p.stat().st_mode & 0o777 == 0o644  # not the 0600 of a temp file
    os.chmod(p, 0o640)
    atomic_write_text(p, "y")
    assert p.stat().st_mode & 0o777 == 0o640


class Crash(Exception):
    pass


def _boom(*_args: object, **_kwargs: object) -> None:
    raise Crash("simulated crash")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_crash_mid_write_keeps_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                target: str) -> None:
    p = tmp_path / "talk.srt"
    p.write_text("previous content\n", encoding="utf-8")
    monkeypatch.setattr(atomic.os, target, _boom)
    with pytest.raises(Crash):
        atomic_write_text(p, "new content that must not appear\n" * 1000)
    monkeypatch.undo()
    assert p.read_text(encoding="utf-8") == "previous content\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["talk.srt"]


def test_crash_during_data_write_keeps_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "talk.txt"
    p.write_bytes(b"old")
    real = atomic.tempfile.NamedTemporaryFile

    def half_writing(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        fh = real(*args, **kwargs)

        class Half:
            name = fh.name

            def __enter__(self):  # type: ignore[no-untyped-def]
                fh.__enter__()
                return self

            def __exit__(self, *exc):  # type: ignore[no-untyped-def]
                return fh.__exit__(*exc)

            def write(self, data: bytes) -> None:
                fh.write(data[: len(data) // 2])
                fh.flush()
                raise KeyboardInterrupt  # even BaseException cleans up

        return Half()

    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", half_writing)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(p, b"x" * 10_000)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["talk.txt"]


def test_export_crash_on_second_format_leaves_old_file_intact(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "talk.srt").write_text("old srt\n", encoding="utf-8")
    record([tmp_path / "talk.srt"])  # an earlier export's file: ours to replace
    real_replace = os.replace
    calls: list[str] = []

    def replace_once(src: str, dst: str) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_once)
    with pytest.raises(OSError, match="No space left"):
        export.export(SAMPLE, tmp_path, "txt,srt,vtt")
    monkeypatch.undo()
    assert (tmp_path / "talk.txt").read_text(encoding="utf-8") == render(SAMPLE, "txt")
    assert (tmp_path / "talk.srt").read_text(encoding="utf-8") == "old srt\n"
    assert not (tmp_path / "talk.vtt").exists()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- check_writable_dir


def test_check_writable_dir_creates_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    check_writable_dir(target)
    assert target.is_dir()
    assert list(target.iterdir()) == []  # the probe file is cleaned up
    check_writable_dir(target)  # existing folder is fine too


def test_check_writable_dir_path_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file", encoding="utf-8")
    with pytest.raises(OutputDirError) as info:
        check_writable_dir(blocker / "sub")
    assert isinstance(info.value, OSError)
    assert "Cannot create output folder" in str(info.value)
    assert str(blocker / "sub") in str(info.value)
    assert info.value.path == blocker / "sub"
    assert blocker.read_text(encoding="utf-8") == "I am a file"


def test_check_writable_dir_path_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OSError, match="not a folder"):
        check_writable_dir(blocker)


def test_check_writable_dir_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Running as root, permissions do not stop writes; simulate a folder that refuses new files.
    def refuse(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OutputDirError, match="Cannot write to output folder .*Permission denied"):
        check_writable_dir(tmp_path)
