"""Decode any audio/video file to 16 kHz mono float32 in bounded memory.

Everything goes through PyAV (libav), so wav/flac/mp3/ogg/opus/m4a and the audio track of
mp4/mkv/webm all share one code path (soundfile is only ~2x faster on flac, and both run at
>1000x realtime, far below transcription cost, so a second path is not worth the divergence).
Channels are averaged after resampling (swresample's float mono downmix adds L+R at -3 dB, so
a dual-mono file would come out 1.4x louder than the mono original and could clip).
Every failure surfaces as `AudioError(path, reason)` with a short reason a user can act on.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_RATE_RANGE = (1000, 768000)  # guards against corrupt headers asking for absurd resampling
_PREROLL_S = 1.0  # decode this much before a seek target so decoder/resampler state settles
_PAD_TOL_S = 0.25  # output past the declared duration up to this much is encoder padding
_SHORT_TOL_S = 0.5  # ending this much (and 1 %) before the declared duration = truncated
_MAX_BAD_RUN = 50  # consecutive undecodable packets before a stream counts as garbage
_RELIABLE_FORMATS = ("wav", "flac", "ogg", "mov", "matroska", "aiff", "w64", "caf", "mp3")
_FULL_SCALE_TOL = 1.5  # float samples up to this are ordinary overs; past it the file is scaled down
_gains: dict[tuple, float] = {}  # (path, track, size, mtime) -> _level_gain
_NOT_AUDIO = "not an audio file or unsupported format"
_CORRUPT = "corrupt or truncated audio"


class AudioError(Exception):
    """A file that cannot be turned into audio; `reason` is short and user-facing."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(str(path), reason)  # args kept so the error pickles across processes
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.reason}"


def shown_path(path: str | os.PathLike) -> str:
    """A path on one printable line: control characters (a newline in a name) and bytes that are not
    UTF-8 are escaped, so a report keeps one line per file and printing never fails."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


@dataclass(frozen=True)
class AudioInfo:
    """What the UI shows before decoding; `codec`/`channels`/`sample_rate` are the source's."""

    path: str
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str
    track: int = 1  # which audio track (1-based) these facts and the decoded samples are of
    tracks: int = 1  # audio tracks in the file


class _SeekFailed(Exception):
    """Seek landed somewhere we cannot place exactly; caller decodes from the start."""


def _why(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return msg.splitlines()[0][:100]


def _check_file(path: str | os.PathLike) -> str:
    """Catch filesystem problems before libav turns them into vague errors."""
    p = os.fsdecode(path)
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise AudioError(p, "is a directory")
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO waits for a writer, a device never ends: refuse, never hang
            raise AudioError(p, f"is a {_special_kind(st.st_mode)}, not a file: save the recording to a file first")
        if st.st_size == 0 and stat.S_ISREG(st.st_mode):
            raise AudioError(p, "file is empty")
        with open(p, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise AudioError(p, "file not found") from None
    except PermissionError:
        raise AudioError(p, "permission denied") from None
    except OSError as e:
        raise AudioError(p, f"cannot read file ({_why(e)})") from None
    return p


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _open(p: str) -> av.container.InputContainer:
    try:
        return av.open(p, metadata_errors="replace")
    except Exception as e:  # libav reports unknown/garbage input as many different errors
        log.debug("av.open(%r) failed", p, exc_info=True)
        raise AudioError(p, f"{_NOT_AUDIO} ({_why(e)})") from None


def _audio_stream(c: av.container.InputContainer, p: str, track: int | None = None) -> av.audio.stream.AudioStream:
    """The audio stream `track` (1-based), or libav's default one when None."""
    if not c.streams.audio:
        fmt = c.format.name
        if c.streams.video and fmt != "tty" and not fmt.startswith("image") and not fmt.endswith("_pipe"):
            raise AudioError(p, "no audio stream")
        raise AudioError(p, f"{_NOT_AUDIO} (no audio stream in {fmt} data)")
    n = len(c.streams.audio)
    if track is not None:
        if not 1 <= track <= n:
            raise AudioError(p, f"has {n} audio track{'s' if n > 1 else ''}; there is no audio track {track} "
                                f"(choose {'1' if n == 1 else f'1 to {n}'})")
        return c.streams.audio[track - 1]
    s = c.streams.best("audio") or c.streams.audio[0]
    cc = s.codec_context
    if cc is None or not cc.channels or not _RATE_RANGE[0] <= cc.sample_rate <= _RATE_RANGE[1]:
        rate = cc.sample_rate if cc is not None else 0
        raise AudioError(p, f"{_NOT_AUDIO} (no valid audio header: {rate} Hz)")
    return s


def _mp3_has_frame_count(p: str) -> bool:
    """mp3 durations are bitrate guesses unless a Xing/Info/VBRI header counts the frames."""
    with open(p, "rb") as f:
        head, off = f.read(10), 0
        if len(head) == 10 and head[:3] == b"ID3":
            off = 10 + (head[6] & 127) * 2**21 + (head[7] & 127) * 2**14 + (head[8] & 127) * 2**7 + (head[9] & 127)
        f.seek(off)
        block = f.read(8192)
    return any(tag in block for tag in (b"Xing", b"Info", b"VBRI"))


def _check_wav_size(p: str) -> None:
    """libav silently clamps a WAV whose data chunk is cut short; we call that truncated."""
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return
        for _ in range(64):
            hdr = f.read(8)
            if len(hdr) < 8:
                return
            cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"data":
                if 0 < n < 0x7FFF0000 and f.tell() + n > size + 1:  # 0 or ~2**31/2**32: streamed
                    have = size - f.tell()
                    raise AudioError(p, f"{_CORRUPT} (header declares {n} data bytes, file holds {have})")
                return
            f.seek(n + (n & 1), os.SEEK_CUR)


def _inspect(c: av.container.InputContainer, p: str, track: int | None = None
             ) -> tuple[AudioInfo, av.audio.stream.AudioStream, bool, bool]:
    """Header-only facts: (info, stream, duration is exact, seeks land sample-exactly)."""
    s = _audio_stream(c, p, track)
    cc, fmt = s.codec_context, c.format.name
    dur, exact = None, fmt.split(",")[0] in _RELIABLE_FORMATS
    if s.duration and s.time_base:
        dur = float(s.duration * s.time_base)
    elif s.metadata.get("DURATION"):  # matroska keeps per-track durations in tags
        try:
            h, m, sec = s.metadata["DURATION"].split(":")
            dur = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
    if dur is None and c.duration:
        dur, exact = c.duration / 1e6, exact and len(c.streams) == 1
    if fmt == "wav":
        _check_wav_size(p)
    if fmt == "mp3":
        exact = _mp3_has_frame_count(p)
    tb = s.time_base
    seekable = bool(tb and tb.numerator == 1 and tb.denominator % cc.sample_rate == 0)
    codec = getattr(cc.codec, "canonical_name", None) or cc.name
    number = list(c.streams.audio).index(s) + 1
    info = AudioInfo(p, dur or 0.0, cc.sample_rate, cc.channels, codec, fmt, number, len(c.streams.audio))
    return info, s, bool(dur) and exact, seekable


def _level_gain(p: str, codec: str, track: int | None) -> float:
    """1, or what brings a float PCM file whose samples pass full scale (1.0) back to it.

    Integer formats cannot exceed full scale, but a float WAV can hold any finite value, and
    Whisper's log-mel input assumes full-scale audio: at 1000x it hears other words, at 1e30
    the features overflow. The peak is the whole file's, found by one extra decode (float PCM
    decodes at thousands of times real time), so every window and every resumed run gets the
    same gain.
    """
    if not codec.startswith("pcm_f"):
        return 1.0
    st = os.stat(p)
    key = (p, track, st.st_size, st.st_mtime_ns)
    if key not in _gains:
        peak = max((float(np.abs(a).max()) for _, a in _decode(p, gain=1.0, track=track)), default=0.0)
        _gains[key] = 1.0 if peak <= _FULL_SCALE_TOL else 1.0 / peak
        if peak > _FULL_SCALE_TOL:
            log.warning("%s: samples reach %.3g times full scale (float audio stored unscaled); scaled down to full "
                        "scale", shown_path(p), peak)
    return _gains[key]


def _decode(p: str, seek_to: int = 0, gain: float | None = None, track: int | None = None
            ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first 16 kHz sample index, samples); contiguous, starting at or before seek_to.

    Drops encoder padding past an exact declared duration and raises when the stream ends
    well short of it (truncated/corrupt file), so output length == duration * 16 kHz.
    `gain` (default: `_level_gain`) scales the output.
    """
    c = _open(p)
    try:
        info, s, exact, _ = _inspect(c, p, track)
        if gain is None:  # keyed by the stream decoded, whether asked for by number or by default
            gain = _level_gain(p, s.codec_context.name, info.track)
        t0 = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        expected = round(info.duration_s * SAMPLE_RATE) if exact else None
        pos: int | None = 0
        if seek_to > 0:
            try:
                c.seek(int((t0 + seek_to / SAMPLE_RATE - _PREROLL_S) / s.time_base), stream=s, backward=True)
            except av.error.FFmpegError:
                raise _SeekFailed from None
            pos = None
        resampler, key, bad, bad_run = None, None, 0, 0
        pending: list[np.ndarray] = []  # output past `expected`: encoder padding unless it grows

        def emit(a: np.ndarray) -> tuple[int, np.ndarray] | None:
            nonlocal pos, expected
            if expected is not None:
                a, tail = a[: max(0, expected - pos)], a[max(0, expected - pos) :]
                if len(tail):
                    pending.append(tail)
                if sum(len(t) for t in pending) > _PAD_TOL_S * SAMPLE_RATE:
                    log.warning("%s: audio runs past its declared %.1f s", p, info.duration_s)
                    a, expected = np.concatenate([a, *pending]), None  # duration was wrong
                    pending.clear()
            if not len(a):
                return None
            pos += len(a)
            return pos - len(a), a

        def mono(out: av.AudioFrame) -> np.ndarray:
            ch = out.layout.nb_channels  # packed output: PyAV crashes reading >8 planes
            a = out.to_ndarray()[0]
            a = a if ch == 1 else a.reshape(-1, ch).mean(axis=1, dtype=np.float64 if gain != 1.0 else np.float32)
            if gain != 1.0:
                a = (a * gain).astype(np.float32)
            return a if np.isfinite(a).all() else np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)

        for packet in c.demux(s):
            try:
                frames = packet.decode()
                bad_run = 0
            except av.error.FFmpegError as e:  # skip a damaged packet like ffmpeg does
                bad, bad_run = bad + 1, bad_run + 1
                log.debug("%s: skipping undecodable packet (%s)", p, _why(e))
                if bad_run >= _MAX_BAD_RUN:
                    raise AudioError(p, f"{_CORRUPT} ({bad} undecodable packets)") from None
                continue
            for frame in frames:
                if not _RATE_RANGE[0] <= frame.sample_rate <= _RATE_RANGE[1]:
                    raise AudioError(p, f"{_NOT_AUDIO} (sample rate {frame.sample_rate} Hz)")
                if pos is None:  # first frame after a seek: place it, align resampler phase
                    if frame.pts is None:
                        raise _SeekFailed
                    rate = frame.sample_rate
                    n_in = round((float(frame.pts * frame.time_base) - t0) * rate)
                    skip = -n_in % (rate // math.gcd(rate, SAMPLE_RATE))
                    if skip >= frame.samples:
                        continue
                    pos = (n_in + skip) * SAMPLE_RATE // rate
                    if pos > seek_to or pos < 0 or (skip and frame.layout.nb_channels > 8):
                        raise _SeekFailed  # (PyAV cannot slice frames with >8 planes)
                    if skip:  # drop input samples so the resampler starts on a whole-sample phase
                        arr = frame.to_ndarray()
                        arr = arr[:, skip:] if frame.format.is_planar else arr[:, skip * frame.layout.nb_channels :]
                        fmt, layout, rate = frame.format.name, frame.layout, frame.sample_rate
                        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout=layout)
                        frame.sample_rate = rate
                outs = []
                if (frame.format.name, frame.layout.name, frame.sample_rate) != key:
                    outs = resampler.resample(None) if resampler else []  # format changed mid-stream
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=SAMPLE_RATE)
                frame.pts = None  # pts gaps must not make the resampler insert or drop samples
                for out in outs + resampler.resample(frame):
                    if item := emit(mono(out)):
                        yield item
        for out in resampler.resample(None) if resampler else []:
            if item := emit(mono(out)):
                yield item
        if bad:
            log.warning("%s: skipped %d undecodable packets", p, bad)
        if pos is None:
            raise _SeekFailed
        if pos == 0:
            raise AudioError(p, f"{_CORRUPT} (no decodable audio)" if bad else "contains no audio samples")
        if expected is not None and expected - pos > max(_SHORT_TOL_S * SAMPLE_RATE, 0.01 * expected):
            raise AudioError(p, f"{_CORRUPT} (decoded {pos / SAMPLE_RATE:.1f} s of {info.duration_s:.1f} s)")
    except (AudioError, _SeekFailed):
        raise
    except Exception as e:  # anything libav/numpy throws on hostile input is a file problem
        log.debug("%s: decode failed", p, exc_info=True)
        raise AudioError(p, f"{_CORRUPT} ({_why(e)})") from None
    finally:
        c.close()


def _positioned(p: str, start: int, seekable: bool, track: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode from `start`, seeking when the stream allows sample-exact placement."""
    if start > _PREROLL_S * SAMPLE_RATE and seekable:
        gen = _decode(p, start, track=track)
        try:
            first = next(gen)
        except _SeekFailed:
            log.debug("%s: inexact seek, decoding from the start", p)
        except StopIteration:
            return
        else:
            yield first
            yield from gen
            return
    yield from _decode(p, track=track)


def _probe(p: str, track: int | None = None) -> tuple[AudioInfo, bool]:
    c = _open(p)
    try:
        info, _, _, seekable = _inspect(c, p, track)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(p, f"{_NOT_AUDIO} ({_why(e)})") from None
    finally:
        c.close()
    if info.duration_s <= 0:  # container does not say (e.g. browser webm): count by decoding
        n = sum(len(a) for _, a in _decode(p, track=track))
        info = AudioInfo(p, n / SAMPLE_RATE, info.sample_rate, info.channels, info.codec, info.container,
                         info.track, info.tracks)
    return info, seekable


def probe(path: str | os.PathLike, track: int | None = None) -> AudioInfo:
    """Header facts about `path` (audio track `track`, 1-based; None: the default one); only
    decodes when the container hides the duration."""
    return _probe(_check_file(path), track)[0]


def load_audio(path: str | os.PathLike, track: int | None = None) -> np.ndarray:
    """Whole file as float32 mono 16 kHz; for short clips and tests (memory grows with length)."""
    p = _check_file(path)
    return np.concatenate([a for _, a in _decode(p, track=track)])


def iter_chunks(path: str | os.PathLike, chunk_s: float = 30.0, track: int | None = None) -> Iterator[np.ndarray]:
    """Consecutive non-overlapping chunks of chunk_s seconds (last one shorter); bounded memory."""
    if chunk_s <= 0:
        raise ValueError("chunk_s must be > 0")
    p, n = _check_file(path), max(1, round(chunk_s * SAMPLE_RATE))

    def gen() -> Iterator[np.ndarray]:
        pieces, have = [], 0
        for _, a in _decode(p, track=track):
            pieces.append(a)
            have += len(a)
            while have >= n:
                buf = np.concatenate(pieces)
                yield buf[:n]
                pieces, have = [buf[n:]], have - n
        if have:
            yield np.concatenate(pieces)

    return gen()


class AudioReader:
    """Windowed reads for the long-form transcriber, holding only the latest window in memory.

    `read(start, n)` returns exactly n samples (zeros past the end). Samples before the latest
    `start` are dropped; asking for an earlier start re-opens the file (seeking where the stream
    allows sample-exact placement, else decoding from the beginning). Results are identical to
    slices of `load_audio` for forward reads.
    `total_samples` is the declared duration in 16 kHz samples (an estimate for containers that
    only guess, e.g. mp3 without a frame count) and becomes exact once `exhausted` is True, i.e.
    once the decoder has reached the end of the stream. Not thread-safe.
    """

    def __init__(self, path: str | os.PathLike, track: int | None = None) -> None:
        self.path = _check_file(path)
        self.track = track
        self.info, self._seekable = _probe(self.path, track)
        self.total_samples = round(self.info.duration_s * SAMPLE_RATE)
        self.exhausted = False
        self._gen: Iterator[tuple[int, np.ndarray]] | None = None
        self._restart(0)
        self._fill(1)  # fail here, not mid-job, on files whose first packets are garbage

    def _restart(self, start: int) -> None:
        if self._gen is not None:
            self._gen.close()
        self._gen = _positioned(self.path, start, self._seekable, self.track)
        self._buf = np.zeros(0, np.float32)
        self._start = self._end = start  # buffer holds samples [_start, _end)
        self._decoded = 0  # end of the last chunk the decoder produced
        self.exhausted = False

    def _fill(self, until: int) -> None:
        pieces = [self._buf]
        while self._end < until and not self.exhausted:
            try:
                pos, a = next(self._gen)
            except StopIteration:
                self.exhausted, self.total_samples = True, self._decoded
                break
            self._decoded = pos + len(a)
            if pos + len(a) <= self._end:
                continue
            a = a[self._end - pos :] if pos < self._end else a
            pieces.append(a)
            self._end += len(a)
        if len(pieces) > 1:
            self._buf = np.concatenate(pieces)

    def read(self, start_sample: int, n_samples: int) -> np.ndarray:
        """Exactly n_samples float32 16 kHz samples from start_sample, zero-padded past the end."""
        if self._gen is None:
            raise ValueError("AudioReader is closed")
        if start_sample < 0 or n_samples < 0:
            raise ValueError("start_sample and n_samples must be >= 0")
        far = start_sample > self._end + 60 * SAMPLE_RATE and self._seekable and not self.exhausted
        if start_sample < self._start or far:
            self._restart(start_sample)
        if start_sample > self._start:  # forward-only: drop what the caller has moved past
            self._buf = self._buf[start_sample - self._start :].copy()
            self._start, self._end = start_sample, max(self._end, start_sample)
        self._fill(start_sample + n_samples)
        out = np.zeros(n_samples, np.float32)
        got = self._buf[:n_samples]
        out[: len(got)] = got
        return out

    def close(self) -> None:
        """Release the decoder (and its file handle); further reads raise ValueError."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None
            self._buf = np.zeros(0, np.float32)

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
