"""Conversion variants through the product's transcriber: WER against the references and against stock.

Each variant converts the decoder self-attention of `--model` (default the bundled
tiny.en; in memory, nothing saved) and transcribes, with the product's `Transcriber` and
default options (greedy, timestamps, long-form loop), the 36 LibriSpeech utterances, the
5.6-min LibriSpeech concat and the 3.9-min LJ Speech reading of ../shared/audio. Stock
runs first in the same process; "vs stock" is the WER of the variant's text against stock's.

A variant is comma-separated: the KV reduction first, then any of
  init=calibrated|svd   cal=sample|ljjfk (LJ Speech file + JFK clip)   compensate=1|0
  attw=X (weigh key/value rows by the attention they receive, mixed X with uniform)
  keep=N (the paper's N exact key dimensions per head)   select=norm|uniform
  kscale=X|auto (key vs value error balance)   eps=X (second-moment regulariser)
  ranks=A/B/C/D (each decoder layer's rank; the reduction then only labels the variant)
  ranks=auto (the reduction's total shared by measured sensitivity, `convert --layer-ranks auto`)

    python bench/bench_conversion.py [--threads 2] [--json out.json] 0.75 0.75,compensate=0 0.75,keep=4
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

from common import (LONGFORM_FILES, format_table, librispeech_utterances, machine_description, print_machine,
                    reference_text, resolve_audio_dir, wer)

import torch  # noqa: E402  (after common, which puts the repo on sys.path)

from engine.mla import convert_model  # noqa: E402
from engine.mla.cli import parse_ranks  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402
from engine.transcribe import Transcriber, TranscribeOptions  # noqa: E402

JFK = "jfk_inaugural_excerpt.flac"
KEYS = {"init": str, "cal": str, "compensate": lambda v: v not in ("0", "false", "no"),
        "attw": float, "keep": int, "select": str,
        "kscale": lambda v: v if v == "auto" else float(v), "eps": float,
        "ranks": parse_ranks}


def parse_variant(text: str) -> dict:
    head, *rest = text.split(",")
    spec = {"reduction": float(head), "init": "calibrated", "cal": "sample", "compensate": True, "attw": 0.0, "keep": 0,
            "select": "norm", "kscale": "auto", "eps": 0.1, "ranks": "uniform"}
    for item in rest:
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown variant key {key!r} in {text!r}; keys: {', '.join(KEYS)}")
        spec[key] = KEYS[key](value)
    if spec["cal"] not in ("sample", "ljjfk"):
        raise SystemExit(f"cal must be sample or ljjfk, got {spec['cal']!r}")
    return spec


def transcribe_sets(loaded, sets: dict[str, list[Path]], language: str | None = None) -> dict[str, list[str]]:
    return {name: [Transcriber(loaded, TranscribeOptions(language=language)).transcribe(str(f)).text for f in files]
            for name, files in sets.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="e.g. 0.75  0.875,cal=ljjfk  0.75,keep=4,select=uniform")
    ap.add_argument("--audio-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tiny.en", help="model spec (default tiny.en; e.g. base)")
    ap.add_argument("--language", default=None, help="e.g. en for a multilingual model (default: the product's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    specs = [parse_variant(v) for v in args.variants]
    torch.set_num_threads(args.threads)
    audio = resolve_audio_dir(args.audio_dir)
    lj = audio / LONGFORM_FILES["ljspeech_long"]
    sets = {"utterances": librispeech_utterances(audio), "LibriSpeech concat": [audio / LONGFORM_FILES["librispeech_long"]],
            "LJ Speech": [lj]}
    refs = {name: [reference_text(p) for p in files] for name, files in sets.items()}
    desc = machine_description({"threads": args.threads, "benchmark": "bench_conversion", "model": args.model})
    print_machine(desc)

    stock = resolve_model(args.model, device="cpu", dtype=torch.float32)
    t0 = time.perf_counter()
    stock_texts = transcribe_sets(stock, sets, args.language)
    results = [{"variant": "stock", "seconds": time.perf_counter() - t0,
                "wer": {k: wer(refs[k], v).wer for k, v in stock_texts.items()}, "vs_stock": {}}]
    print(f"stock: {results[0]['wer']}", file=sys.stderr, flush=True)
    for text, spec in zip(args.variants, specs):
        model = copy.deepcopy(stock.model)
        calibration = None if spec["cal"] == "sample" else [lj, audio / JFK]
        t0 = time.perf_counter()
        cfg = convert_model(model, kv_reduction=spec["reduction"], init=spec["init"], calibration_audio=calibration,
                            compensate=spec["compensate"], attention_mix=spec["attw"],
                            keep_key_dims=spec["keep"], key_selection=spec["select"],
                            key_scale=spec["kscale"], eps=spec["eps"], rank_allocation=spec["ranks"],
                            source=args.model)
        texts = transcribe_sets(dataclasses.replace(stock, model=model), sets, args.language)
        results.append({"variant": text, "spec": spec, "ranks": cfg.ranks["decoder-self"],
                        "seconds": time.perf_counter() - t0,
                        "wer": {k: wer(refs[k], v).wer for k, v in texts.items()},
                        "vs_stock": {k: wer(stock_texts[k], v).wer for k, v in texts.items()}})
        print(f"{text}: {results[-1]['wer']} vs stock {results[-1]['vs_stock']}", file=sys.stderr, flush=True)

    names = list(sets)
    headers = ["variant", *[f"WER {n} %" for n in names], *[f"vs stock {n} %" for n in names]]
    rows = [[r["variant"], *[f"{100 * r['wer'][n]:.2f}" for n in names],
             *[f"{100 * r['vs_stock'][n]:.2f}" if r["vs_stock"] else "-" for n in names]] for r in results]
    print(f"\n{args.model}, decoder self-attention converted; product Transcriber, greedy, CLI defaults")
    print(format_table(headers, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": desc, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
