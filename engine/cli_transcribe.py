"""`whisper-mla transcribe FILE...`: transcribe files, show a progress bar, write the exports.

A bad file prints one line `error: FILE: reason` and the rest still run; the exit status is
0 only when every file succeeded.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.audio import AudioError, probe, shown_path
from engine.checkpoint import Checkpoint
from engine.export import CUE_LEVELS, CueOptions, export, export_paths, parse_formats, unique_stem
from engine.output_ledger import OverwriteRefused, check_replaceable
from engine.atomic import check_writable_dir
from engine import cli_args
from engine.batching import choose_batch_size
from engine.transcribe import DEFAULT_BEAM
from engine.media_files import expand
from engine.model_sources import KV_CACHE_MODES, ModelSourceError
from engine.results import Progress, Segment
from engine.speech_coverage import describe_gaps

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio/video files or folders",
                       description="Transcribe audio or video files to TXT/SRT/VTT/JSON.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video files, or folders (searched recursively)")
    p.add_argument("--model", default=None, help="bundled name (tiny.en, base), model folder or hub id; default tiny.en")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--kv-cache", default="compressed", choices=KV_CACHE_MODES,
                   help="compressed (default): the decoder's self-attention latent in 8 bits (an eighth of "
                        "stock fp32's K+V) and no cross-attention cache; it moves next-token probabilities 17x less "
                        "than running stock in bf16 does (README); exact: the latent unrounded (half the self cache, stock's transcript); "
                        "stock: Whisper's own cache. A Whisper-MLA folder runs at its converted ranks")
    p.add_argument("--format", default="txt,srt,vtt,json", help="comma-separated: txt,srt,vtt,json")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--beam-size", type=cli_args.beam_size, default=DEFAULT_BEAM,
                   help=f"{DEFAULT_BEAM} = beam search (default: as accurate as faster-whisper's default on every dev set); "
                        "1 = greedy, 0.5-0.7x the time on a CPU and 0.4-1.2 WER points worse")
    p.add_argument("--batch-size", type=cli_args.batch_size, default=1,
                   help="decode N chunks of speech at once, cut in the pauses a VAD finds (on a "
                        "CPU at N=8: 0.56-0.71x sequential's time, -0.4 to +0.7 WER points from it on the dev files); "
                        "'auto' = the largest that fits --memory-budget; default 1: sequential")
    p.add_argument("--memory-budget", type=cli_args.memory_size, default=None,
                   help="with --batch-size auto: memory to fit in, e.g. 6GB (default: free device memory minus a margin)")
    p.add_argument("--language", type=cli_args.language, default=None,
                   help="language code or name, e.g. de or german (multilingual models); default: detect")
    p.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    p.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=True,
                   help="time every word from the model's own cross-attention (JSON: `words` in each segment) and "
                        "tighten each segment to its words, so subtitles start and end with the speech; the text "
                        "is unchanged. On by default: 5-11%% of a CPU run's time (--no-word-timestamps: off)")
    p.add_argument("--cues", default="segment", choices=CUE_LEVELS,
                   help="SRT/VTT cues: one per segment (default), one per word, or karaoke (VTT: each word's time "
                        "tagged inside the segment's cue; SRT gets segment cues); word and karaoke turn on "
                        "--word-timestamps")
    p.add_argument("--max-line-chars", type=cli_args.int_in(8, 1000), default=None, metavar="N",
                   help="cut segment cues longer than N characters between words (e.g. 42)")
    p.add_argument("--max-cue-seconds", type=cli_args.float_in(0.5, 3600), default=None, metavar="S",
                   help="cut segment cues longer than S seconds between words (e.g. 7)")
    p.add_argument("--audio-track", type=cli_args.int_in(1, 64), default=None, metavar="N",
                   help="which audio track of a video or multi-track file, from 1 (default: the one with the most speech)")
    p.add_argument("--no-condition", action="store_true", help="do not condition each window on the previous text")
    p.add_argument("--initial-prompt", default=None, help="text to prime the first window (names, spelling)")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore and do not write resume files (by default an interrupted run continues where it stopped)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files of the export names even when whisper-mla did not write them "
                        "(the recordings themselves are never replaced)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live segments or progress bar")
    p.set_defaults(func=run)


class _ProgressLine:
    """One self-rewriting stderr line: name, percent, bar, seconds done, ETA (only on a terminal)."""

    def __init__(self, name: str, enabled: bool):
        self.name = name[:32]
        self.enabled = enabled and sys.stderr.isatty()
        self.last = ""

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        filled = int(p.fraction * 24)
        eta = "" if p.eta_s is None else f" ETA {int(p.eta_s) // 60}:{int(p.eta_s) % 60:02d}"
        self.last = f"{self.name} {p.fraction * 100:3.0f}% |{'#' * filled}{'.' * (24 - filled)}| {p.done_s:.0f}/{p.total_s:.0f} s{eta}"
        sys.stderr.write("\r" + self.last)
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")
            sys.stderr.flush()

    def print_segment(self, seg: Segment) -> None:
        self.clear()
        _print_segment(seg)
        if self.enabled and self.last:
            sys.stderr.write(self.last)
            sys.stderr.flush()


def _print_segment(seg: Segment) -> None:
    def ts(t: float) -> str:
        m, s = divmod(t, 60)
        return f"{int(m):02d}:{s:06.3f}"

    print(f"[{ts(seg.start)} --> {ts(seg.end)}] {seg.text.strip()}", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        formats = parse_formats(args.format)
        check_writable_dir(args.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    empty: list[str] = []  # a folder without recordings is one bad input among the others, not the end
    files = expand(args.files, require_media=True, on_empty=lambda e: empty.append(str(e)))
    for message in empty:
        print(f"error: {message}", file=sys.stderr)
    if not files:
        return 2
    from engine.model_sources import resolve_model
    from engine.transcribe import Transcriber, TranscribeOptions

    try:
        loaded = resolve_model(args.model, device=args.device, kv_cache=args.kv_cache)
    except ModelSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.language and args.language != "en" and not loaded.settings.multilingual:
        print(f"error: --language {args.language}: {loaded.info.name} is English-only; choose a multilingual "
              f"model (--model base) or leave --language out", file=sys.stderr)
        return 2
    if args.task == "translate" and not loaded.settings.multilingual:
        print(f"error: --task translate: {loaded.info.name} is English-only and cannot translate; "
              f"choose a multilingual model (--model base)", file=sys.stderr)
        return 2
    batch_size = args.batch_size
    if batch_size == "auto":
        batch_size = choose_batch_size(loaded, budget_bytes=args.memory_budget, beam_size=args.beam_size)
        if not args.quiet:
            print(f"batch size auto: {batch_size} windows at once", file=sys.stderr)
    options = TranscribeOptions(language=args.language, task=args.task, beam_size=args.beam_size,
                                batch_size=batch_size, condition_on_previous_text=not args.no_condition,
                                initial_prompt=args.initial_prompt, audio_track=args.audio_track,
                                word_timestamps=args.word_timestamps or args.cues != "segment")
    cue_options = CueOptions(args.cues, args.max_line_chars, args.max_cue_seconds)
    transcriber = Transcriber(loaded, options)
    failures = len(empty)
    stems: list[str] = []  # same-named files from different folders get "name (2)" and so on
    for file in files:
        stems.append(unique_stem(file, stems))
        line = _ProgressLine(shown_path(file.name), not args.quiet)
        try:
            # before any work: an export that would replace a file of the user's fails this file only
            check_replaceable(export_paths(args.out, formats, stems[-1]), inputs=[file], overwrite=args.overwrite)
            probe(file, args.audio_track)  # a bad file (or a track it lacks) fails here, before any work
            ckpt = None if args.no_resume else Checkpoint(Path(args.out), file, loaded.info.to_dict(), options,
                                                          stem=stems[-1])
            resume = ckpt.load() if ckpt else None
            if resume and not args.quiet:
                print(f"{shown_path(file)}: resuming at {resume.position / 100:.1f} s with {len(resume.segments)} segments "
                      f"from the interrupted run", file=sys.stderr)
            transcript = transcriber.transcribe(file, progress=line,
                                                on_segment=None if args.quiet else line.print_segment,
                                                resume=resume, on_window=ckpt.save if ckpt else None)
            written = export(transcript, args.out, formats, stem=stems[-1], overwrite=args.overwrite,
                             cue_options=cue_options)
            if ckpt:
                ckpt.discard()
        except AudioError as e:
            failures += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        except OverwriteRefused as e:
            failures += 1
            print(f"error: {shown_path(file)}: not transcribed: {e}", file=sys.stderr)
            continue
        except OSError as e:
            failures += 1
            print(f"error: {shown_path(file)}: cannot write output ({e.strerror or e})", file=sys.stderr)
            continue
        except Exception as e:  # keep going with the next file; the log has the traceback
            failures += 1
            log.debug("transcription failed", exc_info=True)
            print(f"error: {shown_path(file)}: transcription failed ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        finally:
            line.clear()
        if transcript.uncovered_speech:  # said even with --quiet: this is speech the transcript lacks
            print(f"warning: {shown_path(file)}: speech without text at {describe_gaps(transcript.uncovered_speech)} "
                  f"(decoded again on its own, still nothing; listed as uncovered_speech in the JSON)", file=sys.stderr)
        if transcript.audio_track and not args.quiet:
            t = transcript.audio_track
            print(f"{shown_path(file)}: audio track {t.track} of {t.tracks} ({t.why}); --audio-track N picks another",
                  file=sys.stderr)
        stats = transcript.stats
        if not args.quiet and stats:
            print(f"{shown_path(file)}: {stats.audio_s:.1f} s of audio in {stats.wall_s:.1f} s (RTF {stats.rtf:.3f}); "
                  f"{language_note(transcript)}wrote {', '.join(p.name for p in written)}", file=sys.stderr)
    return 1 if failures else 0


def language_note(transcript) -> str:
    """'detected zh (p=0.97), translated to English; ' for the report line; '' when the language was given."""
    note = ""
    if transcript.language_probability is not None:
        note = f"detected {transcript.language} (p={transcript.language_probability:.2f})"
    if transcript.task == "translate":
        note += (", " if note else "") + "translated to English"
    return note + "; " if note else ""
