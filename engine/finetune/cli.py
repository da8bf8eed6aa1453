"""`whisper-mla finetune`: recover accuracy of a Whisper-MLA folder on your own audio.

    whisper-mla finetune --model MLA_DIR --audio talk1.flac talk2.mp3 (or a folder) --minutes 20 --out DIR
    whisper-mla finetune --model MLA_DIR --audio FOLDER --labels --steps 500 --out DIR
        [--teacher SPEC] [--trainable mla|decoder|all] [--lr 3e-4] [--runs K] [--resume] [--device cpu|cuda|auto]

Without --labels the stock model (the folder's recorded source, or --teacher) transcribes
the audio and the MLA model learns to match it (no transcripts needed). With --labels,
--audio is a folder of audio files with same-stem .txt transcripts.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from engine import cli_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="recover MLA accuracy by distillation from the stock model (or on transcripts)",
                       description="Fine-tune a Whisper-MLA folder: label-free distillation from the stock model "
                                   "on your audio (default), or supervised on audio + .txt pairs (--labels).")
    p.add_argument("--model", required=True, help="Whisper-MLA folder to fine-tune (from whisper-mla convert)")
    p.add_argument("--teacher", default=None, help="stock model spec (default: the source recorded in the folder)")
    p.add_argument("--audio", nargs="+", required=True, metavar="PATH",
                   help="audio files or folders for distillation; with --labels one folder of audio + same-stem .txt")
    p.add_argument("--labels", action="store_true", help="supervised: --audio is a folder with transcripts")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=cli_args.int_in(1), default=None, help="optimizer steps (default 300)")
    budget.add_argument("--minutes", type=cli_args.float_in(0, lo_open=True), default=None, help="training time budget in minutes")
    p.add_argument("--trainable", choices=("mla", "decoder", "all"), default="mla",
                   help="mla: only the latent projections (default); decoder; all (encoder too, slow)")
    p.add_argument("--lr", type=cli_args.float_in(0, 1, lo_open=True), default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--batch", type=cli_args.int_in(1, 4096), default=8, help="crops per optimizer step")
    p.add_argument("--micro-batch", type=cli_args.int_in(1, 4096), default=None,
                   help="crops per forward pass (gradient accumulation; default: 4, or --batch if smaller)")
    p.add_argument("--crops", type=cli_args.int_in(1), default=None, help="random training crops cut from the audio")
    p.add_argument("--augment", type=cli_args.float_in(0, 1), default=None, help="share of crops perturbed (speed/noise/gain)")
    p.add_argument("--attention-weight", type=cli_args.float_in(0), default=None, help="weight of layer-wise attention matching")
    p.add_argument("--ema", type=cli_args.float_in(0, 1, hi_open=True), default=None,
                   help="keep and judge a moving average of the weights with this decay (e.g. 0.98; 0: off)")
    p.add_argument("--runs", type=cli_args.int_in(1, 64), default=1, metavar="K",
                   help="split the budget into K shorter runs (own crops and order each) and average their "
                        "weights: a steadier result from little audio (README)")
    p.add_argument("--checkpoint-every", type=cli_args.int_in(1), default=None, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this run")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=cli_args.int_in(1, 1024), default=None, help="CPU threads (torch)")
    p.add_argument("--save-dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--out", required=True, help="output model folder (checkpoints go to OUT.finetune)")
    p.set_defaults(func=run)


def _printer():
    last = {"t": 0.0}

    def show(pr) -> None:
        now = time.monotonic()
        if pr.phase == "train" and now - last["t"] < 2.0:
            return
        last["t"] = now
        if pr.phase == "teacher":
            msg = f"teacher: {pr.step}/{pr.total_steps} crops"
        else:
            total = f"/{pr.total_steps}" if pr.total_steps else ""
            parts = [f"{pr.phase} step {pr.step}{total}"]
            if pr.loss is not None:
                parts.append(f"loss {pr.loss:.4f}")
            if pr.held_out is not None:
                parts.append(f"held-out {pr.held_out:.4f}")
            if pr.agreement is not None:
                parts.append(f"agreement {100 * pr.agreement:.1f}%")
            if pr.eta_s is not None and pr.phase == "train":
                parts.append(f"ETA {pr.eta_s / 60:.1f} min")
            msg = ", ".join(parts)
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    return show


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from engine.finetune.data import LabelledFolderError
    from engine.finetune.trainer import FinetuneOptions, finetune
    from engine.media_files import MediaInputError, recordings
    from engine.model_sources import ModelSourceError

    if args.micro_batch is None:
        args.micro_batch = min(4, args.batch)
    elif args.micro_batch > args.batch:
        sys.stderr.write(f"error: --micro-batch {args.micro_batch} is larger than --batch {args.batch} "
                         f"(crops per forward pass must not exceed crops per step)\n")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {k: v for k, v in {"lr": args.lr, "crops": args.crops, "augment": args.augment,
                              "attention_weight": args.attention_weight, "ema": args.ema,
                              "checkpoint_every": args.checkpoint_every}.items() if v is not None}
    try:
        opt = dataclasses.replace(FinetuneOptions(), steps=args.steps, minutes=args.minutes, trainable=args.trainable,
                                  batch_crops=args.batch, micro_batch=args.micro_batch, device=args.device,
                                  save_dtype=args.save_dtype, **over)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    from engine.mla.storage import check_model_out

    try:
        check_model_out(args.out)  # before any work: a folder of the user's is never emptied
    except OSError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.labels:
        if len(args.audio) != 1 or not Path(args.audio[0]).is_dir():
            sys.stderr.write("error: with --labels, --audio takes one folder of audio + same-stem .txt files\n")
            return 2
        data = {"labelled_dir": args.audio[0]}
    else:
        try:
            data = {"audio": recordings(args.audio)}
        except MediaInputError as e:
            sys.stderr.write(f"error: {e}\n")
            return 1
    if args.runs < 1:
        sys.stderr.write("error: --runs must be at least 1\n")
        return 2
    soup = args.runs > 1
    try:
        if soup:
            from engine.finetune.soup import finetune_soup

            res = finetune_soup(args.model, args.out, runs=args.runs, options=opt, progress=_printer(),
                                resume=args.resume, on_member=lambda i, k: sys.stderr.write(f"run {i + 1}/{k}\n"),
                                teacher=args.teacher, **data)
        else:
            res = finetune(args.model, args.out, teacher=args.teacher, options=opt, progress=_printer(),
                           resume=args.resume, **data)
    except KeyboardInterrupt:
        kept = (f"finished runs kept in {args.out}.run*, the current one checkpointed" if soup else
                f"checkpoint saved in {args.out}.finetune, best weights so far in {args.out}")
        sys.stderr.write(f"interrupted: {kept} (continue with --resume)\n")
        return 130
    except (LabelledFolderError, ModelSourceError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    if soup:
        if res.out_dir is None:
            sys.stderr.write("cancelled before every run finished (continue with --resume)\n")
            return 130
        sys.stdout.write(f"{res.out_dir}: average of {len(res.member_dirs)} runs, {res.train_seconds / 60:.1f} min "
                         f"of training in all\n")
        return 0
    b, i = res.best, res.initial
    key = "wer" if "wer" in b else "loss"
    summary = f"{res.out_dir}: {res.steps} steps in {res.train_seconds / 60:.1f} min ({res.stopped})"
    if b and i:
        summary += f"; held-out {key} {i.get(key, float('nan')):.4f} -> {b[key]:.4f} (best at step {res.best_step})"
        if "agreement" in b:
            summary += f", agreement {100 * i['agreement']:.1f}% -> {100 * b['agreement']:.1f}%"
    sys.stdout.write(summary + "\n")
    return 0
