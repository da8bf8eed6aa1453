"""Long-form transcription: walk a file in 30 s windows and yield segments as they are decoded.

Sequential mode is openai-whisper's algorithm: decode a window with timestamps, advance the
seek position to the end of the last complete segment, optionally condition on the previous
text, re-decode at higher temperature when the output looks like a loop (compression ratio)
or is unlikely (average log-probability), and skip windows that are silence. Batched mode
decodes chunks of speech cut in the pauses a VAD finds (engine.speech_chunks), several at a
time, each prompted with the text of the chunk before it in its lane.
Audio is read through a bounded window buffer, so hours-long files use constant memory.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import torch

from engine.audio import AudioReader
from engine.audio_tracks import TrackChoice, choose_track
from engine.cancel import CancelToken  # noqa: F401  (part of this module's API)
from engine.batching import FallbackState, move_to_cpu, run_with_oom_fallback
from engine.decoding import DecodeOptions, DecodeResult, WindowDecoder
from engine.features import SAMPLE_RATE, FRAMES_PER_SECOND, HOP_LENGTH, INPUT_STRIDE, N_FRAMES, N_SAMPLES, TIME_PRECISION, log_mel
from engine.model_sources import LoadedModel
from engine.results import Progress, RunStats, Segment, Transcript
from engine.seam_words import trim_seams
from engine.speech_chunks import Chunk, deal_lanes, missed_speech, plan_chunks
from engine.word_timing import WordAligner, assign_words, snap_to_speech, words_after_trim

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
    batch_size: int = 1  # > 1: decode VAD chunks (speech cut in pauses) this many at once, each prompted by its lane
    without_timestamps: bool = False
    check_speech: bool = True  # after decoding, decode again any VAD speech left without text (speech_coverage)
    audio_track: int | None = None  # 1-based; None: the track with the most speech (engine.audio_tracks)
    word_timestamps: bool = False  # words with times in every segment (engine.word_timing); the text is unchanged


# The product's default beam (CLI and app): greedy is less accurate than faster-whisper's default (beam 5)
# on two of the three dev sets; beam 5 is at or below it on all three (docs/measurements/batched-2026-12-07).
# The library default stays greedy, as openai-whisper's transcribe() does.
DEFAULT_BEAM = 5
CONTEXT_TOKENS = 224  # the decoder prompt keeps at most half its context of previous text
SEAM_S = 1.0  # a re-decoded segment this close to a neighbour may repeat its words


@dataclass
class ResumePoint:
    """Everything the loop needs to continue a file exactly where it stopped (checkpointed per window)."""

    position: int = 0  # mel frames: the seek (sequential) or how far the batches have got (batched)
    next_id: int = 0
    context: list[int] = field(default_factory=list)  # previous-text tokens since the last prompt reset
    last_text: str = ""
    language: str | None = None
    segments: list[Segment] = field(default_factory=list)
    step: int = 0  # batched: batches done
    lane_context: list[list[int]] = field(default_factory=list)  # batched: previous text of each lane (tokens)
    lane_text: list[str] = field(default_factory=list)  # batched: each lane's last segment
    language_probability: float | None = None  # of a detected language; None when given or English-only

    def to_dict(self) -> dict:
        return {"position": self.position, "next_id": self.next_id, "context": self.context,
                "last_text": self.last_text, "language": self.language,
                "segments": [seg.to_dict() for seg in self.segments], "step": self.step,
                "lane_context": self.lane_context, "lane_text": self.lane_text,
                "language_probability": self.language_probability}

    @classmethod
    def from_dict(cls, d: dict) -> "ResumePoint":
        return cls(int(d["position"]), int(d["next_id"]), [int(t) for t in d["context"]], str(d["last_text"]),
                   d.get("language"), [Segment.from_dict(x) for x in d["segments"]], int(d.get("step", 0)),
                   [[int(t) for t in lane] for lane in d.get("lane_context", [])],
                   [str(t) for t in d.get("lane_text", [])],
                   None if d.get("language_probability") is None else float(d["language_probability"]))


WindowCallback = Callable[[ResumePoint], None]


@dataclass
class _RunState:
    """What the loop has done so far, kept beside the generator for stats."""

    start: float = field(default_factory=time.perf_counter)
    windows: int = 0
    peak_rss: int = 0
    language: str | None = None
    language_probability: float | None = None  # None: given by the user, or an English-only model
    duration: float = 0.0
    uncovered: list[tuple[float, float]] | None = None  # None: the speech check did not run
    regions: list | None = None  # VAD speech regions (SpeechRegion), once found
    track: TrackChoice | None = None  # the audio track decoded

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)


class Transcriber:
    """Transcribes files with one loaded model; reusable across files, one file at a time."""

    def __init__(self, loaded: LoadedModel, options: TranscribeOptions | None = None):
        self.loaded = loaded
        self.options = options or TranscribeOptions()
        self.decoder = WindowDecoder(loaded)
        self._aligner: WordAligner | None = None
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
        self._state.language_probability = self.point.language_probability
        self._on_window = on_window
        self._oom = FallbackState(self.options.batch_size)
        self.decoder.kv_peak = type(self.decoder.kv_peak)()
        if self.loaded.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.loaded.device)
        self._state.track = choose_track(path, self.options.audio_track)
        if self.options.word_timestamps:
            self._speech(path)  # word edges are snapped to the speech the VAD finds (engine.word_timing)
        with AudioReader(path, self._state.track.track) as reader:
            self._state.duration = reader.info.duration_s
            if self.options.batch_size > 1:
                yield from self._batched(path, reader, progress, cancel)
            else:
                yield from self._sequential(reader, progress, cancel)
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
                          language_probability=self._state.language_probability, task=self.task,
                          model=self.loaded.info, segments=segments, stats=self.run_stats(duration), complete=complete,
                          uncovered_speech=self._state.uncovered,
                          audio_track=self._state.track if self._state.track and self._state.track.tracks > 1 else None)

    @property
    def language(self) -> tuple[str | None, float | None]:
        """The file's language and, when it was detected, its probability; (None, None) before the first window."""
        return self._state.language, self._state.language_probability

    @property
    def task(self) -> str:
        """What the model is asked to do: "translate" only on a multilingual model (English-only ones cannot)."""
        return self.options.task if self.loaded.settings.multilingual else "transcribe"

    def run_stats(self, audio_s: float) -> RunStats:
        st = self._state
        device_peak = None
        if self.loaded.device.type == "cuda":
            device_peak = int(torch.cuda.max_memory_allocated(self.loaded.device))
        return RunStats(wall_s=time.perf_counter() - st.start, audio_s=audio_s, peak_rss_bytes=st.peak_rss,
                        peak_device_bytes=device_peak, kv_cache_peak=self.decoder.kv_peak,
                        device=str(self.loaded.device), windows=st.windows)

    # -- helpers -----------------------------------------------------------------------------
    def _mel(self, windows: list) -> torch.Tensor:
        """Log-mel of each window, silent audio padded to 30 s, the frames past a short window's end set to 0.0.

        openai-whisper and faster-whisper pad the features of a short window so (the seek loop's
        last window, every VAD chunk); with it the sequential transcript equals faster-whisper's on
        the same weights, and batched VAD chunks read 0.4-0.5 WER points better than with the
        audio padding alone (docs/measurements/batched-2026-12-07).
        """
        rows = [torch.nn.functional.pad(torch.as_tensor(w), (0, N_SAMPLES - len(w))) for w in windows]
        mel = log_mel(torch.stack(rows), self.loaded.n_mels, self.loaded.device)
        for row, w in enumerate(windows):
            if (frames := len(w) // HOP_LENGTH) < mel.shape[-1]:
                mel[row, :, frames:] = 0.0
        return mel

    def _initial_context(self) -> list[int]:
        """Tokens of the user's --initial-prompt (names, spellings), the first window's previous text."""
        text = (self.options.initial_prompt or "").strip()
        return self.loaded.tokenizer.encode(" " + text, add_special_tokens=False) if text else []

    def _language(self, enc: torch.Tensor) -> str | None:
        if self._state.language is None:
            if self.options.language:
                self._state.language = self.options.language
            elif self.loaded.settings.multilingual:
                lang, prob = self.decoder.detect_language(enc[:1])[0]
                log.info("detected language %s (p=%.2f)", lang, prob)
                self._state.language, self._state.language_probability = lang, prob
            else:
                self._state.language = "en"
        return self._state.language if self.loaded.settings.multilingual else None

    def _decode_with_fallback(self, enc: torch.Tensor, prompt: list[int] | None, seed: int = 0) -> DecodeResult:
        o = self.options
        base = DecodeOptions(task=self.task, language=self._language(enc), beam_size=o.beam_size, best_of=o.best_of,
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
        self.point.language_probability = self._state.language_probability
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
            pt.context = self._initial_context()
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
            enc = self.decoder.encode(self._mel([audio]))
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
            kept = self._kept_pieces(pieces)
            result = self._with_word_timings(result, enc, kept, segment_frames)
            for seg in self._make_segments(result, kept, seek, pt.next_id):
                yield self._emit(seg)
                pt.last_text = seg.text
                emitted += seg.tokens
            if not self.options.condition_on_previous_text or result.temperature > 0.5:
                pt.context = []
            else:
                # only the text kept: an unfinished tail is decoded again from the next window
                pt.context = (pt.context + emitted)[-CONTEXT_TOKENS:]
            self._report(progress, seek + advance, total_frames)

    # -- batched mode ------------------------------------------------------------------------
    def _batched(self, path, reader: AudioReader, progress, cancel) -> Iterator[Segment]:
        """Decode VAD chunks (speech packed up to 30 s, cut in pauses) `batch_size` at a time.

        The chunks are dealt into `batch_size` lanes, each a contiguous stretch of the file, and
        a batch takes the next chunk of every lane: so each chunk is decoded one batch after the
        chunk before it in its lane and is prompted with that chunk's text, as sequential
        decoding is with the previous window's.
        """
        regions = self._speech(path)
        if regions is None:
            log.warning("%s: no speech detection, so no pauses to cut at: decoding sequentially", path)
            yield from self._sequential(reader, progress, cancel)
            return
        total = _frames(reader)  # declared lengths can be short (mp3 without a frame count): the VAD read it all
        chunks = plan_chunks(regions, max(total, int(regions[-1].end * FRAMES_PER_SECOND) + 1 if regions else 0))
        lanes = deal_lanes(len(chunks), self.options.batch_size)
        pt = self.point
        if len(pt.lane_context) != len(lanes) or len(pt.lane_text) != len(lanes):
            first = self._initial_context()  # the user's names and spellings prime every lane
            pt.lane_context, pt.lane_text = [list(first) for _ in lanes], ["" for _ in lanes]
        with contextlib.ExitStack() as stack:
            # one reader per lane, each reading forward through its own stretch of the file: a single
            # reader jumping between lanes would re-open (or decode from the start) at every batch
            readers = [reader] + [stack.enter_context(AudioReader(path, reader.track)) for _ in lanes[1:]]
            yield from self._batched_steps(regions, chunks, lanes, readers, progress, cancel)
        if pt.position < total:  # no speech at all
            self._report(progress, total, total)

    def _batched_steps(self, regions, chunks: list[Chunk], lanes: list[list[int]], readers: list[AudioReader],
                       progress, cancel) -> Iterator[Segment]:
        pt, total = self.point, _frames(readers[0])
        speech_frames = max(1, sum(c.frames for c in chunks))
        for step in range(pt.step, max((len(lane) for lane in lanes), default=0)):
            if cancel and cancel.cancelled:
                return
            rows = [(k, lane[step]) for k, lane in enumerate(lanes) if step < len(lane)]
            group = [chunks[i] for _, i in rows]
            row_readers = [readers[k] for k, _ in rows]
            prompts = [pt.lane_context[k] for k, _ in rows] if self.options.condition_on_previous_text else None
            found, results = self._decode_chunks(row_readers, group, prompts)
            echoed = [r for r, (k, _) in enumerate(rows)
                      if prompts and prompts[r] and found[r] and _same_text(found[r][0].text, pt.lane_text[k])]
            if echoed:  # the prompt, not the audio, is talking (as in sequential mode): decode afresh
                log.info("%d chunk(s) echoed the previous text; decoding them without the prompt", len(echoed))
                again, again_results = self._decode_chunks([row_readers[r] for r in echoed], [group[r] for r in echoed])
                for r, segs, result in zip(echoed, again, again_results):
                    found[r], results[r] = segs, result
                    pt.lane_context[rows[r][0]] = []
            # speech a chunk's decode skipped (typically its last sentence: the model ended the window
            # early) is decoded again, together and without a prompt, before the batch counts as done
            retry = [(r, gap) for r, (c, segs) in enumerate(zip(group, found)) for gap in missed_speech(regions, c, segs)]
            retried = self._decode_chunks([row_readers[r] for r, _ in retry], [g for _, g in retry])[0]
            for (r, gap), segs in zip(retry, retried):
                a, b = gap.start / FRAMES_PER_SECOND, gap.end / FRAMES_PER_SECOND
                inside = [seg for seg in segs if _mostly_within(seg, a, b)]
                kept = self._without_seams(inside, found[r])
                found[r] = sorted(found[r] + kept, key=lambda seg: seg.start)
            for (k, _), segs, result in zip(rows, found, results):
                if not self.options.condition_on_previous_text or result is None or result.temperature > 0.5:
                    pt.lane_context[k] = []
                else:
                    pt.lane_context[k] = (pt.lane_context[k] + [t for seg in segs for t in seg.tokens])[-CONTEXT_TOKENS:]
                if segs:
                    pt.lane_text[k] = segs[-1].text
            for seg in sorted((seg for segs in found for seg in segs), key=lambda seg: seg.start):
                yield self._emit(replace(seg, id=pt.next_id))
            pt.step = step + 1
            done = sum(chunks[i].frames for lane in lanes for i in lane[: step + 1])
            self._report(progress, total if pt.step == max(map(len, lanes)) else total * done // speech_frames, total)

    def _decode_chunks(self, readers: list[AudioReader], chunks: list[Chunk], prompts: list[list[int]] | None = None
                       ) -> tuple[list[list[Segment]], list[DecodeResult | None]]:
        """The segments of each chunk (file times, read from its reader) decoded as one batch ([] for
        silence), and each chunk's decode result."""
        if not chunks:
            return [], []
        audios = [r.read(c.start * HOP_LENGTH, c.frames * HOP_LENGTH) for r, c in zip(readers, chunks)]
        found: list[list[Segment]] = []
        results = self._decode_windows_oom_safe(audios, prompts, [c.start for c in chunks], [c.frames for c in chunks])
        for chunk, audio, result in zip(chunks, audios, results):
            silent = self._is_silence(result) or is_digital_silence(audio)
            found.append([] if silent else self._window_segments(result, chunk.start, chunk.frames, 0))
        return found, results

    def _speech(self, path) -> list | None:
        """The file's VAD speech regions, found once per run (batching and the speech check share them)."""
        from engine.vad import VadUnavailable, speech_regions

        if self._state.regions is None:
            try:
                self._state.regions = speech_regions(path, track=self._state.track.track if self._state.track else None)
            except VadUnavailable as e:
                log.warning("%s: %s", path, e)
                return None
        return self._state.regions

    def _decode_windows_oom_safe(self, audios: list, prompts: list[list[int]] | None = None,
                                 seeds: list[int] | None = None, frames: list[int] | None = None) -> list[DecodeResult]:
        """Decode windows in sub-batches; a CUDA OOM halves the sub-batch, at 1 the model moves to the CPU."""
        # the last L tokens of every window's own text, L the shortest: rows then need no padding, and
        # a sub-batch after an out-of-memory retry is prompted exactly as the whole batch would be
        keep = min((len(p) for p in prompts or [] if p), default=0)
        prompts = [p[len(p) - keep :] if p else [] for p in prompts] if prompts else [[] for _ in audios]
        seeds = seeds or list(range(len(audios)))

        def decode(idx: list[int]) -> list[DecodeResult]:
            # features and encoder run a few windows at a time (memory), the decoder on the whole batch
            enc = self.decoder.encode_chunks(len(idx), lambda i, j: self._mel([audios[k] for k in idx[i:j]]))
            results = self._decode_batch(enc, [prompts[k] for k in idx], [seeds[k] for k in idx])
            if self.options.word_timestamps:  # aligned while the encoder output is at hand
                sizes = [frames[k] if frames else len(audios[k]) // HOP_LENGTH for k in idx]
                results = [self._with_word_timings(r, enc[i : i + 1], self._window_pieces(r, n), n)
                           for i, (r, n) in enumerate(zip(results, sizes))]
            return results

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

        regions = self._speech(path)
        if regions is None:
            log.warning("%s: speech coverage not checked", path)
            return
        still: list[tuple[float, float]] = []
        for gap in uncovered(regions, self.point.segments):
            if cancel and cancel.cancelled:
                return
            log.info("%s: %.1f-%.1f s is speech without text; decoding it on its own", path, gap.start, gap.end)
            found = self._without_seams(list(self._decode_stretch(reader, gap.start, gap.end)), self.point.segments)
            for seg in found:
                yield self._emit(replace(seg, id=self.point.next_id))
            if not found:
                log.warning("%s: %.1f-%.1f s sounds like speech but gave no text", path, gap.start, gap.end)
                still.append((round(gap.start, 3), round(gap.end, 3)))
        self._state.uncovered = still
        if self._on_window:
            self._on_window(self.point)

    def _without_seams(self, found: list[Segment], neighbours: list[Segment]) -> list[Segment]:
        """Re-decoded segments without the words they repeat of the segments just before and after them."""
        out = []
        for seg in found:
            before = max((n for n in neighbours if n.start < seg.start), key=lambda n: n.end, default=None)
            after = min((n for n in neighbours if n.start >= seg.start), key=lambda n: n.start, default=None)
            near_before = before is not None and before.end >= seg.start - SEAM_S
            near_after = after is not None and after.start <= seg.end + SEAM_S
            text = trim_seams(seg.text, before.text if near_before else "", after.text if near_after else "")
            if text == seg.text:
                out.append(seg)
            elif text:
                log.debug("seam: %r -> %r", seg.text, text)
                words = words_after_trim(seg.words, text)
                bounds = (words[0].start, words[-1].end) if words else (seg.start, seg.end)
                out.append(replace(seg, text=text, tokens=tuple(self.loaded.tokenizer.encode(text, add_special_tokens=False)),
                                   words=words, start=bounds[0], end=bounds[1]))
        return out

    def _decode_stretch(self, reader: AudioReader, start_s: float, end_s: float) -> Iterator[Segment]:
        """Segments of [start_s, end_s] decoded in windows of at most 30 s, without the prompt, with fallback."""
        pad = 0.25
        first = max(0, int((start_s - pad) * FRAMES_PER_SECOND))
        last = min(_frames(reader), int((end_s + pad) * FRAMES_PER_SECOND) + 1)
        while first < last:
            n = min(N_FRAMES, last - first)
            audio = reader.read(first * HOP_LENGTH, n * HOP_LENGTH)
            if not is_digital_silence(audio):
                enc = self.decoder.encode(self._mel([audio]))
                result = self._decode_with_fallback(enc, None, seed=first)
                if not self._is_silence(result):
                    result = self._with_word_timings(result, enc, self._window_pieces(result, n), n)
                    for seg in self._window_segments(result, first, n, self.point.next_id):
                        if _mostly_within(seg, start_s, end_s):
                            yield seg
            first += n

    def _fall_back_to_cpu(self) -> None:
        peak = self.decoder.kv_peak
        self.loaded = move_to_cpu(self.loaded)
        self.decoder = WindowDecoder(self.loaded)
        self.decoder.kv_peak = peak
        self._aligner = None

    # -- from a window's tokens to segments (the one place a decoded Segment is made) -------------
    def _kept_pieces(self, pieces: list[tuple[float, float, list[int]]]) -> list[tuple[float, float, list[int]]]:
        """The pieces that become segments: with text and a positive length."""
        s, tok = self.loaded.settings, self.loaded.tokenizer
        return [p for p in pieces if p[1] > p[0] and tok.decode([t for t in p[2] if t < s.eot]).strip()]

    def _window_pieces(self, result: DecodeResult, n: int) -> list[tuple[float, float, list[int]]]:
        """The kept pieces of an independently decoded window, its unfinished tail included."""
        pieces, advance = split_segments(result.tokens, self.loaded.settings.timestamp_begin, n)
        if advance < n:  # no second pass over this audio in batch mode: keep the unfinished tail
            done = sum(len(p[2]) for p in pieces)
            pieces.append((advance / FRAMES_PER_SECOND, n / FRAMES_PER_SECOND, result.tokens[done:]))
        return self._kept_pieces(pieces)

    def _with_word_timings(self, result: DecodeResult, enc: torch.Tensor, pieces, frames: int) -> DecodeResult:
        """`result` with the text of `pieces` aligned to the window's audio (when word timestamps are on)."""
        if not self.options.word_timestamps or not pieces:
            return result
        if self._aligner is None:
            self._aligner = WordAligner(self.loaded)
        eot = self.loaded.settings.eot
        text = [t for _, _, toks in pieces for t in toks if t < eot]
        timings = self._aligner.align(enc, text, frames, self._state.language, self.task)
        return replace(result, word_timings=timings)

    def _make_segments(self, result: DecodeResult, pieces, start_frame: int, first_id: int) -> list[Segment]:
        """Segments (file times) of a window's kept pieces; with word timings, each gets its words
        and is tightened to them."""
        s, tok = self.loaded.settings, self.loaded.tokenizer
        offset = start_frame / FRAMES_PER_SECOND
        timed = None
        if result.word_timings is not None:
            last = max((seg.end for seg in self.point.segments if seg.end <= offset + 1e-6), default=0.0)
            timed = assign_words(result.word_timings, pieces, offset, last, s.eot)
        out = []
        for k, (start, end, toks) in enumerate(pieces):
            text = tok.decode([t for t in toks if t < s.eot])
            start, end, words = ((timed[k].start, timed[k].end, timed[k].words) if timed
                                 else (offset + start, offset + end, ()))
            if words and self._state.regions:
                words = snap_to_speech(words, self._state.regions)
                start, end = words[0].start, words[-1].end
            out.append(Segment(first_id + k, round(start, 3), round(end, 3), text, tuple(toks), result.avg_logprob,
                               result.compression_ratio, result.no_speech_prob, result.temperature, words))
        return out

    def _window_segments(self, result: DecodeResult, start_frame: int, n: int, first_id: int) -> list[Segment]:
        """All text of an independently decoded window, the unfinished tail included."""
        return self._make_segments(result, self._window_pieces(result, n), start_frame, first_id)

    def _decode_batch(self, enc: torch.Tensor, prompts: list[list[int]], seeds: list[int]) -> list[DecodeResult]:
        """Decode a batch at temperature 0; windows that fail the quality checks fall back one by one.

        Windows with previous text (prompts of one length) are decoded together, the rest together.
        """
        o = self.options
        opts = DecodeOptions(task=self.task, language=self._language(enc), beam_size=o.beam_size, best_of=o.best_of,
                             patience=o.patience, length_penalty=o.length_penalty,
                             without_timestamps=o.without_timestamps, temperature=o.temperatures[0])
        results: list[DecodeResult | None] = [None] * len(seeds)
        for rows in ([i for i, p in enumerate(prompts) if not p], [i for i, p in enumerate(prompts) if p]):
            if not rows:
                continue
            sub = enc if len(rows) == len(seeds) else enc[rows]
            for i, r in zip(rows, self.decoder.decode(sub, opts, [prompts[i] for i in rows] if prompts[rows[0]] else None)):
                results[i] = r
        for i, r in enumerate(results):
            assert r is not None
            bad = (o.compression_ratio_threshold is not None and r.compression_ratio > o.compression_ratio_threshold) or (
                o.logprob_threshold is not None and r.avg_logprob < o.logprob_threshold)
            if bad and len(o.temperatures) > 1:
                results[i] = self._decode_with_fallback(enc[i : i + 1], prompts[i] or None, seed=seeds[i])
        return results  # type: ignore[return-value]


def _mostly_within(seg: Segment, start_s: float, end_s: float) -> bool:
    """At least half of `seg` lies in [start_s, end_s]: a segment of a re-decoded stretch that is
    not a neighbour's words again."""
    return min(seg.end, end_s) - max(seg.start, start_s) >= 0.5 * (seg.end - seg.start)


def _frames(reader: AudioReader) -> int:
    """Mel frames in the file; exact once the decoder has reached the end (declared lengths can lie)."""
    return int(round(reader.total_samples / HOP_LENGTH))


SILENCE_PEAK = 10 ** (-70 / 20)  # -70 dBFS: below any recorded room tone, above dither-free zeros


def is_digital_silence(audio) -> bool:
    """A window with no signal at all: Whisper would hallucinate ("you", "Thank you.") on it, so skip it."""
    return audio.size == 0 or float(abs(audio).max()) < SILENCE_PEAK


def _echoes(pieces: list[tuple[float, float, list[int]]], last_text: str, tokenizer, eot: int) -> bool:
    """True when the window's first segment repeats the last emitted one (at least 4 words)."""
    return bool(pieces) and _same_text(tokenizer.decode([t for t in pieces[0][2] if t < eot]), last_text)


def _same_text(text: str, last_text: str) -> bool:
    """`text` repeats `last_text` (normalised, at least 4 words): a window echoing its prompt."""
    if not last_text:
        return False
    from engine.wer import normalize

    first = normalize(text)
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
