"""Transcript writers: plain text, SubRip (SRT), WebVTT and JSON, plus a JSON reader.

All writes go through `engine.atomic`, so an interrupted export never leaves a truncated
file behind. Output names are derived from the audio file's stem and sanitised so that
they can never point outside the chosen output folder.
"""
from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path, PurePath
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.atomic import atomic_write_text
from engine.output_ledger import check_replaceable, record
from engine.results import KVCacheBytes, ModelInfo, RunStats, Segment, TrackChoice, Transcript, Word

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("txt", "srt", "vtt", "json")

MIN_CUE_MS = 1  # a cue whose end is not after its start is stretched to this length
DEFAULT_STEM = "transcript"
_MAX_STEM_BYTES = 200  # leaves room for ".json" (and a temp prefix) under the usual 255-byte limit

_MODEL_KEYS = ("source", "name", "multilingual", "kv_mode")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


class Cue(NamedTuple):
    """One subtitle cue in whole milliseconds; `timed` (karaoke VTT) the start of each word after the first."""

    start_ms: int
    end_ms: int
    text: str
    timed: tuple[tuple[int, str], ...] = ()


CUE_LEVELS: tuple[str, ...] = ("segment", "word", "karaoke")


@dataclass(frozen=True)
class CueOptions:
    """How SRT and VTT cues are cut: per segment (Whisper's), per word, or per segment with each
    word's time tagged (karaoke VTT; SRT has no such tags and gets segment cues); and, for segment
    cues, at most `max_chars` characters and `max_seconds` seconds per cue, cut between words."""

    level: str = "segment"
    max_chars: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.level not in CUE_LEVELS:
            raise ValueError(f"unknown cue level {self.level!r} (choose from {', '.join(CUE_LEVELS)})")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError("max_seconds must be positive")


# --------------------------------------------------------------------------- formats


def parse_formats(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Turn "txt,srt" (or an iterable of names) into a de-duplicated tuple of known formats.

    Case, surrounding spaces and a leading dot are ignored. Raises ValueError naming any
    unknown format, or when no format is given.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    bad: list[str] = []
    for raw in parts:
        name = str(raw).strip().lower().lstrip(".")
        if not name:
            continue
        if name not in FORMATS:
            bad.append(str(raw).strip())
        elif name not in out:
            out.append(name)
    if bad:
        noun = "format" if len(bad) == 1 else "formats"
        raise ValueError(
            f"unknown output {noun}: {', '.join(repr(b) for b in bad)} (choose from {', '.join(FORMATS)})"
        )
    if not out:
        raise ValueError(f"no output format given (choose from {', '.join(FORMATS)})")
    return tuple(out)


# --------------------------------------------------------------------------- timing


def _to_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded to nearest; negatives and NaN become 0."""
    if not seconds > 0:  # also catches NaN
        return 0
    if seconds == float("inf"):
        raise ValueError("segment time is infinite")
    return int(round(seconds * 1000))


def format_timestamp(ms: int, decimal_marker: str = ",") -> str:
    """`HH:MM:SS,mmm` (SRT) or, with decimal_marker=".", `HH:MM:SS.mmm` (VTT); hours grow past 99."""
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cue_text(text: str) -> str:
    """Strip a segment's text and drop blank lines, which would end a cue early."""
    lines = (line.strip() for line in text.strip().splitlines())
    return "\n".join(line for line in lines if line)


def _segment_words(seg: Segment) -> list[Word]:
    """The segment's timed words, or (without word timestamps) its words with times spread by
    characters over the segment: enough to cut a long cue between words."""
    if seg.words:
        return list(seg.words)
    parts = seg.text.split()
    total = sum(len(p) for p in parts) or 1
    out, t, span = [], seg.start, max(0.0, seg.end - seg.start)
    for p in parts:
        d = span * len(p) / total
        out.append(Word(" " + p, t, t + d, 1.0))
        t += d
    return out


def _split(words: list[Word], max_chars: int | None, max_seconds: float | None) -> list[list[Word]]:
    """Consecutive runs of `words`, each within the limits where a single word allows, as even in
    length as that many runs can be (no one-word orphan after a full line)."""
    runs = _split_greedy(words, max_chars, max_seconds)
    if max_chars is None or len(runs) < 2:
        return runs
    total = len(" ".join(w.word.strip() for w in words))
    even = _split_greedy(words, min(max_chars, -(-total // len(runs)) + 2), max_seconds)
    return even if len(even) == len(runs) else runs


def _split_greedy(words: list[Word], max_chars: int | None, max_seconds: float | None) -> list[list[Word]]:
    runs: list[list[Word]] = []
    for w in words:
        if runs:
            run = runs[-1]
            chars = len(" ".join(x.word.strip() for x in run + [w]))
            too_long = max_chars is not None and chars > max_chars
            too_slow = max_seconds is not None and w.end - run[0].start > max_seconds
            if not (too_long or too_slow):
                run.append(w)
                continue
        runs.append([w])
    return runs


def _pieces(seg: Segment, options: CueOptions) -> list[tuple[float, float, str, tuple[Word, ...]]]:
    """(start, end, text, words) of the cues one segment gives."""
    text = _cue_text(seg.text)
    if options.level == "word":
        return [(w.start, w.end, w.word.strip(), (w,)) for w in seg.words if w.word.strip()] or [
            (seg.start, seg.end, text, ())]
    if options.max_chars is None and options.max_seconds is None:
        return [(seg.start, seg.end, text, seg.words)]
    if len(text) <= (options.max_chars or len(text)) and seg.end - seg.start <= (options.max_seconds or float("inf")):
        return [(seg.start, seg.end, text, seg.words)]
    runs = _split(_segment_words(seg), options.max_chars, options.max_seconds)
    out = []
    for k, run in enumerate(runs):
        start = seg.start if k == 0 else run[0].start
        end = seg.end if k == len(runs) - 1 else runs[k + 1][0].start
        out.append((start, end, " ".join(w.word.strip() for w in run), tuple(run) if seg.words else ()))
    return out


def cues(transcript: Transcript, options: CueOptions | None = None) -> list[Cue]:
    """Subtitle cues for the non-empty segments, in order.

    Start times never go backwards (a start earlier than the previous cue's start is moved
    up to it), every cue ends at least MIN_CUE_MS after it starts, and no cue ends after the
    recording does.
    """
    options = options or CueOptions()
    limit = _to_ms(transcript.duration) if transcript.duration > 0 else None
    out: list[Cue] = []
    prev_start = 0
    for seg in transcript.segments:
        if not _cue_text(seg.text):
            continue
        for start_s, end_s, text, words in _pieces(seg, options):
            if not text:
                continue
            start = max(_to_ms(start_s), prev_start)
            end = _to_ms(end_s)
            if limit is not None and start < limit:
                end = min(end, limit)
            end = max(end, start + MIN_CUE_MS)
            timed: tuple[tuple[int, str], ...] = ()
            if options.level == "karaoke" and len(words) > 1:
                timed = _karaoke_tags(words, start, end)
            out.append(Cue(start, end, text, timed))
            prev_start = start
    return out


def _karaoke_tags(words: tuple[Word, ...], start: int, end: int) -> tuple[tuple[int, str], ...]:
    """(ms, word) for every word: the first at the cue start, then each strictly later than the one
    before and strictly inside the cue, as WebVTT's timestamp tags must be."""
    tags = [(start, words[0].word.strip())]
    for w in words[1:]:
        t = min(max(_to_ms(w.start), tags[-1][0] + 1), end - 1)
        if t <= tags[-1][0]:  # no room left inside the cue: the word joins the one before
            tags[-1] = (tags[-1][0], f"{tags[-1][1]} {w.word.strip()}")
        else:
            tags.append((t, w.word.strip()))
    return tuple(tags)


# --------------------------------------------------------------------------- renderers


def render_txt(transcript: Transcript) -> str:
    """One stripped segment per line; empty segments are skipped."""
    lines = [" ".join(seg.text.split()) for seg in transcript.segments]
    lines = [line for line in lines if line]
    return "\n".join(lines) + "\n" if lines else ""


def render_srt(transcript: Transcript, options: CueOptions | None = None) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each cue."""
    if options is not None and options.level == "karaoke":
        options = CueOptions("segment", options.max_chars, options.max_seconds)
    blocks = [
        f"{i}\n{format_timestamp(c.start_ms, ',')} --> {format_timestamp(c.end_ms, ',')}\n{c.text}\n"
        for i, c in enumerate(cues(transcript, options), start=1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    # '&' and '<' must be escaped in WebVTT cue text; escaping '>' also rules out a stray "-->".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_vtt(transcript: Transcript, options: CueOptions | None = None) -> str:
    """WebVTT: `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues with escaped text
    (karaoke: `<HH:MM:SS.mmm>` before each word after the first)."""
    parts = ["WEBVTT\n"]
    for c in cues(transcript, options):
        text = _vtt_escape(c.text)
        if c.timed:
            text = " ".join([_vtt_escape(c.timed[0][1])] + [
                f"<{format_timestamp(ms, '.')}>{_vtt_escape(w)}" for ms, w in c.timed[1:]])
        parts.append(f"{format_timestamp(c.start_ms, '.')} --> {format_timestamp(c.end_ms, '.')}\n{text}\n")
    return "\n".join(parts)


def render_json(transcript: Transcript) -> str:
    """The transcript's stable JSON shape (`Transcript.to_dict`), pretty-printed, UTF-8 as is."""
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"


_RENDERERS = {"txt": render_txt, "srt": render_srt, "vtt": render_vtt, "json": render_json}


def render(transcript: Transcript, fmt: str, cue_options: CueOptions | None = None) -> str:
    """Render `transcript` in one of FORMATS (SRT and VTT cut by `cue_options`); raises ValueError
    for an unknown format."""
    name = str(fmt).strip().lower().lstrip(".")
    if name not in _RENDERERS:
        raise ValueError(f"unknown output format: {fmt!r} (choose from {', '.join(FORMATS)})")
    if name in ("srt", "vtt"):
        return _RENDERERS[name](transcript, cue_options)
    return _RENDERERS[name](transcript)


# --------------------------------------------------------------------------- file names


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


_BIDI_CONTROLS = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
_UNSAFE_CHARS = frozenset('/\\<>:"|?*') | frozenset(chr(c) for c in _BIDI_CONTROLS)


def _is_unsafe_char(ch: str) -> bool:
    """Separators, characters Windows forbids, control characters (NUL included), bidi overrides."""
    return ch in _UNSAFE_CHARS or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")  # Cs: a byte not UTF-8


def safe_stem(name: str) -> str:
    """A file-name stem that is a single, harmless path component on every platform.

    Path separators, NUL/control characters and characters Windows forbids become "_";
    runs of dots collapse to one (so no ".."); leading/trailing dots and spaces go; Windows
    device names get a "_" prefix; an empty result becomes DEFAULT_STEM.
    """
    name = unicodedata.normalize("NFC", str(name))
    name = "".join("_" if _is_unsafe_char(ch) else ch for ch in name)
    name = re.sub(r"\.{2,}", ".", name)
    name = name.strip(" .")
    name = _truncate_utf8(name, _MAX_STEM_BYTES).rstrip(" .")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name or DEFAULT_STEM


def stem_for(audio_file: str) -> str:
    """The audio file's name without folder or last extension, accepting / and \\ as separators."""
    base = re.split(r"[\\/]", str(audio_file))[-1]
    return PurePath(base).stem if base not in ("", ".", "..") else ""


def unique_stem(audio_file: str | os.PathLike[str], taken: Collection[str]) -> str:
    """The audio file's safe stem, with " (2)", " (3)", ... added while another file already has it.

    Two recordings of the same name from different folders, written to one output folder,
    must not overwrite each other's transcripts.
    """
    base = safe_stem(stem_for(str(audio_file)))
    stem, n = base, 2
    while stem in taken:
        stem, n = f"{base} ({n})", n + 1
    return stem


# --------------------------------------------------------------------------- export / import


def export_paths(out_dir: str | os.PathLike[str], formats: str | Iterable[str], stem: str) -> list[Path]:
    """Where `export` writes: `<out_dir>/<safe stem>.<fmt>` per format."""
    directory = Path(out_dir)
    name = safe_stem(stem)
    paths = [directory / f"{name}.{fmt}" for fmt in parse_formats(formats)]
    for path in paths:  # belt and braces: safe_stem already makes escaping impossible
        if path.parent != directory or path.name in (".", ".."):
            raise ValueError(f"refusing to write outside {directory}: {path}")
    return paths


def export(
    transcript: Transcript,
    out_dir: str | os.PathLike[str],
    formats: str | Iterable[str],
    stem: str | None = None,
    *,
    overwrite: bool = False,
    cue_options: CueOptions | None = None,
) -> list[Path]:
    """Write `transcript` into `out_dir` once per format, atomically; return the written paths.

    The file name is `<stem>.<fmt>`, where `stem` defaults to the audio file's stem and is
    always passed through `safe_stem`. `out_dir` is created if missing. Everything is
    rendered and checked before the first write, so an error writes nothing. A file that
    exists is replaced only when an earlier export wrote it and it is unchanged, or with
    `overwrite`; the recording itself never (`engine.output_ledger`, raises `OverwriteRefused`).
    """
    fmts = parse_formats(formats)
    paths = export_paths(out_dir, fmts, stem_for(transcript.file) if stem is None else stem)
    rendered = [render(transcript, fmt, cue_options) for fmt in fmts]
    check_replaceable(paths, inputs=[transcript.file], overwrite=overwrite)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, rendered):
        atomic_write_text(path, text)
    record(paths)
    log.info("exported %s to %s", ", ".join(p.name for p in paths), paths[0].parent)
    return paths


def _model_from_dict(d: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        source=str(d.get("source", "")),
        name=str(d.get("name", "")),
        multilingual=bool(d.get("multilingual", False)),
        kv_mode=str(d.get("kv_mode", "stock")),
        extra={k: v for k, v in d.items() if k not in _MODEL_KEYS},
    )


def _stats_from_dict(d: dict[str, Any], duration: float) -> RunStats:
    wall_s = float(d.get("wall_s", 0.0))
    # The JSON keeps rtf, not audio_s: prefer an explicit audio_s, then the file duration,
    # then undo the real-time factor.
    if "audio_s" in d:
        audio_s = float(d["audio_s"])
    elif duration > 0:
        audio_s = duration
    else:
        rtf = float(d.get("rtf", 0.0) or 0.0)
        audio_s = wall_s / rtf if rtf > 0 else 0.0
    kv = d.get("kv_cache_peak_bytes") or {}
    device_bytes = d.get("peak_device_bytes")
    return RunStats(
        wall_s=wall_s,
        audio_s=audio_s,
        peak_rss_bytes=int(d.get("peak_rss_bytes", 0)),
        peak_device_bytes=None if device_bytes is None else int(device_bytes),
        kv_cache_peak=KVCacheBytes(int(kv.get("self", 0)), int(kv.get("cross", 0))),
        device=str(d.get("device", "cpu")),
        windows=int(d.get("windows", 0)),
    )


def transcript_from_dict(d: dict[str, Any]) -> Transcript:
    """Rebuild a Transcript from the `Transcript.to_dict` shape (unknown keys are ignored)."""
    duration = float(d.get("duration", 0.0))
    stats = d.get("stats")
    return Transcript(
        file=str(d.get("file", "")),
        duration=duration,
        language=d.get("language"),
        language_probability=None if d.get("language_probability") is None else float(d["language_probability"]),
        task="translate" if d.get("task") == "translate" else "transcribe",
        model=_model_from_dict(d.get("model") or {}),
        segments=[Segment.from_dict(s) for s in d.get("segments", [])],
        stats=_stats_from_dict(stats, duration) if stats else None,
        complete=bool(d.get("complete", True)),
        uncovered_speech=None if not isinstance(d.get("uncovered_speech"), list) else
        [(float(g["start"]), float(g["end"])) for g in d["uncovered_speech"]],
        audio_track=_track_from_dict(d.get("audio_track")),
    )


def _track_from_dict(d: Any) -> TrackChoice | None:
    if not isinstance(d, dict):
        return None
    return TrackChoice(int(d.get("track", 1)), int(d.get("tracks", 1)), str(d.get("why", "")))


def load_json(path: str | os.PathLike[str]) -> Transcript:
    """Read a transcript written by the JSON exporter. Raises ValueError for a malformed file."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "segments" not in data:
        raise ValueError(f"{path} is not a Whisper-MLA transcript JSON file")
    try:
        return transcript_from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid Whisper-MLA transcript JSON file: {exc}") from exc
