"""How far each cache mode moves the decoder's next-token distribution, with no cascade (issue 21).

A long-form transcript is chaotic: one flipped near-tie early in a window changes the prompt
of every later window, so "words that differ from stock" is one random draw per run (stock
bf16 itself moved 8.55% of the LibriSpeech concatenation's words in one session and 3.29% in
another). This measures the perturbation itself: stock fp32's own greedy tokens are fed to
every mode step by step through its real cache, and at every step the mode's distribution is
compared with stock fp32's: mean KL divergence, the share of steps whose top token differs,
and the median change of the top token's log-probability.

    python bench/bench_latent_fidelity.py [--audio DIR] [--threads 2] [--mla DIR] [--limit N]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from common import format_table, librispeech_utterances, machine_description, print_machine, resolve_audio_dir
from engine.audio import load_audio
from engine.features import log_mel
from engine.kv_cache import new_cache
from engine.model_sources import resolve_model

MAX_TOKENS = 224


def window_features(loaded, audio) -> torch.Tensor:
    """(1, n_mels, 3000): the utterance padded to one 30 s window."""
    return log_mel(audio, loaded.n_mels)


@torch.inference_mode()
def stock_tokens(loaded, feats: torch.Tensor) -> list[int]:
    """Stock fp32's greedy tokens for one window (no timestamps), prompt first."""
    s = loaded.settings
    tokens = s.sot_sequence(None) + [s.no_timestamps]
    model = loaded.model
    enc = model.model.encoder(feats).last_hidden_state
    cache = new_cache()
    step = torch.tensor([tokens])
    for _ in range(MAX_TOKENS):
        hidden = model.model.decoder(input_ids=step, encoder_hidden_states=enc, cache=cache,
                                     use_cache=True).last_hidden_state
        nxt = int(model.proj_out(hidden[:, -1]).argmax(-1))
        tokens.append(nxt)
        if nxt == s.eot:
            break
        step = torch.tensor([[nxt]])
    return tokens


@torch.inference_mode()
def forced_logprobs(loaded, feats: torch.Tensor, tokens: list[int], prompt: int) -> torch.Tensor:
    """(steps, vocab) fp32 log-probabilities after each forced token, through the mode's own cache."""
    model = loaded.model
    enc = model.model.encoder(feats.to(loaded.dtype)).last_hidden_state
    cache = new_cache()
    out = []
    step = torch.tensor([tokens[:prompt]])
    for i in range(prompt, len(tokens)):
        hidden = model.model.decoder(input_ids=step, encoder_hidden_states=enc, cache=cache,
                                     use_cache=True).last_hidden_state
        out.append(torch.log_softmax(model.proj_out(hidden[:, -1]).float(), -1)[0])
        step = torch.tensor([[tokens[i]]])
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N utterances (default: all 36)")
    ap.add_argument("--mla", default=None, metavar="DIR", help="also a converted folder, unrounded and in 8 bits")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    audio_dir = resolve_audio_dir(args.audio)
    print_machine(machine_description({"threads": args.threads}), "bench_latent_fidelity")
    modes = {"stock fp32": ("stock", torch.float32, None), "stock bf16": ("stock", torch.bfloat16, None),
             "exact": ("exact", torch.float32, None), "compressed": ("compressed", torch.float32, None)}
    if args.mla:
        modes.update({"mla": ("exact", torch.float32, args.mla), "mla int8": ("compressed", torch.float32, args.mla)})
    models = {name: resolve_model(spec, "cpu", dtype, kv_cache=kv) for name, (kv, dtype, spec) in modes.items()}
    base = models["stock fp32"]
    prompt = len(base.settings.sot_sequence(None)) + 1
    stats = {name: {"kl": [], "flip": [], "dlp": []} for name in models if name != "stock fp32"}
    files = librispeech_utterances(audio_dir, args.limit)
    for f in files:
        feats = window_features(base, load_audio(f))
        tokens = stock_tokens(base, feats)
        ref = forced_logprobs(base, feats, tokens, prompt)
        top = ref.argmax(-1)
        for name, st in stats.items():
            lp = forced_logprobs(models[name], feats, tokens, prompt)
            st["kl"].append(float((ref.exp() * (ref - lp)).sum(-1).mean()))
            st["flip"].extend((lp.argmax(-1) != top).tolist())
            st["dlp"].extend((lp.gather(1, top[:, None]) - ref.gather(1, top[:, None])).abs().squeeze(1).tolist())
    rows = []
    for name, st in stats.items():
        rows.append([name, f"{statistics.mean(st['kl']):.2e}", f"{100 * statistics.mean(st['flip']):.2f}%",
                     f"{statistics.median(st['dlp']):.2e}", f"{max(st['dlp']):.2e}"])
    print(f"{len(files)} utterances, {len(stats['exact']['flip'])} forced steps (stock fp32's greedy tokens)\n")
    print(format_table(["mode", "mean KL to stock fp32", "top token differs", "median |d logp(top)|",
                        "max |d logp(top)|"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
