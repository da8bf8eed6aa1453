"""How far stock Whisper's own transcript of a long recording moves under changes that are not MLA.

Issue 5 asks a 75% MLA transcript of the LibriSpeech concat to differ from stock's by at
most 3% of words. This measures the yardstick: stock tiny.en (fp32, greedy, the product's
long-form loop) against itself in bfloat16 (what a GPU user runs), with the exact
cache-free cross-attention (same algebra, other rounding), and with batched windows.

    python docs/measurements/conversion-2026-11-27/stock_noise_floor.py [AUDIO] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import reference_text, wer  # noqa: E402
from engine.mla import convert_model  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402
from engine.transcribe import Transcriber, TranscribeOptions  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio" / "longform_librispeech_concat.flac"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("audio", nargs="?", default=str(AUDIO))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = reference_text(Path(args.audio))
    stock = resolve_model(None, device="cpu", dtype=torch.float32)
    base = Transcriber(stock, TranscribeOptions()).transcribe(args.audio).text
    print(f"stock fp32: WER {100 * wer([ref], [base]).wer:.2f}% against the reference", flush=True)
    cross = copy.deepcopy(stock.model)
    convert_model(cross, modules=(), exact_cross=True)
    runs = {
        "stock bf16": (resolve_model(None, device="cpu", dtype=torch.bfloat16), TranscribeOptions()),
        "stock, exact cross-attention": (dataclasses.replace(stock, model=cross), TranscribeOptions()),
        "stock fp32, 4 windows at once": (stock, TranscribeOptions(batch_size=4)),
    }
    for name, (loaded, options) in runs.items():
        text = Transcriber(loaded, options).transcribe(args.audio).text
        print(f"{name}: {100 * wer([base], [text]).wer:.2f}% of words differ from stock fp32 "
              f"({100 * wer([ref], [text]).wer:.2f}% WER against the reference)", flush=True)


if __name__ == "__main__":
    main()
