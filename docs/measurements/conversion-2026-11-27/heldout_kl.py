"""Held-out KL of conversion variants: a steadier signal than greedy WER for calibration changes.

Stock transcribes the 36 LibriSpeech utterances and the concat's windows (greedy, the same
plain / timestamped / conditioned teacher-forced sequences the calibration uses); each
variant is converted on LJ Speech + JFK (or the sample) and scored by the mean KL(stock ||
variant) per position (stock's top 32 tokens + a bucket for the rest, as rank_split does).

    python docs/measurements/conversion-2026-11-27/heldout_kl.py 0.875,cal=ljjfk 0.875,cal=ljjfk,attw=1 ...
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_conversion import JFK, parse_variant  # noqa: E402
from engine.mla import convert_model  # noqa: E402
from engine.mla.calibrate import collect_moments, features_for_files  # noqa: E402
from engine.mla.rank_split import _StockReference  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"


def main(variants: list[str]) -> None:
    torch.set_num_threads(2)
    stock = resolve_model(None, device="cpu", dtype=torch.float32).model.eval()
    utterances = sorted(p for p in AUDIO.glob("[0-9]*-*") if p.suffix in (".flac", ".wav"))
    feats = features_for_files(utterances + [AUDIO / "longform_librispeech_concat.flac"])
    seqs = []
    collect_moments(stock, feats, ("decoder-self",), keep_sequences=seqs)
    with torch.inference_mode():
        ref = _StockReference(stock, seqs, 32)
    print(f"{len(seqs)} held-out sequences, {sum(len(s.tokens) for s in seqs)} positions", flush=True)
    lj = AUDIO / "longform_ljspeech_LJ001-0001_to_0032.flac"
    for text in variants:
        spec = parse_variant(text)
        model = copy.deepcopy(stock)
        t0 = time.perf_counter()
        convert_model(model, kv_reduction=spec["reduction"], init=spec["init"],
                      calibration_audio=None if spec["cal"] == "sample" else [lj, AUDIO / JFK],
                      compensate=spec["compensate"], attention_mix=spec["attw"],
                      key_scale=spec["kscale"], eps=spec["eps"], rank_allocation=spec["ranks"])
        with torch.inference_mode():
            kl = ref.kl(model.eval())
        print(f"{text}: held-out KL {kl:.5f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
