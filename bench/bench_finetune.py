"""Whisper-MLA accuracy recovery: WER before and after label-free distillation, per CPU-minute budget.

For each KV reduction (decoder self-attention; default 75% and 87.5%) on the bundled tiny.en:

1. convert with calibration on the TRAINING audio only (LJ Speech long-form file + JFK clip);
2. distil from the stock model on that same training audio (`engine.finetune.distill`, the
   default recipe) for the largest budget, writing the best-so-far model (selected on the
   held-aside end of the LJ Speech file) at each smaller budget as well;
3. evaluate stock, the converted model and every snapshot with the product's `Transcriber`
   (greedy, default options) on the 36 LibriSpeech utterances, which were never trained on.

`--speaker-folds K` splits the utterances' LibriSpeech speakers into K groups of about equal
word count. Each group is evaluated by a model converted and distilled on LJ Speech + JFK plus
the OTHER groups' utterances (no audio of the evaluated speakers); the K groups' transcripts
are then pooled into one WER over all 36 utterances. More speakers to learn from, still
nothing trained on the voices being scored.

The minutes are training time (steps, held-out evaluations, checkpoints); the one-off
teacher pass (transcribing and scoring the crops, cached on disk) is reported separately.

    python bench/bench_finetune.py [--reductions 0.75,0.875] [--minutes 2,5,10,20] [--threads 1]
                                   [--limit N] [--json bench/out/finetune.json]
                                   [--speaker-folds 3]
    python bench/bench_finetune.py --merge a.json b.json    # one table from separate runs
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from common import (BENCH_DIR, format_table, librispeech_utterances, machine_description, print_machine,
                    reference_text, resolve_audio_dir, wer)

import torch  # noqa: E402  (after common, which puts the repo on sys.path)

from engine.finetune import FinetuneOptions, distill  # noqa: E402
from engine.mla.cli import parse_ranks  # noqa: E402
from engine.mla.convert import convert_model  # noqa: E402
from engine.mla.storage import save_mla_model  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402
from engine.transcribe import Transcriber, TranscribeOptions  # noqa: E402

TRAIN_FILES = ("longform_ljspeech_LJ001-0001_to_0032.flac", "jfk_inaugural_excerpt.flac")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate(spec: str | None, utts: list[Path], refs: list[str]) -> tuple[float, float, list[str]]:
    """(WER, wall seconds, transcripts) with the product's transcriber, default options (greedy)."""
    loaded = resolve_model(spec, device="cpu", dtype=torch.float32)
    tr = Transcriber(loaded, TranscribeOptions())
    t0 = time.perf_counter()
    hyps = [tr.transcribe(p).text for p in utts]
    return wer(refs, hyps).wer, time.perf_counter() - t0, hyps


def speaker(utterance: Path) -> str:
    """LibriSpeech names are SPEAKER-CHAPTER-INDEX."""
    return utterance.name.split("-")[0]


def speaker_folds(utts: list[Path], k: int) -> list[list[int]]:
    """Indices of `utts` in k groups of whole speakers, balanced by reference word count (largest first)."""
    words: dict[str, int] = {}
    for p in utts:
        words[speaker(p)] = words.get(speaker(p), 0) + len(reference_text(p).split())
    if k > len(words):
        raise SystemExit(f"--speaker-folds {k}: only {len(words)} speakers")
    groups: list[list[str]] = [[] for _ in range(k)]
    load = [0] * k
    for spk in sorted(words, key=lambda s: -words[s]):
        g = load.index(min(load))
        groups[g].append(spk)
        load[g] += words[spk]
    return [[i for i, p in enumerate(utts) if speaker(p) in g] for g in groups]


def pool_folds(red: float, folds: list[dict], index: list[list[int]], refs: list[str], stock_texts: list[str]) -> dict:
    """One result over all utterances from per-fold results (each fold scored only its own speakers)."""
    rows = []
    for j, first in enumerate(folds[0]["rows"]):
        hyps = [""] * len(refs)
        for fold, idx in zip(folds, index):
            for i, h in zip(idx, fold["rows"][j]["hyps"]):
                hyps[i] = h
        per = [f["rows"][j] for f in folds]
        held = [r["held_out"] for r in per if r.get("held_out")]
        rows.append({"minutes": first["minutes"], "steps": "/".join(str(r["steps"]) for r in per),
                     "best_step": "/".join(str(r.get("best_step", 0)) for r in per),
                     "wer": wer(refs, hyps).wer, "hyps": hyps,
                     "held_out": {k: sum(h[k] for h in held) / len(held) for k in ("loss", "agreement")} if held else {},
                     "same_as_stock": sum(a == b for a, b in zip(hyps, stock_texts))})
    return {"reduction": red, "convert_s": sum(f["convert_s"] for f in folds),
            "teacher_s": sum(f["teacher_s"] for f in folds), "stopped": "/".join(str(f["stopped"]) for f in folds),
            "steps": "/".join(str(f["steps"]) for f in folds), "train_s": sum(f["train_s"] for f in folds),
            "rows": rows, "folds": folds}


def run_reduction(red: float, minutes: list[float], train: list[Path], utts: list[Path], refs: list[str],
                  work: Path, options: FinetuneOptions, stock_texts: list[str], tag: str = "",
                  layer_ranks: list[int] | str | None = None) -> dict:
    tag = tag or f"mla{red * 100:g}"
    loaded = resolve_model(None, device="cpu", dtype=torch.float32)
    t0 = time.perf_counter()
    cfg = convert_model(loaded.model, kv_reduction=red, calibration_audio=train, source="tiny.en",
                        rank_allocation=layer_ranks or "uniform")
    convert_s = time.perf_counter() - t0
    student = save_mla_model(loaded.model, cfg, work / tag, tokenizer=loaded.tokenizer,
                             extra_files_from=loaded.folder, dtype=torch.float16)
    progress(f"{tag}: converted in {convert_s:.0f} s")
    rows = []
    w, _, hyps = evaluate(str(student), utts, refs)
    rows.append({"minutes": 0, "steps": 0, "wer": w, "hyps": hyps,
                 "same_as_stock": sum(a == b for a, b in zip(hyps, stock_texts))})
    progress(f"{tag}: before distillation WER {100 * w:.2f}%")
    opt = FinetuneOptions(**{**options.__dict__, "minutes": max(minutes), "steps": None,
                             "snapshot_minutes": tuple(m for m in minutes if m < max(minutes))})
    out = work / f"{tag}-distilled"
    res = distill(student, [str(p) for p in train], out, opt)
    progress(f"{tag}: {res.steps} steps, {res.train_seconds / 60:.1f} min training, teacher pass "
             f"{res.teacher_seconds:.0f} s, stopped: {res.stopped}")
    state = json.loads((res.checkpoint_dir / "state.json").read_text())
    folders = {**res.snapshots, max(minutes): res.out_dir}
    for m in minutes:
        folder = folders.get(m)
        if folder is None:  # the run ended (early stop) before this budget: its result is the same model
            folder = res.out_dir
        rec = json.loads((folder / "mla_config.json").read_text())["training"]
        w, _, hyps = evaluate(str(folder), utts, refs)
        rows.append({"minutes": m, "steps": rec["steps"], "best_step": rec["best_step"], "wer": w, "hyps": hyps,
                     "held_out": rec.get("held_out_final", {}),
                     "same_as_stock": sum(a == b for a, b in zip(hyps, stock_texts))})
        progress(f"{tag}: {m:g} min ({rec['steps']} steps, best at {rec['best_step']}): WER {100 * w:.2f}%")
    return {"reduction": red, "train_files": [p.name for p in train], "convert_s": convert_s,
            "teacher_s": res.teacher_seconds, "stopped": res.stopped, "steps": res.steps, "train_s": res.train_seconds, "evals": state["evals"], "rows": rows,
            "training": res.training}


def print_table(payload: dict) -> None:
    stock = payload["stock_wer"]
    n = payload["utterances"]
    headers = ["KV reduction", "CPU min", "steps (best at)", "held-out KL", "agreement %", "WER %", "vs stock pp",
               f"same text as stock /{n}"]
    table = [["stock", "-", "-", "-", "-", f"{100 * stock:.2f}", "-", f"{n}"]]
    for r in payload["reductions"]:
        for row in r["rows"]:
            ho = row.get("held_out") or {}
            table.append([f"{100 * r['reduction']:g}%", f"{row['minutes']:g}",
                          "0" if not row["steps"] else f"{row['steps']} ({row['best_step']})",
                          f"{ho['loss']:.4f}" if ho else "-", f"{100 * ho['agreement']:.1f}" if ho else "-",
                          f"{100 * row['wer']:.2f}", f"{100 * (row['wer'] - stock):+.2f}", str(row["same_as_stock"])])
    folds = payload.get("speaker_folds")
    trained = (f"{' + '.join(payload['train_files'])} ({payload['train_seconds']:.0f} s)" if not folds else
               f"{' + '.join(payload['train_files'])} + the utterances of the other speaker groups "
               f"(groups {' | '.join(','.join(g) for g in folds)}; each group scored by a model that never heard it; "
               f"steps per group separated by /)")
    print(f"\nWER on {n} LibriSpeech utterances (product Transcriber, greedy) of tiny.en with decoder "
          f"self-attention MLA, before (0 min) and after label-free distillation; trained ONLY on "
          f"{trained}; end of the LJ file (and, among five or more clips, a share of whole clips) held aside "
          f"for early stopping; {payload['threads']} torch thread(s)")
    print(format_table(headers, table))
    for r in payload["reductions"]:
        print(f"{100 * r['reduction']:g}%: convert {r['convert_s']:.0f} s, teacher pass {r['teacher_s']:.0f} s "
              f"(cached; not in the minutes), {r['steps']} steps in {r['train_s'] / 60:.1f} min, "
              f"stopped: {r['stopped']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio-dir", default=None, help="evaluation + training audio (default ../shared/audio)")
    ap.add_argument("--reductions", default="0.75,0.875")
    ap.add_argument("--minutes", default="2,5,10,20", help="training budgets in CPU minutes (snapshots of one run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--work", default=str(BENCH_DIR / "out" / "finetune"), help="model folders go here")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--trainable", default=None)
    ap.add_argument("--augment", type=float, default=None, help="share of training crops perturbed (speed/noise/gain)")
    ap.add_argument("--speaker-folds", type=int, default=0,
                    help="also train on the utterances of other LibriSpeech speakers (K speaker groups; see above)")
    ap.add_argument("--crops", type=int, default=None, help="random training crops (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=None, help="crop plan and training order (default: the recipe's)")
    ap.add_argument("--ema", type=float, default=None, help="judge and keep a moving average of the weights (decay)")
    ap.add_argument("--layer-ranks", default=None, help="e.g. 160/48/48/128: each decoder layer's rank "
                    "(one reduction only; it then labels the run), or auto: the reduction's total shared by "
                    "measured sensitivity on the training audio")
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", nargs="+", default=None, help="print one table from these --json files")
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        merged = {**parts[0], "reductions": [r for p in parts for r in p["reductions"]]}
        for p in parts:
            print_machine(p["machine"], f"Machine ({Path(args.merge[parts.index(p)]).name})")
        print_table(merged)
        return 0
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    audio_dir = resolve_audio_dir(args.audio_dir)
    desc = machine_description({"threads": torch.get_num_threads(), "benchmark": "bench_finetune"})
    print_machine(desc)
    train = [audio_dir / f for f in TRAIN_FILES]
    utts = librispeech_utterances(audio_dir, args.limit)
    assert not {p.name for p in utts} & set(TRAIN_FILES)
    refs = [reference_text(p) for p in utts]
    minutes = [float(m) for m in args.minutes.split(",")]
    over = {k: v for k, v in {"lr": args.lr, "trainable": args.trainable, "augment": args.augment,
                              "crops": args.crops, "seed": args.seed, "ema": args.ema}.items()
            if v is not None}
    options = FinetuneOptions(**over)
    layer_ranks = parse_ranks(args.layer_ranks) if args.layer_ranks else None
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stock_wer, stock_s, stock_texts = evaluate(None, utts, refs)
    progress(f"stock WER {100 * stock_wer:.2f}% ({stock_s:.0f} s)")
    from engine.audio import load_audio

    payload = {"machine": desc, "threads": args.threads, "utterances": len(utts), "stock_wer": stock_wer,
               "train_files": list(TRAIN_FILES),
               "train_seconds": sum(len(load_audio(str(p))) for p in train) / 16000, "options": options.__dict__,
               "reductions": []}
    index = speaker_folds(utts, args.speaker_folds) if args.speaker_folds else []
    if index:
        payload["speaker_folds"] = [sorted({speaker(utts[i]) for i in idx}) for idx in index]
    for red in (float(r) for r in args.reductions.split(",")):
        if not index:
            payload["reductions"].append(run_reduction(red, minutes, train, utts, refs, work, options, stock_texts,
                                                            layer_ranks=layer_ranks))
        else:
            folds = []
            for k, idx in enumerate(index):
                scored = set(idx)
                others = [p for i, p in enumerate(utts) if i not in scored]
                progress(f"fold {k + 1}/{len(index)}: scoring speakers {payload['speaker_folds'][k]}, "
                         f"training on {len(others)} other utterances + {' + '.join(TRAIN_FILES)}")
                folds.append(run_reduction(red, minutes, train + others, [utts[i] for i in idx], [refs[i] for i in idx],
                                           work, options, [stock_texts[i] for i in idx],
                                           tag=f"mla{red * 100:g}-fold{k + 1}", layer_ranks=layer_ranks))
            payload["reductions"].append(pool_folds(red, folds, index, refs, stock_texts))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    print_table(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
