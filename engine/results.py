"""Plain result types shared by the transcriber, the exporters, the CLI and the app.

They are dataclasses (not dicts) so every consumer sees the same typed fields; `to_dict`
methods give the stable JSON shape documented in the README.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    """One word of a segment with its time (seconds from the start of the file) and confidence."""

    word: str  # with Whisper's leading space and attached punctuation, as in the segment's text
    start: float
    end: float
    probability: float  # mean probability of its tokens

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Word":
        return cls(str(d["word"]), float(d["start"]), float(d["end"]), float(d.get("probability", 0.0)))


@dataclass(frozen=True)
class Segment:
    """One timestamped stretch of transcript, as Whisper emitted it."""

    id: int
    start: float  # seconds from the start of the file
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: tuple[Word, ...] = ()  # with word timestamps on; else empty (and absent from the JSON)
    edited: bool = False  # the user corrected its text (engine.editing); tokens are then empty

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = list(self.tokens)
        if self.words:
            d["words"] = [asdict(w) for w in self.words]
        else:
            del d["words"]
        if not self.edited:
            del d["edited"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Segment":
        return cls(
            id=int(d["id"]),
            start=float(d["start"]),
            end=float(d["end"]),
            text=str(d["text"]),
            tokens=tuple(int(t) for t in d.get("tokens", ())),
            avg_logprob=float(d.get("avg_logprob", 0.0)),
            compression_ratio=float(d.get("compression_ratio", 0.0)),
            no_speech_prob=float(d.get("no_speech_prob", 0.0)),
            temperature=float(d.get("temperature", 0.0)),
            words=tuple(Word.from_dict(w) for w in d.get("words") or ()),
            edited=bool(d.get("edited", False)),
        )


@dataclass(frozen=True)
class Progress:
    """Where a transcription stands; sent at least once per 30 s window."""

    done_s: float  # audio seconds consumed so far
    total_s: float  # file duration in seconds (0 when unknown)
    elapsed_s: float  # wall seconds since the run started

    @property
    def fraction(self) -> float:
        if self.total_s <= 0:
            return 0.0
        return max(0.0, min(1.0, self.done_s / self.total_s))

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the speed so far; None before any audio is done."""
        if self.done_s <= 0 or self.total_s <= 0:
            return None
        rate = self.elapsed_s / self.done_s
        return max(0.0, (self.total_s - self.done_s) * rate)


@dataclass(frozen=True)
class KVCacheBytes:
    """Bytes held by decoder attention caches, summed from the cache tensors themselves."""

    self_attn: int = 0
    cross_attn: int = 0

    @property
    def total(self) -> int:
        return self.self_attn + self.cross_attn

    def max(self, other: "KVCacheBytes") -> "KVCacheBytes":
        return KVCacheBytes(max(self.self_attn, other.self_attn), max(self.cross_attn, other.cross_attn))

    def to_dict(self) -> dict[str, int]:
        return {"self": self.self_attn, "cross": self.cross_attn}


@dataclass(frozen=True)
class ModelInfo:
    """What produced a transcript: enough to reproduce the run."""

    source: str  # the spec the user gave, or "bundled:tiny.en"
    name: str  # human readable, e.g. "whisper tiny.en"
    multilingual: bool
    kv_mode: str = "stock"  # "stock" or an MLA description, e.g. "mla r=96 (87.5%)"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"source": self.source, "name": self.name, "multilingual": self.multilingual, "kv_mode": self.kv_mode}
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class RunStats:
    """How the run went; the JSON export's `stats` object."""

    wall_s: float
    audio_s: float
    peak_rss_bytes: int
    peak_device_bytes: int | None  # None without a GPU
    kv_cache_peak: KVCacheBytes = KVCacheBytes()
    device: str = "cpu"
    windows: int = 0

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per audio second (lower is faster)."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "audio_s": round(self.audio_s, 3),
            "rtf": round(self.rtf, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_device_bytes": self.peak_device_bytes,
            "kv_cache_peak_bytes": self.kv_cache_peak.to_dict(),
            "device": self.device,
            "windows": self.windows,
        }


@dataclass(frozen=True)
class TrackChoice:
    """The audio track (1-based) that was transcribed, of `tracks`, and why (engine.audio_tracks)."""

    track: int
    tracks: int
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track, "tracks": self.tracks, "why": self.why}


@dataclass
class Transcript:
    """A finished (or partial) transcription of one file."""

    file: str
    duration: float
    language: str | None
    model: ModelInfo
    segments: list[Segment]
    stats: RunStats | None = None
    language_probability: float | None = None  # of the detected language; None when given or English-only
    task: str = "transcribe"  # or "translate": the text is English, `language` is the speech's
    complete: bool = True  # False when cancelled or failed part-way
    # (start, end) seconds of speech the VAD found and no segment covers, even after decoding them
    # again on their own; None when the check did not run (off, cancelled, or no VAD installed)
    uncovered_speech: list[tuple[float, float]] | None = None
    audio_track: TrackChoice | None = None  # of a file with several audio tracks, else None

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            # a name with bytes that are not UTF-8 (kept as surrogates by Python) as \xNN: the JSON stays valid UTF-8
            "file": self.file.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
            "duration": round(self.duration, 3),
            "language": self.language,
            "language_probability": None if self.language_probability is None else round(self.language_probability, 4),
            "task": self.task,
            "model": self.model.to_dict(),
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
            "stats": self.stats.to_dict() if self.stats else None,
            "complete": self.complete,
            "uncovered_speech": None if self.uncovered_speech is None else
            [{"start": round(a, 3), "end": round(b, 3)} for a, b in self.uncovered_speech],
            "audio_track": self.audio_track.to_dict() if self.audio_track else None,
        }
