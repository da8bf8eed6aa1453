"""Decode 30 s windows: greedy, sampling (best-of) or beam search, with Whisper's timestamp rules.

The algorithm follows openai-whisper's `decoding.py` (suppression, timestamp rules, beam
search with patience, length-penalty ranking, no-speech probability), written against the
transformers decoder so a stock and an MLA model run the same code. One `decode` call
handles a batch of windows that share one prompt, or have one each of equal length.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.english_script import non_english_tokens
from engine.kv_cache import cache_bytes, new_cache, prefill_cross_cache
from engine.mla.cross import shares_encoder_output
from engine.model_sources import LoadedModel
from engine.results import KVCacheBytes

log = logging.getLogger(__name__)
NEG_INF = float("-inf")
ENCODER_CHUNK = 8  # windows per encoder call: saturates a GPU, bounds the transient memory


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"
    language: str | None = None
    temperature: float = 0.0
    beam_size: int = 1  # > 1: beam search (only at temperature 0)
    best_of: int = 5  # candidates sampled at temperature > 0
    patience: float = 1.0
    length_penalty: float | None = None
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    suppress_blank: bool = True
    sample_len: int | None = None  # max new tokens; default half the decoder context
    seed: int = 0  # sampling at temperature > 0 is seeded, so a resumed run decodes identically


@dataclass
class DecodeResult:
    tokens: list[int]  # sampled tokens without the prompt and without <|endoftext|>
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    # the window's kept text aligned to its audio (engine.word_timing), when word timestamps are on
    word_timings: list | None = None


def compression_ratio(text: str) -> float:
    """Text bytes over zlib-compressed bytes: repetition loops compress far better than speech."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


class WindowDecoder:
    """Runs the encoder and the token loop of one model; keeps the peak KV-cache bytes it saw."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.s = loaded.settings
        self.kv_peak = KVCacheBytes()
        self.live_cache = None  # the cache of the decode in progress, for live memory sampling
        vocab = self.model.config.vocab_size
        self._suppress = torch.zeros(vocab, dtype=torch.bool)
        self._suppress[self.s.all_suppressed()] = True
        self._suppress[self.s.no_timestamps] = False  # handled by the timestamp rules
        self._begin_suppress = [t for t in self.s.begin_suppress_tokens if t < vocab]
        self._not_english: torch.Tensor | None = None  # built at the first translation (engine.english_script)

    def live_kv_bytes(self) -> KVCacheBytes:
        """Bytes held right now by the cache of the running decode (0 between windows); thread-safe to call."""
        return cache_bytes(self.live_cache)

    # -- model calls -------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Encoder output (n, 1500, d) of log-mel windows (n, n_mels, 3000)."""
        return self.encode_chunks(mel.shape[0], lambda i, j: mel[i:j])

    @torch.inference_mode()
    def encode_chunks(self, n: int, features: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """Encoder output of `n` windows, asking `features(i, j)` for windows i..j-1, ENCODER_CHUNK at a time.

        Neither the features nor the encoder's transient activations (tens of MB per window on
        large models) then scale with the batch; otherwise they, not the cache, would set the
        largest batch that fits for an MLA model, whose per-window cache is small.
        """
        out = None
        for i in range(0, n, ENCODER_CHUNK):
            j = min(n, i + ENCODER_CHUNK)
            hidden = self.model.model.encoder(features(i, j).to(self.loaded.device, self.loaded.dtype)).last_hidden_state
            if n <= ENCODER_CHUNK:
                return hidden
            if out is None:  # filled in place: a concatenation would briefly hold the output twice
                out = hidden.new_empty((n,) + tuple(hidden.shape[1:]))
            out[i:j] = hidden
            del hidden
        return out

    def _logits(self, tokens: torch.Tensor, enc: torch.Tensor, cache, positions: list[int] | None = None) -> torch.Tensor:
        """(rows, len(positions), vocab) logits at the given positions only (default: the last).

        Projecting only what is read matters: a 224-token prompt times the 51k vocabulary is
        ~47 MB of logits per row (235 MB for best-of-5) and most of the prefill's arithmetic.
        """
        out = self.model.model.decoder(input_ids=tokens, encoder_hidden_states=enc, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, positions if positions is not None else [-1]]
        return self.model.proj_out(hidden).float()

    @torch.inference_mode()
    def detect_language(self, enc: torch.Tensor) -> list[tuple[str, float]]:
        """Most likely language per window: softmax over the language tokens after <|startoftranscript|>."""
        if not self.s.multilingual:
            return [("en", 1.0)] * enc.shape[0]
        tokens = torch.full((enc.shape[0], 1), self.s.sot, device=enc.device)
        logits = self._logits(tokens, enc, new_cache())[:, 0]
        langs = sorted(self.s.lang_to_id.items(), key=lambda kv: kv[1])
        ids = torch.tensor([i for _, i in langs], device=logits.device)
        probs = logits[:, ids].softmax(-1)
        best = probs.argmax(-1).tolist()
        return [(langs[b][0], float(probs[row, b])) for row, b in enumerate(best)]

    def initial_tokens(self, opts: DecodeOptions, prompt: list[int] | None) -> tuple[list[int], int]:
        """(prompt tokens, index of <|startoftranscript|>)."""
        seq: list[int] = []
        if prompt and self.s.sot_prev is not None:
            keep = self.s.max_target_positions // 2 - 1
            seq = [self.s.sot_prev] + list(prompt)[-keep:]
        sot_index = len(seq)
        seq += self.s.sot_sequence(opts.language, opts.task)
        if opts.without_timestamps:
            seq.append(self.s.no_timestamps)
        return seq, sot_index

    # -- logit rules -------------------------------------------------------------------------
    def _english_only_mask(self, device: torch.device) -> torch.Tensor:
        if self._not_english is None:
            mask = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
            mask[non_english_tokens(self.loaded.tokenizer, self.s.eot)] = True
            self._not_english = mask
        if self._not_english.device != device:  # moved once, not copied to the GPU at every step
            self._not_english = self._not_english.to(device)
        return self._not_english

    def _apply_rules(self, logits: torch.Tensor, tokens: torch.Tensor, sample_begin: int, opts: DecodeOptions) -> None:
        """In place: suppression and openai-whisper's timestamp rules on (rows, vocab) logits."""
        if self._suppress.device != logits.device:  # moved once, not copied to the GPU at every step
            self._suppress = self._suppress.to(logits.device)
        logits[:, self._suppress] = NEG_INF
        if opts.task == "translate" and self.s.multilingual:
            logits[:, self._english_only_mask(logits.device)] = NEG_INF
        first = tokens.shape[1] == sample_begin
        if first and opts.suppress_blank:
            logits[:, self._begin_suppress] = NEG_INF
        if opts.without_timestamps:
            return
        tb = self.s.timestamp_begin
        logits[:, self.s.no_timestamps] = NEG_INF
        timestamp_pairing_rules(logits, tokens[:, sample_begin:], tb, self.s.eot)
        if first:
            logits[:, :tb] = NEG_INF
            max_index = round(opts.max_initial_timestamp / 0.02)
            logits[:, tb + max_index + 1 :] = NEG_INF
        logprobs = F.log_softmax(logits, dim=-1)
        ts_mass = logprobs[:, tb:].logsumexp(dim=-1)
        text_best = logprobs[:, :tb].max(dim=-1).values
        logits[ts_mass > text_best, :tb] = NEG_INF

    # -- the token loop ----------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, enc: torch.Tensor, opts: DecodeOptions,
               prompt: list[int] | list[list[int]] | None = None) -> list[DecodeResult]:
        """Decode each window of `enc` (batch, frames, d); returns one result per window.

        `prompt` is the previous text: one token list for every window, or one list per window,
        all of the same length (rows of one batch then need no padding and keep their positions).
        """
        n_audio = enc.shape[0]
        if opts.temperature == 0 and opts.beam_size > 1:
            group = opts.beam_size
        elif opts.temperature > 0:
            group = max(1, opts.best_of)
        else:
            group = 1
        per_row = bool(prompt) and isinstance(prompt[0], list)
        rows = [self.initial_tokens(opts, p) for p in (prompt if per_row else [prompt])]
        if len({len(r[0]) for r in rows}) != 1 or (per_row and len(rows) != n_audio):
            raise ValueError("per-window prompts must be one per window and of equal length")
        initial, sot_index = rows[0]
        sample_begin = len(initial)
        max_new = opts.sample_len or self.s.max_target_positions // 2
        max_new = min(max_new, self.s.max_target_positions - sample_begin)
        device = enc.device
        tokens = torch.tensor([r[0] for r in rows], device=device)
        tokens = tokens.repeat_interleave(group, dim=0) if per_row else tokens.repeat(n_audio * group, 1)
        cache = self.live_cache = new_cache()
        # Exact-cross MLA decoders read the (n, frames, d) output as is, and stock layers whose
        # K/V is filled here once per window no longer read it; otherwise a row per beam.
        shared = group == 1 or shares_encoder_output(self.model) or prefill_cross_cache(self.model, cache, enc, group)
        enc_rows = enc if shared else enc.repeat_interleave(group, dim=0)
        generator = torch.Generator().manual_seed(opts.seed) if opts.temperature > 0 else None
        beam = opts.temperature == 0 and group > 1
        search = _BeamSearch(n_audio, group, opts.patience, self.s.eot) if beam else None
        sum_logprobs = torch.zeros(n_audio * group, device=device)
        done = torch.zeros(n_audio * group, dtype=torch.bool, device=device)
        no_speech = [0.0] * n_audio  # models without a no-speech token never skip
        step_input = tokens
        for step in range(max_new):
            want_no_speech = step == 0 and self.s.no_speech is not None
            logits_all = self._logits(step_input, enc_rows, cache, [sot_index, -1] if want_no_speech else None)
            if want_no_speech:
                probs = logits_all[::group, 0].softmax(-1)
                no_speech = probs[:, self.s.no_speech].tolist()
            logits = logits_all[:, -1]
            self._apply_rules(logits, tokens, sample_begin, opts)
            logprobs = F.log_softmax(logits, dim=-1)
            if search is not None:
                tokens, order, finished = search.step(tokens, logprobs, sum_logprobs)
                if order is not None:
                    # beams only swap within their own window, whose cross-attention K/V rows are
                    # identical: reorder the self-attention cache alone (the cross one is 1500 frames)
                    cache.self_attention_cache.reorder_cache(order)
                if finished:
                    break
                step_input = tokens[:, -1:]
                continue
            if opts.temperature > 0:
                probs = F.softmax(logits / opts.temperature, dim=-1)
                next_tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            else:
                next_tokens = logits.argmax(dim=-1)
            picked = logprobs.gather(1, next_tokens[:, None]).squeeze(1)
            sum_logprobs += torch.where(done, torch.zeros_like(picked), picked)
            next_tokens = torch.where(done, torch.full_like(next_tokens, self.s.eot), next_tokens)
            done |= next_tokens == self.s.eot
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
            if bool(done.all()):
                break
            step_input = tokens[:, -1:]
        self.kv_peak = self.kv_peak.max(cache_bytes(cache))
        self.live_cache = None
        del cache
        if search is not None:
            candidates = search.finalize(tokens, sum_logprobs, sample_begin)
        else:
            candidates = _group_rows(tokens, sum_logprobs, sample_begin, n_audio, group, self.s.eot)
        return [self._pick(c, opts, no_speech[i]) for i, c in enumerate(candidates)]

    def _pick(self, cands: list[tuple[list[int], float]], opts: DecodeOptions, no_speech: float) -> DecodeResult:
        def score(c: tuple[list[int], float]) -> float:
            n = max(1, len(c[0]))
            penalty = n if opts.length_penalty is None else ((5 + n) / 6) ** opts.length_penalty
            return c[1] / penalty

        toks, logp = max(cands, key=score)
        text = self.loaded.tokenizer.decode([t for t in toks if t < self.s.eot])
        return DecodeResult(toks, text, logp / (len(toks) + 1), no_speech, opts.temperature, compression_ratio(text))


def timestamp_pairing_rules(logits: torch.Tensor, sampled: torch.Tensor, tb: int, eot: int) -> None:
    """In place, openai-whisper's per-row timestamp rules, vectorised over rows (a batch can have hundreds).

    `sampled` (rows, n) are the tokens decoded so far; `tb` the first timestamp token. After a
    closed timestamp pair text must follow; after text + timestamp only a timestamp or the end;
    timestamps never go backwards (nor repeat, except to close a pair).
    """
    n = sampled.shape[1]
    if not n:
        return
    is_ts = sampled >= tb
    last_ts = is_ts[:, -1]
    penult_ts = is_ts[:, -2] if n >= 2 else torch.ones_like(last_ts)
    logits[last_ts & penult_ts, tb:] = NEG_INF
    logits[last_ts & ~penult_ts, :eot] = NEG_INF
    positions = torch.arange(1, n + 1, device=sampled.device)
    last_stamp = sampled.gather(1, (is_ts * positions).argmax(dim=1, keepdim=True)).squeeze(1)
    floor = torch.where(last_ts & ~penult_ts, last_stamp, last_stamp + 1)
    floor = torch.where(is_ts.any(dim=1), floor, torch.full_like(floor, tb))
    cols = torch.arange(logits.shape[1], device=logits.device)
    logits.masked_fill_((cols >= tb) & (cols < floor[:, None].to(logits.device)), NEG_INF)


def _group_rows(tokens, sum_logprobs, begin, n_audio, group, eot) -> list[list[tuple[list[int], float]]]:
    out = []
    rows = tokens[:, begin:].tolist()
    lps = sum_logprobs.tolist()
    for a in range(n_audio):
        cands = []
        for r in range(a * group, (a + 1) * group):
            seq = rows[r]
            cands.append((seq[: seq.index(eot)] if eot in seq else seq, lps[r]))
        out.append(cands)
    return out


class _BeamSearch:
    """openai-whisper's beam search: keep `beam` live sequences per window, collect finished ones."""

    def __init__(self, n_audio: int, beam: int, patience: float, eot: int):
        self.n_audio, self.beam, self.eot = n_audio, beam, eot
        self.max_candidates = max(1, round(beam * patience))
        self.finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(n_audio)]

    def step(self, tokens: torch.Tensor, logprobs: torch.Tensor, sum_logprobs: torch.Tensor):
        rows, new_lp, order = [], [], []
        top_lp, top_tok = logprobs.topk(self.beam + 1, dim=-1)
        top_lp, top_tok = top_lp.tolist(), top_tok.tolist()
        seqs = tokens.tolist()
        base = sum_logprobs.tolist()
        for a in range(self.n_audio):
            scores: dict[tuple[int, ...], float] = {}
            sources: dict[tuple[int, ...], int] = {}
            for j in range(self.beam):
                idx = a * self.beam + j
                for lp, tok in zip(top_lp[idx], top_tok[idx]):
                    seq = tuple(seqs[idx] + [tok])
                    scores[seq] = base[idx] + lp
                    sources[seq] = idx
            kept = 0
            for seq in sorted(scores, key=scores.get, reverse=True):
                if seq[-1] == self.eot:
                    if len(self.finished[a]) < self.max_candidates:
                        self.finished[a][seq[:-1]] = scores[seq]
                else:
                    rows.append(list(seq))
                    new_lp.append(scores[seq])
                    order.append(sources[seq])
                    kept += 1
                    if kept == self.beam:
                        break
        tokens = torch.tensor(rows, device=tokens.device)
        sum_logprobs.copy_(torch.tensor(new_lp, device=sum_logprobs.device))
        self.live = tokens
        finished = all(len(f) >= self.max_candidates for f in self.finished)
        return tokens, torch.tensor(order, device=tokens.device), finished

    def finalize(self, tokens: torch.Tensor, sum_logprobs: torch.Tensor, begin: int):
        lps = sum_logprobs.tolist()
        seqs = tokens.tolist()
        out = []
        for a in range(self.n_audio):
            found = dict(self.finished[a])
            if len(found) < self.beam:  # ran out of length: keep the best live beams too
                for j in range(self.beam):
                    idx = a * self.beam + j
                    found.setdefault(tuple(seqs[idx]), lps[idx])
                    if len(found) >= self.beam:
                        break
            out.append([(list(seq[begin:]), lp) for seq, lp in found.items()])
        return out
