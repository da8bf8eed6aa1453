"""A minimal greedy decoder over the HF modules, the way the long-form transcriber drives them.

Used for calibration (the model's own transcript of the calibration audio), by the tests
and by the benchmark. It calls exactly what `engine/transcribe.py` calls:
`model.model.encoder`, `model.model.decoder(..., cache=cache, use_cache=True)`
with an `EncoderDecoderCache(DynamicCache(), DynamicCache())`, and `model.proj_out`, so
the MLA modules are exercised on the production path.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from engine.mla.cache_slots import kv_cache_bytes
from engine.results import KVCacheBytes


@dataclass
class GreedyResult:
    tokens: list[list[int]]  # generated ids per row, prompt and end-of-text excluded
    kv: KVCacheBytes = KVCacheBytes()  # cache bytes at the end of decoding
    step_logits: list[torch.Tensor] = field(default_factory=list)  # (batch, vocab) per step, if kept


def decode_prompt(model, language: str = "en") -> list[int]:
    """Start-of-transcript prompt: <|startoftranscript|> [lang task] <|notimestamps|> when known."""
    gen = getattr(model, "generation_config", None)
    prompt = [int(model.config.decoder_start_token_id)]
    if gen is not None and getattr(gen, "is_multilingual", False):
        lang_id = (getattr(gen, "lang_to_id", None) or {}).get(f"<|{language}|>")
        task_id = (getattr(gen, "task_to_id", None) or {}).get("transcribe")
        prompt += [int(t) for t in (lang_id, task_id) if t is not None]
    no_ts = getattr(gen, "no_timestamps_token_id", None) if gen is not None else None
    if no_ts is not None:
        prompt.append(int(no_ts))
    return prompt


def new_cache() -> EncoderDecoderCache:
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


@torch.inference_mode()
def greedy_decode(
    model,
    features: torch.Tensor,
    prompt: list[int] | None = None,
    max_new_tokens: int = 224,
    keep_logits: bool = False,
    encoder_output: torch.Tensor | None = None,
) -> GreedyResult:
    """Greedy decode of (batch, n_mels, 3000) features; rows stop at end-of-text."""
    param = next(model.parameters())
    enc = encoder_output
    if enc is None:
        enc = model.model.encoder(features.to(param.device, param.dtype)).last_hidden_state
    batch = enc.shape[0]
    prompt = prompt or decode_prompt(model)
    eos = int(model.config.eos_token_id)
    max_new_tokens = min(max_new_tokens, model.config.max_target_positions - len(prompt))
    ids = torch.tensor([prompt] * batch, device=enc.device)
    cache = new_cache()
    out_tokens: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=enc.device)
    logits_kept: list[torch.Tensor] = []
    pos = 0
    for _ in range(max_new_tokens):
        positions = torch.arange(pos, pos + ids.shape[1], device=enc.device)
        out = model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache,
                                  use_cache=True, cache_position=positions)
        logits = model.proj_out(out.last_hidden_state[:, -1])
        if keep_logits:
            logits_kept.append(logits.float().cpu())
        pos += ids.shape[1]
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        for i, t in enumerate(nxt.tolist()):
            if not done[i] and t != eos:
                out_tokens[i].append(t)
        done |= nxt == eos
        if bool(done.all()):
            break
        ids = nxt[:, None]
    return GreedyResult(out_tokens, kv_cache_bytes(cache), logits_kept)
