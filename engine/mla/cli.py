"""`whisper-mla convert`: turn a Whisper model into a Whisper-MLA folder.

    whisper-mla convert [--model SPEC] (--kv-reduction 0.75 | --rank R | --layer-ranks R1,R2,..)
        [--layer-ranks auto]
        [--modules decoder-self[,cross,encoder-self] | none] [--init svd|calibrated]
        [--calibrate AUDIO ...] [--no-compensate] [--keep-key-dims N [--key-selection norm|uniform]]
        [--exact-cross] [--device cpu|cuda|auto]
        [--save-dtype float16|bfloat16|float32] --out DIR
"""
from __future__ import annotations

import argparse
import logging
import sys

from engine import cli_args
from engine.media_files import MediaInputError, recordings
from engine.mla.config import MODULE_KINDS

log = logging.getLogger(__name__)


def _modules(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in MODULE_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown module kind(s) {', '.join(bad)}; choose from {', '.join(MODULE_KINDS)}")
    return kinds


def parse_ranks(text: str) -> list[int] | str:
    """Per-layer ranks from "160,48,48,128" (or with /), "auto" -> "sensitivity" (measured split) or "uniform".

    For --layer-ranks and the benchmarks; the result is `convert_model`'s `rank_allocation`.
    """
    if text.strip().lower() in ("auto", "sensitivity"):
        return "sensitivity"
    if text.strip().lower() == "uniform":
        return "uniform"
    try:
        ranks = [int(x) for x in text.replace("/", ",").split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of ranks: {text!r} (e.g. 160,48,48,128)") from None
    if not ranks or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"ranks must be positive integers: {text!r}")
    return ranks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a model's attention to MLA (compressed KV cache)",
                       description="Convert Whisper attention to Multi-Head Latent Attention and save a model folder.")
    p.add_argument("--model", default=None, help="bundled name, model folder or hub id (default tiny.en)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--kv-reduction", type=cli_args.float_in(0, 1, lo_open=True, hi_open=True), default=None,
                      help="fraction of the KV cache removed: 0.75 -> rank d/2, 0.875 -> rank d/4")
    size.add_argument("--rank", type=cli_args.int_in(1), default=None, help="latent rank r per token and layer")
    p.add_argument("--layer-ranks", type=parse_ranks, default=None, metavar="R1,R2,...|auto|uniform",
                   help="each decoder layer's rank (e.g. 160,48,48,128); or, with --kv-reduction/--rank, 'auto': "
                        "share that total between the decoder layers by their measured sensitivity on the "
                        "calibration audio, or 'uniform'. Default: auto from 85%% reduction on (calibrated "
                        "decoder self-attention), uniform below (README)")
    p.add_argument("--modules", type=_modules, default=("decoder-self",),
                   help="comma-separated: decoder-self (default), cross, encoder-self; or none")
    p.add_argument("--init", choices=("svd", "calibrated"), default="calibrated",
                   help="weight SVD or activation-calibrated SVD (default; far more accurate)")
    p.add_argument("--calibrate", nargs="+", default=None, metavar="AUDIO",
                   help="audio files or folders for calibration (default: the bundled sample recording)")
    p.add_argument("--no-compensate", dest="compensate", action="store_false",
                   help="calibrate every decoder layer on stock inputs instead of fitting each one behind "
                        "the layers already converted (the default; far better at 87.5%%)")
    p.add_argument("--keep-key-dims", type=cli_args.int_in(0), default=0, metavar="N",
                   help="the paper's layout: cache N key dimensions per head exactly, the rest of the rank "
                        "as a joint latent (same cache size)")
    p.add_argument("--key-selection", choices=("norm", "uniform"), default="norm",
                   help="which key dimensions --keep-key-dims keeps: largest query-key 2-norm (default) or evenly spaced")
    p.add_argument("--exact-cross", action="store_true",
                   help="exact cache-free cross-attention (no approximation; saves the cross K/V cache)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--save-dtype", default="float16", choices=("float16", "bfloat16", "float32"),
                   help="weight type on disk (default float16, like the bundled models)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.mla.convert import convert_model
    from engine.mla.storage import check_model_out, save_mla_model
    from engine.model_sources import ModelSourceError, resolve_model

    modules = tuple(args.modules)
    budget_given = args.kv_reduction is not None or args.rank is not None
    if modules and not budget_given and not isinstance(args.layer_ranks, list):
        sys.stderr.write("error: give --kv-reduction, --rank or --layer-ranks R1,R2,.. (--layer-ranks auto also "
                         "needs --kv-reduction or --rank; or --modules none --exact-cross)\n")
        return 2
    if isinstance(args.layer_ranks, list) and budget_given:
        sys.stderr.write("error: --layer-ranks R1,R2,.. sets the ranks itself; drop --kv-reduction/--rank "
                         "(or use --layer-ranks auto to share their total by measured sensitivity)\n")
        return 2
    if not modules and not args.exact_cross:
        sys.stderr.write("error: nothing to convert (--modules none without --exact-cross)\n")
        return 2
    try:
        check_model_out(args.out)  # before any work: a folder of the user's is never emptied
    except OSError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    try:
        calib = recordings(args.calibrate) if args.calibrate else None
    except MediaInputError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    try:
        loaded = resolve_model(args.model, device=args.device, dtype=torch.float32)
    except ModelSourceError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    if getattr(loaded.model, "mla_config", None) is not None:
        sys.stderr.write(f"error: {args.model} is already an MLA model\n")
        return 2
    d = int(loaded.model.config.d_model)
    asked = [args.rank] if args.rank is not None else (args.layer_ranks if isinstance(args.layer_ranks, list) else [])
    if any(r > d for r in asked):
        sys.stderr.write(f"error: rank {max(asked)} is above {loaded.info.name}'s width d_model={d}: a latent that "
                         f"large saves nothing; use at most {d} (rank {d} is exact: the default compressed cache)\n")
        return 2
    try:
        cfg = convert_model(loaded.model, rank=args.rank, kv_reduction=args.kv_reduction, modules=modules,
                            init=args.init, exact_cross=args.exact_cross, calibration_audio=calib,
                            source=loaded.info.source, compensate=args.compensate,
                            keep_key_dims=args.keep_key_dims, key_selection=args.key_selection,
                            rank_allocation=args.layer_ranks or "auto")
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    try:
        out = save_mla_model(loaded.model, cfg, args.out, tokenizer=loaded.tokenizer, extra_files_from=loaded.folder,
                             dtype=getattr(torch, args.save_dtype))
    except OSError as e:
        sys.stderr.write(f"error: {args.out}: the model was not saved ({e.strerror or e}); nothing was left there\n")
        return 1
    sys.stdout.write(f"{out}: {cfg.describe(loaded.model.config.d_model)}\n")
    return 0
