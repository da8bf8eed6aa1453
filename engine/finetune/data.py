"""Training material: crops of the user's audio (label-free) and audio + transcript pairs (supervised).

Why crops and not fixed 30 s windows: a few minutes of audio give only a handful of 30 s
windows, and the earlier experiments (docs/DESIGN.md section 4) overfit them within a few
hundred steps. Random start offsets and random lengths (short crops are zero-padded to 30 s,
as a short file or the last window of a long one is at transcription time) turn the same
minutes into many different windows and transcripts. A slice at the end of the longest
files is held aside, never cropped for training, so early stopping measures something the
student has not seen.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 30.0
AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv")


class LabelledFolderError(ValueError):
    """A labelled folder whose audio and transcripts do not pair up; the message names the files."""


@dataclass(frozen=True)
class Crop:
    """One training or held-out window: a stretch of one file, optionally perturbed.

    `speed` resamples (1.0 = unchanged), `noise_snr_db` adds white noise at that SNR
    (None = none), `gain_db` scales the samples. `key` identifies the crop's content for the
    teacher cache (audio content hash + placement + perturbation).
    """

    audio_id: str  # content hash of the source file
    name: str  # file name, for logs
    start_s: float
    length_s: float
    speed: float = 1.0
    noise_snr_db: float | None = None
    gain_db: float = 0.0
    seed: int = 0
    held_out: bool = False

    @property
    def key(self) -> str:
        spec = f"{self.audio_id}:{self.start_s:.3f}:{self.length_s:.3f}:{self.speed:.4f}:{self.noise_snr_db}:" \
               f"{self.gain_db:.2f}:{self.seed}"
        return hashlib.sha256(spec.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Augment:
    """Perturbations applied to a fraction of the training crops (never to held-out ones)."""

    probability: float = 0.0  # share of crops that get a perturbation
    speed: tuple[float, float] = (0.9, 1.1)
    noise_snr_db: tuple[float, float] = (15.0, 35.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)


@dataclass(frozen=True)
class LabelledClip:
    audio: Path
    text: str


@dataclass
class AudioPool:
    """Decoded source files (16 kHz mono) by content hash, and the crops cut from them."""

    audio: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    train: list[Crop] = field(default_factory=list)
    held_out: list[Crop] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(len(a) for a in self.audio.values()) / SAMPLE_RATE

    def samples(self, crop: Crop) -> np.ndarray:
        """The crop's samples (at most 30 s after the speed change), perturbed deterministically."""
        src = self.audio[crop.audio_id]
        a = int(crop.start_s * SAMPLE_RATE)
        piece = src[a : a + int(crop.length_s * SAMPLE_RATE)].astype(np.float32)
        if crop.speed != 1.0 and len(piece) > 1:
            n = int(len(piece) / crop.speed)
            piece = np.interp(np.arange(n) * crop.speed, np.arange(len(piece)), piece).astype(np.float32)
        piece = piece[: int(WINDOW_S * SAMPLE_RATE)]
        if crop.gain_db:
            piece = piece * np.float32(10 ** (crop.gain_db / 20))
        if crop.noise_snr_db is not None and len(piece):
            rng = np.random.default_rng(crop.seed)
            power = float(np.mean(piece**2)) + 1e-10
            sigma = np.sqrt(power / 10 ** (crop.noise_snr_db / 10))
            piece = piece + rng.normal(0.0, sigma, len(piece)).astype(np.float32)
        return np.clip(piece, -1.0, 1.0)


def file_hash(path: Path) -> str:
    """Content hash of a whole file: the teacher cache must not depend on names or dates."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def load_pool_audio(paths: list[Path]) -> AudioPool:
    from engine.audio import load_audio

    pool = AudioPool()
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: audio file not found")
        aid = file_hash(p)
        if aid in pool.audio:
            log.warning("%s: same content as %s, used once", p.name, pool.names[aid])
            continue
        pool.audio[aid] = np.asarray(load_audio(str(p)), dtype=np.float32)
        pool.names[aid] = p.name
    if not pool.audio:
        raise ValueError("no audio given")
    return pool


MIN_SHORT_FILES_TO_HOLD = 5  # fewer short clips than this are all trained on


def plan_crops(pool: AudioPool, n_train: int, *, holdout_fraction: float = 0.1, min_holdout_s: float = 20.0,
               short_share: float = 0.5, short_range_s: tuple[float, float] = (3.0, 20.0),
               augment: Augment = Augment(), seed: int = 0, heldout_piece_s: float = 7.0) -> AudioPool:
    """Cut `n_train` random training crops and consecutive held-out windows; fills the pool's lists.

    The held-out slice is the last `holdout_fraction` (at least `min_holdout_s`) of every file
    longer than four times that, measured as one window of up to 30 s and again as
    `heldout_piece_s` pieces (short windows behave differently). Of the clips of at most one
    30 s window, when there are at least `MIN_SHORT_FILES_TO_HOLD`, a `holdout_fraction`
    share (at least one) is held out whole: clips of other voices and rooms make early
    stopping judge more than the end of one long file, and a folder of short clips gets
    early stopping at all. With neither, nothing is held out and early stopping is off.
    Crops are drawn in proportion to each file's training duration; a share `short_share` of
    them is 3-20 s long (utterance-like), the rest full 30 s windows.
    """
    rng = random.Random(seed)
    regions: dict[str, tuple[float, float]] = {}
    clips: list[str] = []  # files of one window at most: candidates to hold out whole
    pool.held_out, pool.train = [], []
    for aid, audio in pool.audio.items():
        dur = len(audio) / SAMPLE_RATE
        hold = max(min_holdout_s, holdout_fraction * dur) if holdout_fraction > 0 else 0.0
        if hold and dur >= 4 * hold:
            regions[aid] = (0.0, dur - hold)
            start = dur - hold  # one long window, then the same stretch again in utterance-like pieces
            pool.held_out.append(Crop(aid, pool.names[aid], round(start, 3), round(min(WINDOW_S, hold), 3),
                                      held_out=True))
            t = start
            while t < dur - 2.0:
                length = min(heldout_piece_s, dur - t)
                pool.held_out.append(Crop(aid, pool.names[aid], round(t, 3), round(length, 3), held_out=True))
                t += length
        else:
            regions[aid] = (0.0, dur)
            if dur <= WINDOW_S:
                clips.append(aid)
    if holdout_fraction > 0 and len(clips) >= MIN_SHORT_FILES_TO_HOLD:
        clips.sort(key=lambda aid: (pool.names[aid], aid))
        for aid in sorted(rng.sample(clips, max(1, round(holdout_fraction * len(clips)))), key=clips.index):
            pool.held_out.append(Crop(aid, pool.names[aid], 0.0, round(regions.pop(aid)[1], 3), held_out=True))
    total = sum(b - a for a, b in regions.values())
    ids = list(regions)
    weights = [(regions[i][1] - regions[i][0]) / total for i in ids]
    for k in range(n_train):
        aid = rng.choices(ids, weights)[0]
        lo, hi = regions[aid]
        span = hi - lo
        length = WINDOW_S if rng.random() >= short_share else rng.uniform(*short_range_s)
        length = min(length, span)
        start = lo + rng.uniform(0.0, max(0.0, span - length))
        speed, snr, gain = 1.0, None, 0.0
        if augment.probability > 0 and rng.random() < augment.probability:
            speed = rng.uniform(*augment.speed)
            snr = rng.uniform(*augment.noise_snr_db) if rng.random() < 0.5 else None
            gain = rng.uniform(*augment.gain_db)
            length = min(length * speed, span)  # so the perturbed crop still fills its window
            start = lo + rng.uniform(0.0, max(0.0, span - length))
        pool.train.append(Crop(aid, pool.names[aid], round(start, 3), round(length, 3), round(speed, 4),
                               None if snr is None else round(snr, 2), round(gain, 2), seed * 100003 + k))
    log.info("%d training crops, %d held-out windows from %.0f s of audio", len(pool.train), len(pool.held_out),
             pool.seconds)
    return pool


def labelled_pairs(folder: str | Path) -> list[LabelledClip]:
    """Audio files and their same-stem .txt transcripts (the layout of ../shared/audio).

    Every audio file needs a transcript and every transcript an audio file; anything else is
    refused with a message naming the files, because a silently dropped or mismatched pair
    trains the model on the wrong text. Extra non-audio files (README, .tsv) are ignored.
    """
    root = Path(folder)
    if not root.is_dir():
        raise LabelledFolderError(f"{root}: not a folder")
    audio = {p.stem: p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES}
    texts = {p.stem: p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() == ".txt"}
    no_text = [audio[s].name for s in audio if s not in texts]
    no_audio = [texts[s].name for s in texts if s not in audio]
    problems = []
    if no_text:
        problems.append(f"audio without a transcript (expected a same-stem .txt): {', '.join(no_text)}")
    if no_audio:
        problems.append(f"transcript without audio: {', '.join(no_audio)}")
    if problems:
        raise LabelledFolderError(f"{root}: " + "; ".join(problems))
    clips = []
    for stem, a in audio.items():
        text = " ".join(texts[stem].read_text(encoding="utf-8").split())
        if not text:
            raise LabelledFolderError(f"{texts[stem]}: empty transcript")
        clips.append(LabelledClip(a, text))
    if not clips:
        raise LabelledFolderError(f"{root}: no audio files with transcripts")
    return clips
