"""Long-form transcription: walk a file in 30 s windows and yield segments as they are decoded.

Sequential mode is openai-whisper's algorithm: decode a window with timestamps, advance the
seek position to the end of the last complete segment, optionally condition on the previous
text, re-decode at higher temperature when the output looks like a loop (compression ratio)
or is unlikely (average log-probability), and skip windows that are silence. Batched mode
decodes several consecutive windows at once (no seek, no conditioning) for GPU throughput.
Audio is read through a bounded window buffer, so hours-long files use constant memory.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import torch

from engine.audio import AudioReader
from engine.cancel import CancelToken  # noqa: F401  (part of this module's API)
from engine.batching import FallbackState, move_to_cpu, run_with_oom_fallback
from engine.decoding import DecodeOptions, DecodeResult, WindowDecoder
from engine.features import SAMPLE_RATE, FRAMES_PER_SECOND, HOP_LENGTH, INPUT_STRIDE, N_FRAMES, N_SAMPLES, TIME_PRECISION, log_mel
from engine.model_sources import LoadedModel
from engine.results import Progress, RunStats, Segment, Transcript
from engine.window_cuts import quiet_cut

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: English for .en models, detected otherwise
    task: str = "transcribe"
    beam_size: int = 1
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float | None = None
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    batch_size: int = 1  # > 1: decode consecutive windows together (no seek, no conditioning)
    without_timestamps: bool = False
    check_speech: bool = True  # after decoding, decode again any VAD speech left without text (speech_coverage)


CONTEXT_TOKENS = 224  # the decoder prompt keeps at most half its context of previous text


@dataclass
class ResumePoint:
    """Everything the loop needs to continue a file exactly where it stopped (checkpointed per window)."""

    position: int = 0  # mel frames: the seek (sequential) or the next window start (batched)
    next_id: int = 0
    context: list[int] = field(default_factory=list)  # previous-text tokens since the last prompt reset
    last_text: str = ""
    language: str | None = None
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"position": self.position, "next_id": self.next_id, "context": self.context,
                "last_text": self.last_text, "language": self.language,
                "segments": [seg.to_dict() for seg in self.segments]}

    @classmethod
    def from_dict(cls, d: dict) -> "ResumePoint":
        return cls(int(d["position"]), int(d["next_id"]), [int(t) for t in d["context"]], str(d["last_text"]),
                   d.get("language"), [Segment.from_dict(x) for x in d["segments"]])


WindowCallback = Callable[[ResumePoint], None]


@dataclass
class _RunState:
    """What the loop has done so far, kept beside the generator for stats."""

    start: float = field(default_factory=time.perf_counter)
    windows: int = 0
    peak_rss: int = 0
    language: str | None = None
    duration: float = 0.0
    uncovered: list[tuple[float, float]] | None = None  # None: the speech check did not run

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)


class Transcriber:
    """Transcribes files with one loaded model; reusable across files, one file at a time."""

    def __init__(self, loaded: LoadedModel, options: TranscribeOptions | None = None):
        self.loaded = loaded
        self.options = options or TranscribeOptions()
        self.decoder = WindowDecoder(loaded)
        self._state = _RunState()
        self.point = ResumePoint()
        self._on_window: WindowCallback | None = None

    # -- public API ------------------------------------------------------------------------
    def segments(self, path: str | Path, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, resume: ResumePoint | None = None,
                 on_window: WindowCallback | None = None) -> Iterator[Segment]:
        """Yield segments of `path` as they are decoded; raises engine.audio.AudioError on bad input.

        `resume` continues an interrupted run (its segments are not yielded again); `on_window`
        receives the resume point after every window, for checkpoints.
        """
        self._state = _RunState()
        self.point = resume or ResumePoint()
        self._state.language = self.point.language
        self._on_window = on_window
        self._oom = FallbackState(self.options.batch_size)
        self.decoder.kv_peak = type(self.decoder.kv_peak)()
        if self.loaded.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.loaded.device)
        with AudioReader(path) as reader:
            self._state.duration = reader.info.duration_s
            loop = self._batched if self.options.batch_size > 1 else self._sequential
            yield from loop(reader, progress, cancel)
            if self.options.check_speech and not (cancel and cancel.cancelled):
                yield from self._recover_speech(path, reader, cancel)
            self._state.duration = reader.total_samples / SAMPLE_RATE if reader.exhausted else reader.info.duration_s
        self._state.sample_rss()

    def transcribe(self, path: str | Path, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None,
                   on_segment: Callable[[Segment], None] | None = None,
                   resume: ResumePoint | None = None, on_window: WindowCallback | None = None) -> Transcript:
        """Transcribe a whole file; `complete` is False when cancelled part-way."""
        if on_segment and resume:
            for seg in resume.segments:
                on_segment(seg)
        for seg in self.segments(path, progress, cancel, resume, on_window):
            if on_segment:
                on_segment(seg)
        segments = sorted(self.point.segments, key=lambda seg: seg.start)  # recovered speech goes in its place
        complete = not (cancel and cancel.cancelled)
        duration = self._state.duration
        return Transcript(file=str(path), duration=duration, language=self._state.language,
                          model=self.loaded.info, segments=segments, stats=self.run_stats(duration), complete=complete,
                          uncovered_speech=self._state.uncovered)

    def run_stats(self, audio_s: float) -> RunStats:
        st = self._state
        device_peak = None
        if self.loaded.device.type == "cuda":
            device_peak = int(torch.cuda.max_memory_allocated(self.loaded.device))
        return RunStats(wall_s=time.perf_counter() - st.start, audio_s=audio_s, peak_rss_bytes=st.peak_rss,
                        peak_device_bytes=device_peak, kv_cache_peak=self.decoder.kv_peak,
                        device=str(self.loaded.device), windows=st.windows)

    # -- helpers -----------------------------------------------------------------------------
    def _mel(self, windows: list, zero_tail: bool = False) -> torch.Tensor:
        """Log-mel of each window, silent audio padded to 30 s.

        `zero_tail` instead sets the frames past a short window's end to 0.0, as openai-whisper
        and faster-whisper pad the features of the seek loop's last window: with it, the
        sequential transcript equals faster-whisper's on the same weights. Batched windows
        keep the audio padding: there the model, shown 0.0 frames after a quiet cut, tends to
        drop the window's last sentence, which no later window decodes again.
        """
        rows = [torch.nn.functional.pad(torch.as_tensor(w), (0, N_SAMPLES - len(w))) for w in windows]
        mel = log_mel(torch.stack(rows), self.loaded.n_mels, self.loaded.device)
        if zero_tail:
            for row, w in enumerate(windows):
                if (frames := len(w) // HOP_LENGTH) < mel.shape[-1]:
                    mel[row, :, frames:] = 0.0
        return mel

    def _language(self, enc: torch.Tensor) -> str | None:
        if self._state.language is None:
            if self.options.language:
                self._state.language = self.options.language
            elif self.loaded.settings.multilingual:
                lang, prob = self.decoder.detect_language(enc[:1])[0]
                log.info("detected language %s (p=%.2f)", lang, prob)
                self._state.language = lang
            else:
                self._state.language = "en"
        return self._state.language if self.loaded.settings.multilingual else None

    def _decode_with_fallback(self, enc: torch.Tensor, prompt: list[int] | None, seed: int = 0) -> DecodeResult:
        o = self.options
        base = DecodeOptions(task=o.task, language=self._language(enc), beam_size=o.beam_size, best_of=o.best_of,
                             patience=o.patience, length_penalty=o.length_penalty,
                             without_timestamps=o.without_timestamps)
        result = None
        for t in o.temperatures:
            result = self.decoder.decode(enc, replace(base, temperature=t, seed=seed), prompt)[0]
            too_repetitive = o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold
            too_unlikely = o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold
            silent = o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold
            if silent and too_unlikely:
                break  # silence: the no-speech rule will skip it, no point resampling
            if not too_repetitive and not too_unlikely:
                break
        assert result is not None
        return result

    def _is_silence(self, r: DecodeResult) -> bool:
        o = self.options
        if o.no_speech_threshold is None or not r.no_speech_prob > o.no_speech_threshold:
            return False
        return not (o.logprob_threshold is not None and r.avg_logprob > o.logprob_threshold)

    def _emit(self, seg: Segment) -> Segment:
        self.point.segments.append(seg)
        self.point.next_id = seg.id + 1
        return seg

    def _report(self, progress: ProgressCallback | None, done_frames: int, total_frames: int) -> None:
        self.point.position = done_frames
        self.point.language = self._state.language
        if self._on_window:
            self._on_window(self.point)
        self._state.windows += 1
        self._state.sample_rss()
        if progress:
            progress(Progress(done_s=min(done_frames, total_frames) / FRAMES_PER_SECOND,
                              total_s=total_frames / FRAMES_PER_SECOND,
                              elapsed_s=time.perf_counter() - self._state.start))

    # -- sequential (seek) mode --------------------------------------------------------------
    def _sequential(self, reader: AudioReader, progress, cancel) -> Iterator[Segment]:
        s = self.loaded.settings
        tok = self.loaded.tokenizer
        pt = self.point
        if pt.position == 0 and self.options.initial_prompt:
            pt.context = tok.encode(" " + self.options.initial_prompt.strip(), add_special_tokens=False)
        while (seek := pt.position) < (total_frames := _frames(reader)):
            if cancel and cancel.cancelled:
                log.info("cancelled at %.1f s", seek / FRAMES_PER_SECOND)
                return
            segment_frames = min(N_FRAMES, total_frames - seek)
            audio = reader.read(seek * HOP_LENGTH, segment_frames * HOP_LENGTH)
            offset = seek / FRAMES_PER_SECOND
            if is_digital_silence(audio):
                self._report(progress, seek + segment_frames, total_frames)
                continue
            enc = self.decoder.encode(self._mel([audio], zero_tail=True))
            prompt = pt.context or None
            result = self._decode_with_fallback(enc, prompt, seed=seek)
            if self._is_silence(result):
                self._report(progress, seek + segment_frames, total_frames)
                continue
            pieces, advance = split_segments(result.tokens, s.timestamp_begin, segment_frames)
            if prompt and _echoes(pieces, pt.last_text, tok, s.eot):
                # The window repeats the sentence just emitted: the prompt, not the audio, is
                # talking (a known Whisper failure on repetitive speech). Decode it afresh.
                log.info("window at %.1f s echoed the previous text; decoding it without the prompt", offset)
                result = self._decode_with_fallback(enc, None, seed=seek)
                pieces, advance = split_segments(result.tokens, s.timestamp_begin, segment_frames)
                pt.context = []
            emitted: list[int] = []
            for start, end, toks in pieces:
                text = tok.decode([t for t in toks if t < s.eot])
                if end <= start or not text.strip():
                    continue
                yield self._emit(Segment(pt.next_id, round(offset + start, 3), round(offset + end, 3), text,
                                         tuple(toks), result.avg_logprob, result.compression_ratio,
                                         result.no_speech_prob, result.temperature))
                pt.last_text = text
                emitted += toks
            if not self.options.condition_on_previous_text or result.temperature > 0.5:
                pt.context = []
            else:
                # only the text kept: an unfinished tail is decoded again from the next window
                pt.context = (pt.context + emitted)[-CONTEXT_TOKENS:]
            self._report(progress, seek + advance, total_frames)

    # -- batched mode ------------------------------------------------------------------------
    def _batched(self, reader: AudioReader, progress, cancel) -> Iterator[Segment]:
        next_start = self.point.position
        while next_start < (total_frames := _frames(reader)):
            if cancel and cancel.cancelled:
                return
            windows: list[tuple[int, int, object]] = []  # (start frame, frames, audio)
            while len(windows) < self.options.batch_size and next_start < total_frames:
                audio = reader.read(next_start * HOP_LENGTH, min(N_FRAMES, total_frames - next_start) * HOP_LENGTH)
                total_frames = _frames(reader)
                n = quiet_cut(audio) if next_start + N_FRAMES < total_frames else len(audio) // HOP_LENGTH
                windows.append((next_start, n, audio[: n * HOP_LENGTH]))
                next_start += n
            results = self._decode_windows_oom_safe([w[2] for w in windows])
            for (start_frame, n, audio), result in zip(windows, results):
                if self._is_silence(result) or is_digital_silence(audio):
                    continue
                for seg in self._window_segments(result, start_frame, n, self.point.next_id):
                    yield self._emit(seg)
            self._report(progress, next_start, total_frames)

    def _decode_windows_oom_safe(self, audios: list) -> list[DecodeResult]:
        """Decode windows in sub-batches; a CUDA OOM halves the sub-batch, at 1 the model moves to the CPU."""
        def decode(idx: list[int]) -> list[DecodeResult]:
            # features and encoder run a few windows at a time (memory), the decoder on the whole batch
            return self._decode_batch(self.decoder.encode_chunks(
                len(idx), lambda i, j: self._mel([audios[k] for k in idx[i:j]])))

        to_cpu = self._fall_back_to_cpu if self.loaded.device.type == "cuda" else None
        results: list[DecodeResult] = []
        for _, part in run_with_oom_fallback(decode, range(len(audios)), self._oom.batch_size,
                                             to_cpu=to_cpu, state=self._oom):
            results.extend(part)
        return results

    # -- speech left without text ---------------------------------------------------------------
    def _recover_speech(self, path, reader: AudioReader, cancel) -> Iterator[Segment]:
        """Decode again, on its own, each stretch of VAD speech that no segment covers; note what stays empty."""
        from engine.speech_coverage import uncovered
        from engine.vad import VadUnavailable, speech_regions

        try:
            regions = speech_regions(path)
        except VadUnavailable as e:
            log.warning("%s: speech coverage not checked: %s", path, e)
            return
        still: list[tuple[float, float]] = []
        for gap in uncovered(regions, self.point.segments):
            if cancel and cancel.cancelled:
                return
            log.info("%s: %.1f-%.1f s is speech without text; decoding it on its own", path, gap.start, gap.end)
            found = list(self._decode_stretch(reader, gap.start, gap.end))
            for seg in found:
                yield self._emit(replace(seg, id=self.point.next_id))
            if not found:
                log.warning("%s: %.1f-%.1f s sounds like speech but gave no text", path, gap.start, gap.end)
                still.append((round(gap.start, 3), round(gap.end, 3)))
        self._state.uncovered = still
        if self._on_window:
            self._on_window(self.point)

    def _decode_stretch(self, reader: AudioReader, start_s: float, end_s: float) -> Iterator[Segment]:
        """Segments of [start_s, end_s] decoded in windows of at most 30 s, without the prompt, with fallback."""
        pad = 0.25
        first = max(0, int((start_s - pad) * FRAMES_PER_SECOND))
        last = min(_frames(reader), int((end_s + pad) * FRAMES_PER_SECOND) + 1)
        while first < last:
            n = min(N_FRAMES, last - first)
            audio = reader.read(first * HOP_LENGTH, n * HOP_LENGTH)
            if not is_digital_silence(audio):
                enc = self.decoder.encode(self._mel([audio], zero_tail=True))
                result = self._decode_with_fallback(enc, None, seed=first)
                if not self._is_silence(result):
                    for seg in self._window_segments(result, first, n, self.point.next_id):
                        inside = min(seg.end, end_s) - max(seg.start, start_s)
                        if inside >= 0.5 * (seg.end - seg.start):  # not a neighbour's words again
                            yield seg
            first += n

    def _fall_back_to_cpu(self) -> None:
        peak = self.decoder.kv_peak
        self.loaded = move_to_cpu(self.loaded)
        self.decoder = WindowDecoder(self.loaded)
        self.decoder.kv_peak = peak

    def _window_segments(self, result: DecodeResult, start_frame: int, n: int, first_id: int) -> list[Segment]:
        """All text of an independently decoded window, the unfinished tail included."""
        s, tok = self.loaded.settings, self.loaded.tokenizer
        pieces, advance = split_segments(result.tokens, s.timestamp_begin, n)
        if advance < n:  # no second pass over this audio in batch mode: keep the unfinished tail
            done = sum(len(p[2]) for p in pieces)
            pieces.append((advance / FRAMES_PER_SECOND, n / FRAMES_PER_SECOND, result.tokens[done:]))
        offset = start_frame / FRAMES_PER_SECOND
        out = []
        for start, end, toks in pieces:
            text = tok.decode([t for t in toks if t < s.eot])
            if end > start and text.strip():
                out.append(Segment(first_id + len(out), round(offset + start, 3), round(offset + end, 3), text,
                                   tuple(toks), result.avg_logprob, result.compression_ratio,
                                   result.no_speech_prob, result.temperature))
        return out

    def _decode_batch(self, enc: torch.Tensor) -> list[DecodeResult]:
        """Decode a batch at temperature 0; windows that fail the quality checks fall back one by one."""
        o = self.options
        opts = DecodeOptions(task=o.task, language=self._language(enc), beam_size=o.beam_size, best_of=o.best_of,
                             patience=o.patience, length_penalty=o.length_penalty,
                             without_timestamps=o.without_timestamps, temperature=o.temperatures[0])
        results = self.decoder.decode(enc, opts)
        for i, r in enumerate(results):
            bad = (o.compression_ratio_threshold is not None and r.compression_ratio > o.compression_ratio_threshold) or (
                o.logprob_threshold is not None and r.avg_logprob < o.logprob_threshold)
            if bad and len(o.temperatures) > 1:
                results[i] = self._decode_with_fallback(enc[i : i + 1], None, seed=i)
        return results


def _frames(reader: AudioReader) -> int:
    """Mel frames in the file; exact once the decoder has reached the end (declared lengths can lie)."""
    return int(round(reader.total_samples / HOP_LENGTH))


SILENCE_PEAK = 10 ** (-70 / 20)  # -70 dBFS: below any recorded room tone, above dither-free zeros


def is_digital_silence(audio) -> bool:
    """A window with no signal at all: Whisper would hallucinate ("you", "Thank you.") on it, so skip it."""
    return audio.size == 0 or float(abs(audio).max()) < SILENCE_PEAK


def _echoes(pieces: list[tuple[float, float, list[int]]], last_text: str, tokenizer, eot: int) -> bool:
    """True when the window's first segment repeats the last emitted one (at least 4 words)."""
    if not pieces or not last_text:
        return False
    from engine.wer import normalize

    first = normalize(tokenizer.decode([t for t in pieces[0][2] if t < eot]))
    return len(first.split()) >= 4 and first == normalize(last_text)


def split_segments(tokens: list[int], timestamp_begin: int, segment_frames: int) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut a window's tokens at timestamp pairs: ([(start_s, end_s, tokens)], frames to advance).

    As openai-whisper: when the window ends in an unfinished segment, advance only to the last
    complete timestamp so the unfinished speech is decoded again in the next window.
    """
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(tokens) >= 2 and is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    window_s = segment_frames / FRAMES_PER_SECOND
    pieces: list[tuple[float, float, list[int]]] = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cut in slices:
            part = tokens[last:cut]
            start = (part[0] - timestamp_begin) * TIME_PRECISION
            end = (part[-1] - timestamp_begin) * TIME_PRECISION
            pieces.append((start, min(end, window_s), part))
            last = cut
        if single_ending:
            return pieces, segment_frames
        advance = (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
        # A window whose only complete segment ends at 0.00 would be decoded forever: move on.
        return pieces, advance if 0 < advance <= segment_frames else segment_frames
    stamps = [t for t in tokens if t >= timestamp_begin]
    end = window_s
    if stamps and stamps[-1] != timestamp_begin:
        end = (stamps[-1] - timestamp_begin) * TIME_PRECISION
    pieces.append((0.0, min(end, window_s), tokens))
    return pieces, segment_frames
