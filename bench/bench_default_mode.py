"""The default compressed cache against stock's own noise floor (issue 21), on the dev sets.

For each dev set (the 36 LibriSpeech utterances, the two long-form files) and beam size, in one
process and one run: stock fp32, stock bf16 (the noise floor: what rounding alone does) and the
default compressed mode (exact latent + exact cross-attention, fp32). A mode passes when

    |WER(mode) - WER(stock fp32)| <= max(0.3, |WER(stock bf16) - WER(stock fp32)|)   and
    words differing from stock fp32's transcript <= stock bf16's share.

It also prints the decoder KV bytes held at the peak of one window (self + cross, summed from
the cache tensors) and the wall-time ratio to stock fp32 (median over --repeats).

    python bench/bench_default_mode.py [--audio DIR] [--threads 2] [--beams 1,5] [--repeats 1] [--sets ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from common import (LONGFORM_FILES, format_table, librispeech_utterances, machine_description, median, pct,
                    print_machine, reference_text, resolve_audio_dir, timed, wer)
from engine.model_sources import resolve_model
from engine.transcribe import TranscribeOptions, Transcriber

MODES = ("stock fp32", "stock bf16", "compressed")


@dataclasses.dataclass
class Run:
    texts: list[str]
    wall_s: float
    kv_self: int
    kv_cross: int


def dev_sets(audio: Path, names: list[str]) -> dict[str, list[Path]]:
    sets = {"utterances": librispeech_utterances(audio)}
    sets.update({k: [audio / v] for k, v in LONGFORM_FILES.items()})
    return {k: v for k, v in sets.items() if k in names}


def run_mode(loaded, files: list[Path], beam: int, repeats: int) -> Run:
    walls, texts, kv_self, kv_cross = [], [], 0, 0
    for _ in range(repeats):
        texts, total = [], 0.0
        for f in files:
            tr, wall = timed(lambda: Transcriber(loaded, TranscribeOptions(beam_size=beam)).transcribe(f))
            texts.append(tr.text)
            total += wall
            kv_self = max(kv_self, tr.stats.kv_cache_peak.self_attn)
            kv_cross = max(kv_cross, tr.stats.kv_cache_peak.cross_attn)
        walls.append(total)
    return Run(texts, median(walls), kv_self, kv_cross)


def judge(ref: list[str], runs: dict[str, Run]) -> dict[str, tuple]:
    """mode -> (WER, words differing from stock fp32, passes)."""
    base = runs["stock fp32"].texts
    w_base = wer(ref, base).wer
    w_bf16 = wer(ref, runs["stock bf16"].texts).wer
    d_bf16 = wer(base, runs["stock bf16"].texts).wer
    tol = max(0.003, abs(w_bf16 - w_base))
    out = {}
    for mode, run in runs.items():
        w, diff = wer(ref, run.texts).wer, wer(base, run.texts).wer
        out[mode] = (w, diff, abs(w - w_base) <= tol + 1e-12 and diff <= d_bf16 + 1e-12)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", default=None, help="../shared/audio by default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats per mode (median)")
    ap.add_argument("--sets", default="utterances,librispeech_long,ljspeech_long")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    audio = resolve_audio_dir(args.audio)
    print_machine(machine_description({"threads": args.threads}), "bench_default_mode")
    models = {"stock fp32": resolve_model(None, "cpu", torch.float32, kv_cache="stock"),
              "stock bf16": resolve_model(None, "cpu", torch.bfloat16, kv_cache="stock"),
              "compressed": resolve_model(None, "cpu", torch.float32, kv_cache="compressed")}
    rows, all_pass = [], True
    for beam in (int(b) for b in args.beams.split(",")):
        for name, files in dev_sets(audio, args.sets.split(",")).items():
            ref = [reference_text(f) for f in files]
            runs = {mode: run_mode(models[mode], files, beam, args.repeats) for mode in MODES}
            verdict = judge(ref, runs)
            stock_kv = runs["stock fp32"].kv_self + runs["stock fp32"].kv_cross
            for mode in MODES:
                run, (w, diff, ok) = runs[mode], verdict[mode]
                kv = run.kv_self + run.kv_cross
                rows.append([name, beam, mode, pct(w), pct(diff), "pass" if ok else "FAIL",
                             f"{run.kv_self / 2**10:.0f} KiB", f"{run.kv_cross / 2**10:.0f} KiB",
                             f"{100 * kv / stock_kv:.2f}%", f"{run.wall_s:.1f}",
                             f"{run.wall_s / runs['stock fp32'].wall_s:.3f}x"])
                all_pass &= ok or mode != "compressed"
            print(format_table(["set", "beam", "mode", "WER %", "differs %", "noise floor", "self KV peak",
                                "cross KV peak", "KV vs stock", "wall s", "vs stock fp32"], rows[-3:]), flush=True)
    print()
    print(format_table(["set", "beam", "mode", "WER %", "differs %", "noise floor", "self KV peak",
                        "cross KV peak", "KV vs stock", "wall s", "vs stock fp32"], rows))
    print(f"\ncompressed mode {'passes' if all_pass else 'FAILS'} the noise-floor test on every set")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
