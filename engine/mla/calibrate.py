"""Activation statistics for calibrated conversion: the second moment of each attention input.

The model transcribes the calibration audio itself (greedy), then one teacher-forced pass
over its own transcript runs with forward pre-hooks on the attention modules that will be
converted, accumulating sum(x x^T) of their inputs (the layer-normed hidden states for
self-attention, the encoder output for cross-attention).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.mla.decode import decode_prompt, greedy_decode
from engine.sample_audio import sample_candidates, sample_recording

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
CONDITIONED_WEIGHT = 1.0  # weight of a conditioned sequence's rows relative to a plain one's (see calibration_sequences)
DEFAULT_CALIBRATION = sample_recording() or sample_candidates()[0]  # the bundled 11 s sample


@dataclass
class Moments:
    """Weighted running sums of x and x x^T per key (module kind, layer index, "kv" | "q")."""

    sums: dict[tuple, torch.Tensor] = field(default_factory=dict)
    firsts: dict[tuple, torch.Tensor] = field(default_factory=dict)
    counts: dict[tuple, float] = field(default_factory=dict)  # (weighted) rows

    def add(self, key: tuple, x: torch.Tensor, weight: float = 1.0, left: torch.Tensor | None = None,
            row_weights: torch.Tensor | None = None) -> None:
        """Accumulate x x^T (or left x^T, rows aligned with x's, for a cross moment) and x.

        `row_weights` (one per row of x, mean 1 for the same scale) weighs rows unequally."""
        # Products in float64 (on CUDA or the CPU; other backends lack it): the layer-by-layer fit
        # divides a cross moment by a second moment, and float32 products of nearly equal
        # streams would leave ~1e-4 of noise in what should be an identity at full rank.
        dev = x.device if x.device.type in ("cpu", "cuda") else torch.device("cpu")
        x = x.detach().reshape(-1, x.shape[-1]).to(dev, torch.float64)
        y = x if left is None else left.detach().reshape(-1, left.shape[-1]).to(dev, torch.float64)
        if row_weights is None:
            s, f, n = weight * (y.T @ x).cpu(), weight * x.sum(0).cpu(), weight * x.shape[0]
        else:
            rw = row_weights.detach().reshape(-1, 1).to(dev, torch.float64)
            s, f, n = weight * ((y * rw).T @ x).cpu(), weight * (x * rw).sum(0).cpu(), weight * float(rw.sum())
        if key in self.sums:
            self.sums[key] += s
            self.firsts[key] += f
            self.counts[key] += n
        else:
            self.sums[key], self.firsts[key], self.counts[key] = s, f, n

    def second_moment(self, key: tuple) -> torch.Tensor | None:
        return self.sums[key] / max(1, self.counts[key]) if key in self.sums else None

    def mean(self, key: tuple) -> torch.Tensor | None:
        return self.firsts[key] / max(1, self.counts[key]) if key in self.firsts else None


@dataclass
class ForcedSequence:
    """One teacher-forced calibration sequence, kept to replay it through a partly converted model."""

    tokens: list[int]
    encoder_output: torch.Tensor  # (1, frames, d_model): shared by the sequences of one window
    weight: float


def features_for_files(paths: list[str | Path], n_mels: int = 80, max_windows: int = 64) -> torch.Tensor:
    """(windows, n_mels, 3000) log-mel features of consecutive 30 s windows of each file.

    Reads only what it uses: at most `max_windows` windows (32 min) in all, taken from the
    files in order, so calibrating on a user's 3-hour recording does not decode all of it.
    """
    from engine.audio import iter_chunks
    from engine.features import log_mel

    windows: list[np.ndarray] = []
    for p in paths:
        for k, piece in enumerate(iter_chunks(str(p), WINDOW_SAMPLES / SAMPLE_RATE)):
            if len(piece) < SAMPLE_RATE // 2 and k > 0:  # skip a trailing sliver under 0.5 s
                continue
            windows.append(piece)
            if len(windows) >= max_windows:
                break
        if len(windows) >= max_windows:
            log.info("calibration stops at %d windows (%s)", max_windows, Path(p).name)
            break
    if not windows:
        raise ValueError("no calibration audio in " + ", ".join(Path(p).name for p in paths))
    padded = np.zeros((len(windows), WINDOW_SAMPLES), dtype=np.float32)
    for i, w in enumerate(windows):
        padded[i, : len(w)] = w
    return log_mel(padded, n_mels=n_mels)


def _target_modules(model, kinds: tuple[str, ...]):
    dec, enc = model.model.decoder.layers, model.model.encoder.layers
    for kind in kinds:
        layers = enc if kind == "encoder-self" else dec
        for i, layer in enumerate(layers):
            yield kind, i, (layer.encoder_attn if kind == "cross" else layer.self_attn)


def _text_tokens(tokens: list[int], eot: int) -> list[int]:
    return [t for t in tokens if t < eot]


def prompts(model) -> tuple[list[int], list[int]]:
    """(plain prompt ending in <|notimestamps|>, timestamped prompt ending in <|0.00|>)."""
    plain = decode_prompt(model)
    no_ts = getattr(model.generation_config, "no_timestamps_token_id", None)
    if no_ts is None:
        return plain, plain
    return plain, [t for t in plain if t != no_ts] + [int(no_ts) + 1]


def calibration_sequences(model, transcripts: list[list[int]], timestamped: list[list[int]],
                          history: list[list[int]] | None = None,
                          conditioned_weight: float = CONDITIONED_WEIGHT) -> list[list[tuple[list[int], float]]]:
    """Teacher-forcing (sequence, weight) pairs per window, shaped like real decoding.

    Per window: the plain transcript after <|notimestamps|>; the timestamped transcript; and,
    when the model has <|startofprev|>, the timestamped transcript conditioned on half a
    context of previous text (`history`, default the transcripts, cycled) as long-form
    decoding does, which covers the later decoder positions. Its rows weigh
    `conditioned_weight` each, like a plain sequence's (1.0: every position counts the same).

    Why not less: long-form decoding spends most of its attention over such long prompts.
    Measured on tiny.en (calibration: first half of the LJ Speech long-form file + JFK;
    evaluation: its second half, stock 9.8% WER): at 87.5% KV reduction, weighting the whole
    conditioned sequence like one plain sequence gave 30.2% WER, every position alike 12.2-12.5%;
    at 75% both 9.8%.
    """
    gen = model.generation_config
    eot = int(model.config.eos_token_id)
    max_len = int(model.config.max_target_positions)
    plain, ts_prompt = prompts(model)
    sot_prev = getattr(gen, "prev_sot_token_id", None)
    past = [t for toks in (history or transcripts) for t in _text_tokens(toks, eot)]
    out = []
    for toks, ts in zip(transcripts, timestamped):
        seqs = [(plain + toks, 1.0), (ts_prompt + ts, 1.0)]
        if sot_prev is not None and past and conditioned_weight > 0:
            keep = max_len // 2 - 1
            prev = (past * (keep // len(past) + 1))[-keep:]
            cond = ([int(sot_prev)] + prev + ts_prompt + ts)[:max_len]
            seqs.append((cond, conditioned_weight))
        out.append(seqs)
    return out


@torch.no_grad()
def received_attention(attn, hidden: torch.Tensor, mix: float = 1.0) -> torch.Tensor:
    """Per token of one causal sequence (1, T, d), the attention it receives in stock `attn`.

    Summed over the queries that see it and averaged over heads (so the weights average
    1), mixed with uniform weights as (1 - mix) + mix * received. Why: a value error on
    token j reaches query i's output scaled by a_ij, and a key error on j moves i's output
    in proportion to a_ij too, so sum_i a_ij is how much token j's error costs. Tokens that
    draw most of the attention (the start-of-transcript "sink") then weigh what they cost
    instead of 1/T.
    """
    x = hidden.detach().reshape(-1, hidden.shape[-1])
    t, h = x.shape[0], attn.num_heads
    q = torch.nn.functional.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(t, h, -1).transpose(0, 1)
    k = torch.nn.functional.linear(x, attn.k_proj.weight).view(t, h, -1).transpose(0, 1)
    scores = (q.float() @ k.float().transpose(1, 2)) * attn.scaling
    causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
    probs = scores.masked_fill(causal, float("-inf")).softmax(-1)
    received = probs.sum(1).mean(0)  # (T,), sums to T
    return (1.0 - mix) + mix * received


def attention_rows(attn, hidden: torch.Tensor, mix: float) -> torch.Tensor | None:
    """`Moments.add`'s row weights for a decoder self-attention input: None (plain rows) when mix is 0."""
    return received_attention(attn, hidden, mix) if mix > 0 else None


@torch.inference_mode()
def collect_moments(model, features: torch.Tensor, kinds: tuple[str, ...], batch_size: int = 4,
                    max_new_tokens: int = 224, conditioned_weight: float = CONDITIONED_WEIGHT,
                    keep_sequences: list[ForcedSequence] | None = None,
                    attention_mix: float = 0.0) -> Moments:
    """Input statistics of every attention module of the given kinds, on the model's own transcripts.

    Keys: (kind, layer, "kv") for the key/value input, (kind, layer, "q") for the query input.
    `attention_mix` > 0 weighs decoder self-attention's key/value rows by the attention
    each token receives (`received_attention`, that mix).
    `keep_sequences`, when given, receives every teacher-forced sequence (for `DriftTracker`).
    """
    moments = Moments()
    param = next(model.parameters())
    plain, ts_prompt = prompts(model)
    handles = []
    state = {"on": False, "weight": 1.0}

    def make_hook(kind, i):
        def hook(module, args, kwargs):
            if not state["on"]:
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            moments.add((kind, i, "q"), hidden, state["weight"])
            rows = attention_rows(module, hidden, attention_mix) if kind == "decoder-self" else None
            moments.add((kind, i, "kv"), kwargs["key_value_states"] if kind == "cross" else hidden, state["weight"],
                        row_weights=rows)
        return hook

    for kind, i, module in _target_modules(model, kinds):
        handles.append(module.register_forward_pre_hook(make_hook(kind, i), with_kwargs=True))
    try:
        history: list[list[int]] = []
        for start in range(0, features.shape[0], batch_size):
            feats = features[start : start + batch_size].to(param.device, param.dtype)
            state.update(on="encoder-self" in kinds, weight=1.0)
            enc = model.model.encoder(feats).last_hidden_state
            state["on"] = False
            plains = greedy_decode(model, feats, plain, max_new_tokens=max_new_tokens, encoder_output=enc).tokens
            stamped = greedy_decode(model, feats, ts_prompt, max_new_tokens=max_new_tokens, encoder_output=enc).tokens
            history += plains
            seqs = calibration_sequences(model, plains, stamped, history, conditioned_weight)
            for row, pairs in enumerate(seqs):
                for seq, weight in pairs:
                    if keep_sequences is not None:
                        keep_sequences.append(ForcedSequence(seq, enc[row : row + 1], weight))
                    state.update(on=True, weight=weight)
                    model.model.decoder(input_ids=torch.tensor([seq], device=enc.device),
                                        encoder_hidden_states=enc[row : row + 1], use_cache=False)
                    state["on"] = False
    finally:
        for h in handles:
            h.remove()
    return moments


class _LayerReached(Exception):
    """Raised by a capture hook: nothing after the captured point needs computing."""


def _first(out):
    return out[0] if isinstance(out, tuple) else out


class DriftTracker:
    """Stock and partly converted residual streams of the calibration sequences, one decoder layer at a time.

    For layer l, `moments(l)` gives the statistics of its self-attention input in the model
    as converted so far (x~, behind the converted layers 0..l-1) together with the stock
    input x of the same positions: ("decoder-self", l, "kv") holds E[x~ x~^T] (and the mean
    of x~), ("decoder-self", l, "cross") holds E[x x~^T]. With these, `weighted_svd(...,
    cross_moment=...)` fits layer l to reproduce stock's keys and values from the inputs it
    will really see, so the error of earlier layers is partly undone instead of passed on.
    After layer l is converted, `advance(l)` moves the converted stream through it.

    Both streams are kept per sequence and advanced one layer per step, so the whole
    conversion costs about three decoder passes per sequence, whatever the depth. A layer
    is called with the arguments the decoder itself gave layer 0 (captured once by a hook).
    """

    def __init__(self, model, sequences: list[ForcedSequence], attention_mix: float = 0.0) -> None:
        self.layers = model.model.decoder.layers
        self.attention_mix = attention_mix
        self.sequences = sequences
        self.calls: list[tuple[tuple, dict]] = []
        self.stock: list[torch.Tensor] = []
        self.drift: list[torch.Tensor] = []
        captured = {}

        def hook(module, args, kwargs):
            captured.update(args=args, kwargs=kwargs)
            raise _LayerReached

        handle = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.inference_mode():
                for seq in sequences:
                    try:
                        model.model.decoder(input_ids=torch.tensor([seq.tokens], device=seq.encoder_output.device),
                                            encoder_hidden_states=seq.encoder_output, use_cache=False)
                    except _LayerReached:
                        pass
                    hidden, *rest = captured["args"]
                    self.calls.append((tuple(rest), dict(captured["kwargs"])))
                    self.stock.append(hidden)
                    self.drift.append(hidden)
        finally:
            handle.remove()

    def _run(self, layer: int, k: int, hidden: torch.Tensor, capture: list | None = None, stop: bool = False):
        rest, kwargs = self.calls[k]

        def hook(module, args, kw):
            capture.append(args[0] if args else kw["hidden_states"])
            if stop:
                raise _LayerReached

        handle = self.layers[layer].self_attn.register_forward_pre_hook(hook, with_kwargs=True) if capture is not None else None
        try:
            return _first(self.layers[layer](hidden, *rest, **kwargs))
        except _LayerReached:
            return None
        finally:
            if handle is not None:
                handle.remove()

    @torch.inference_mode()
    def moments(self, layer: int) -> Moments:
        """Statistics of layer `layer`'s inputs (converted and stock); advances the stock stream past it."""
        moments = Moments()
        for k, seq in enumerate(self.sequences):
            x, x_drift = [], []
            self.stock[k] = self._run(layer, k, self.stock[k], capture=x)
            self._run(layer, k, self.drift[k], capture=x_drift, stop=True)
            # layer `layer` is still stock here: its attention on stock inputs
            rows = attention_rows(self.layers[layer].self_attn, x[0], self.attention_mix)
            moments.add(("decoder-self", layer, "kv"), x_drift[0], seq.weight, row_weights=rows)
            moments.add(("decoder-self", layer, "cross"), x_drift[0], seq.weight, left=x[0], row_weights=rows)
        return moments

    @torch.inference_mode()
    def advance(self, layer: int) -> None:
        """Move the converted stream through layer `layer` as it now is."""
        for k in range(len(self.sequences)):
            self.drift[k] = self._run(layer, k, self.drift[k])
