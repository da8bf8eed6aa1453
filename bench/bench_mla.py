"""Whisper-MLA benchmark: KV-cache bytes, WER and decode speed of stock vs MLA variants.

For each variant (stock; exact cross-attention; decoder self-attention MLA at 50 / 75 / 87.5 %
KV reduction with weight-SVD or calibrated init; 87.5 % calibrated + exact cross):

* KV-cache bytes at the end of one 30 s speech window (the first 30 s of the LibriSpeech
  long-form file), summed from the cache tensors, with one row and with 5 beams (cache
  reordered every step), every variant fed stock's transcript of the window so that all
  hold the same number of tokens;
* WER over the LibriSpeech utterances of ../shared/audio (greedy, one utterance per window,
  no timestamps; Whisper's English normaliser + jiwer), and how many transcripts are
  identical to stock's;
* decode speed relative to stock, measured in the same run: a fixed number of decoder steps
  on the same window, batch 1 and batch 5, variants interleaved and repeated, CPU time of
  this process (robust to other processes sharing the cores), best of the repeats.

    python bench/bench_mla.py [--limit N] [--calibrate AUDIO ...] [--json bench/out/mla.json]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (DEFAULT_AUDIO_DIR, LONGFORM_FILES, format_table, librispeech_utterances, machine_description,
                    print_machine, reference_text, resolve_audio_dir, wer)

import torch  # noqa: E402  (after common, which puts the repo on sys.path)

from engine.mla.calibrate import DEFAULT_CALIBRATION, features_for_files  # noqa: E402
from engine.mla.convert import convert_model  # noqa: E402
from engine.mla.cross import shares_encoder_output  # noqa: E402
from engine.mla.cache_slots import kv_cache_bytes  # noqa: E402
from engine.mla.decode import decode_prompt, greedy_decode, new_cache  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402
from engine.results import KVCacheBytes  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    kv_reduction: float | None = None
    init: str = "calibrated"
    exact_cross: bool = False

    @property
    def modules(self) -> tuple[str, ...]:
        return ("decoder-self",) if self.kv_reduction is not None else ()


VARIANTS = [
    Variant("stock"),
    Variant("exact-cross", exact_cross=True),
    *[Variant(f"mla{int(red * 1000) / 10:g}-{init}", red, init) for red in (0.5, 0.75, 0.875) for init in ("svd", "calibrated")],
    Variant("mla87.5-calibrated+exact-cross", 0.875, "calibrated", exact_cross=True),
]


@dataclass
class Row:
    variant: str
    kv_greedy: KVCacheBytes = KVCacheBytes()  # one row
    kv_beam5: KVCacheBytes = KVCacheBytes()
    wer: float = float("nan")
    same_as_stock: int = 0
    utterances: int = 0
    wer_decode_s: float = 0.0
    ms_step_b1: float = float("nan")
    ms_step_b5: float = float("nan")
    enc_bytes_b5: int = 0  # encoder output held for beam 5: repeated per beam for stock cross-attention
    longform_wer: dict[str, float] = field(default_factory=dict)  # file -> WER of the product's long-form loop
    longform_wall_s: dict[str, float] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)

    @property
    def state_b5(self) -> int:
        """The decoder's attention state at beam 5: both caches plus the encoder output it reads."""
        return self.kv_beam5.total + self.enc_bytes_b5


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(stock, v: Variant, calib_features: torch.Tensor | None, calib_names: list[str]):
    if v.name == "stock":
        return stock
    model = copy.deepcopy(stock)
    convert_model(model, kv_reduction=v.kv_reduction, modules=v.modules, init=v.init, exact_cross=v.exact_cross,
                  calibration_features=calib_features if v.init == "calibrated" else None)
    model.mla_config.calibration_audio = calib_names
    return model


@torch.inference_mode()
def forced_kv_bytes(model, enc: torch.Tensor, tokens: list[int], beams: int) -> KVCacheBytes:
    """Cache bytes after decoding `tokens` (stock's transcript of the window) step by step.

    Every variant decodes the same number of tokens, so the bytes compare like for like;
    with beams > 1 the rows are reordered every step as beam search does.
    """
    prompt = decode_prompt(model)
    e = enc if shares_encoder_output(model) else enc.repeat_interleave(beams, 0)
    cache = new_cache()
    order = torch.arange(beams).roll(1)
    ids = torch.tensor([prompt] * beams)
    for t in [None, *tokens]:
        if t is not None:
            ids = torch.full((beams, 1), t)
        model.model.decoder(input_ids=ids, encoder_hidden_states=e, cache=cache, use_cache=True)
        if beams > 1:
            cache.reorder_cache(order)
    return kv_cache_bytes(cache)


@torch.inference_mode()
def transcribe_all(model, tokenizer, feats: list[torch.Tensor]) -> tuple[list[str], float]:
    texts, decode_s = [], 0.0
    for f in feats:
        t0 = time.perf_counter()
        res = greedy_decode(model, f)
        decode_s += time.perf_counter() - t0
        texts.append(tokenizer.decode(res.tokens[0], skip_special_tokens=True).strip())
    return texts, decode_s


@torch.inference_mode()
def step_times(models: dict[str, torch.nn.Module], enc: torch.Tensor, batch: int, steps: int, reps: int) -> dict[str, float]:
    """Best-of-`reps` CPU ms per decoder step (decoder layers + output projection), interleaved.

    With batch > 1 the rows are beams of one window: the cache is reordered every step as
    beam search does (stock then copies its cross-attention K/V too).
    """
    best = {k: float("inf") for k in models}
    repeated = enc.repeat_interleave(batch, 0)
    prompt = decode_prompt(next(iter(models.values())))
    for _ in range(reps):
        for name, model in models.items():
            e = enc if shares_encoder_output(model) else repeated  # exact cross: no copies per beam
            cache = new_cache()
            ids = torch.tensor([prompt] * batch)
            out = model.model.decoder(input_ids=ids, encoder_hidden_states=e, cache=cache, use_cache=True)
            ids = model.proj_out(out.last_hidden_state[:, -1]).argmax(-1)[:, None]
            order = torch.arange(batch).roll(1)  # beam search reorders the cache every step
            t0 = time.process_time()
            for _ in range(steps):
                out = model.model.decoder(input_ids=ids, encoder_hidden_states=e, cache=cache, use_cache=True)
                ids = model.proj_out(out.last_hidden_state[:, -1]).argmax(-1)[:, None]
                if batch > 1:
                    cache.reorder_cache(order)
            best[name] = min(best[name], (time.process_time() - t0) * 1000 / steps)
    return best


def longform_wers(loaded, model, audio_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """WER and wall of the product's long-form loop (`Transcriber`, CLI defaults) on both long files."""
    from engine.transcribe import Transcriber

    variant = dataclasses.replace(loaded, model=model)
    wers, walls = {}, {}
    for key, name in LONGFORM_FILES.items():
        path = audio_dir / name
        t0 = time.perf_counter()
        text = Transcriber(variant).transcribe(path).text
        walls[key] = time.perf_counter() - t0
        wers[key] = wer([reference_text(path)], [text]).wer
    return wers, walls


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model spec (default: bundled tiny.en)")
    ap.add_argument("--audio-dir", default=None, help=f"evaluation audio (default {DEFAULT_AUDIO_DIR})")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--calibrate", nargs="+", default=None, help="calibration audio (default: the bundled sample)")
    ap.add_argument("--variants", default=None, help="comma-separated subset of: " + ",".join(v.name for v in VARIANTS))
    ap.add_argument("--steps", type=int, default=96, help="decoder steps per speed measurement")
    ap.add_argument("--reps", type=int, default=5, help="speed repeats (best of)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--speed-threads", type=int, default=1,
                    help="torch threads while timing decoder steps (1: CPU time is not inflated by spinning)")
    ap.add_argument("--longform", default="",
                    help="comma-separated variants that also transcribe both long-form files with the product's "
                         "long-form loop (minutes each on a CPU), or 'all'")
    ap.add_argument("--json", default=None, help="write all numbers (and transcripts) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    audio_dir = resolve_audio_dir(args.audio_dir)
    variants = VARIANTS
    if args.variants:
        wanted = set(args.variants.split(","))
        variants = [v for v in VARIANTS if v.name in wanted or v.name == "stock"]
    desc = machine_description({"threads": torch.get_num_threads(), "benchmark": "bench_mla"})
    print_machine(desc)

    loaded = resolve_model(args.model, device="cpu", dtype=torch.float32)
    stock, tok, d = loaded.model, loaded.tokenizer, loaded.model.config.d_model
    n_mels = stock.config.num_mel_bins
    utts = librispeech_utterances(audio_dir, args.limit)
    refs = [reference_text(p) for p in utts]
    feats = [features_for_files([p], n_mels=n_mels)[:1] for p in utts]
    window = features_for_files([audio_dir / LONGFORM_FILES["librispeech_long"]], n_mels=n_mels)[:1]
    calib_paths = [Path(p) for p in (args.calibrate or [DEFAULT_CALIBRATION])]
    calib = features_for_files(calib_paths, n_mels=n_mels)
    calib_names = [p.name for p in calib_paths]
    progress(f"{len(utts)} utterances, calibration: {', '.join(calib_names)} ({calib.shape[0]} windows)")

    with torch.inference_mode():
        enc = stock.model.encoder(window).last_hidden_state
    window_tokens = greedy_decode(stock, window, encoder_output=enc).tokens[0]
    rows: dict[str, Row] = {}
    models: dict[str, torch.nn.Module] = {}
    for v in variants:
        t0 = time.perf_counter()
        model = build(stock, v, calib, calib_names)
        models[v.name] = model
        row = Row(v.name)
        row.kv_greedy = forced_kv_bytes(model, enc, window_tokens, 1)
        row.kv_beam5 = forced_kv_bytes(model, enc, window_tokens, 5)
        row.texts, row.wer_decode_s = transcribe_all(model, tok, feats)
        row.wer = wer(refs, row.texts).wer
        row.utterances = len(utts)
        row.enc_bytes_b5 = enc.numel() * enc.element_size() * (1 if shares_encoder_output(model) else 5)
        if args.longform == "all" or v.name in args.longform.split(","):
            row.longform_wer, row.longform_wall_s = longform_wers(loaded, model, audio_dir)
        rows[v.name] = row
        progress(f"{v.name}: WER {100 * row.wer:.2f}% ({time.perf_counter() - t0:.0f} s)")
    for row in rows.values():
        row.same_as_stock = sum(a == b for a, b in zip(row.texts, rows["stock"].texts))

    progress("decode speed ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.speed_threads)
    for batch, attr in ((1, "ms_step_b1"), (5, "ms_step_b5")):
        for name, ms in step_times(models, enc, batch, args.steps, args.reps).items():
            setattr(rows[name], attr, ms)
    torch.set_num_threads(threads)

    s = rows["stock"]
    headers = ["variant", "self KiB b1", "cross KiB b1", "self vs stock", "self MiB b5", "cross MiB b5",
               "total b5 vs stock", "state b5 vs stock", "WER %", "same text", "ms/step b1", "speed b1", "ms/step b5", "speed b5"]
    table = []
    for r in rows.values():
        table.append([r.variant, f"{r.kv_greedy.self_attn / 1024:.1f}", f"{r.kv_greedy.cross_attn / 1024:.0f}",
                      f"{r.kv_greedy.self_attn / max(1, s.kv_greedy.self_attn):.4f}",
                      mib(r.kv_beam5.self_attn), mib(r.kv_beam5.cross_attn),
                      f"{100 * r.kv_beam5.total / max(1, s.kv_beam5.total):.2f}%",
                      f"{100 * r.state_b5 / max(1, s.state_b5):.2f}%",
                      f"{100 * r.wer:.2f}", f"{r.same_as_stock}/{r.utterances}",
                      f"{r.ms_step_b1:.2f}", f"{s.ms_step_b1 / r.ms_step_b1:.3f}x",
                      f"{r.ms_step_b5:.2f}", f"{s.ms_step_b5 / r.ms_step_b5:.3f}x"])
    print(f"\nWhisper-MLA on {loaded.info.name} (d={d}), {len(utts)} LibriSpeech utterances, greedy; "
          f"KV after the {len(window_tokens)} tokens of a 30 s window (b1 = one row, b5 = beam 5); decoder-step CPU time with "
          f"{args.speed_threads} thread(s), {args.steps} steps, best of {args.reps}, stock/variant = speed")
    print(format_table(headers, table))
    long_rows = [r for r in rows.values() if r.longform_wer]
    if long_rows:
        print("\nLong-form files through the product's loop (Transcriber, CLI defaults: greedy + fallback, "
              "timestamps, previous-text conditioning); WER %, wall s")
        print(format_table(["variant", *[f"{k} WER %" for k in LONGFORM_FILES], *[f"{k} wall s" for k in LONGFORM_FILES]],
                           [[r.variant, *[f"{100 * r.longform_wer[k]:.2f}" for k in LONGFORM_FILES],
                             *[f"{r.longform_wall_s[k]:.1f}" for k in LONGFORM_FILES]] for r in long_rows]))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": desc, "calibration": calib_names,
                   "rows": [{**dataclasses.asdict(r), "state_b5": r.state_b5, "kv_greedy": r.kv_greedy.to_dict(),
                             "kv_beam5": r.kv_beam5.to_dict()} for r in rows.values()]}
        out.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
