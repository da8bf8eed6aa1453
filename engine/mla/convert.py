"""Convert a pretrained Whisper's attention to MLA in place (and rebuild that structure on load)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from engine.mla.attention import MLAAttention
from engine.mla.calibrate import (DEFAULT_CALIBRATION, DriftTracker, ForcedSequence, Moments, collect_moments,
                                  features_for_files)
from engine.mla.config import MODULE_KINDS, MLAConfig, rank_for_reduction, reduction_for_rank
from engine.mla.cross import ExactCrossAttention
from engine.mla.factorize import allocate_ranks, max_rank, output_row_weight, value_spread, weighted_svd
from engine.mla.kept_keys import KEY_SELECTIONS, dim_energies, kept_key_factors, select_kept_key_dims
from engine.mla.rank_split import measure_split, recommended_allocation

log = logging.getLogger(__name__)

COMPENSATE_DEFAULT = True
ATTENTION_MIX_DEFAULT = 0.0


def _slots(model, kind: str) -> Iterator[tuple[int, nn.Module, str]]:
    """(layer index, parent layer, attribute name) of every attention module of one kind."""
    if kind == "encoder-self":
        layers, attr = model.model.encoder.layers, "self_attn"
    elif kind == "decoder-self":
        layers, attr = model.model.decoder.layers, "self_attn"
    elif kind == "cross":
        layers, attr = model.model.decoder.layers, "encoder_attn"
    else:
        raise ValueError(f"unknown module kind {kind!r}")
    for i, layer in enumerate(layers):
        yield i, layer, attr


def _resolve_rank(d_model: int, rank: int | None, kv_reduction: float | None) -> int:
    if (rank is None) == (kv_reduction is None):
        raise ValueError("give exactly one of rank or kv_reduction")
    r = rank if rank is not None else rank_for_reduction(d_model, kv_reduction)
    if r > max_rank(d_model):
        log.warning("rank %d exceeds d=%d, where the factorisation is already exact; using %d", r, d_model, d_model)
        r = max_rank(d_model)
    return r


def convert_model(
    model,
    rank: int | None = None,
    kv_reduction: float | None = None,
    modules: Iterable[str] = ("decoder-self",),
    init: str = "calibrated",
    calibration_features: torch.Tensor | None = None,
    exact_cross: bool = False,
    *,
    calibration_audio: Iterable[str | Path] | None = None,
    source: str = "",
    eps: float = 0.1,
    weighting: str = "output",
    key_scale: float | str = "auto",
    rank_allocation: str | Sequence[int] = "uniform",
    compensate: bool = COMPENSATE_DEFAULT,
    keep_key_dims: int = 0,
    key_selection: str = "norm",
    attention_mix: float = ATTENTION_MIX_DEFAULT,
) -> MLAConfig:
    """Replace attention modules of a `WhisperForConditionalGeneration` in place.

    `modules` lists kinds to give an MLA latent (decoder-self, cross, encoder-self) at one
    rank: `rank` directly or `kv_reduction` (1 - r/2d). `init="calibrated"` uses input
    statistics from `calibration_features` ((N, n_mels, 3000) log-mel windows), else from
    `calibration_audio` files, else from the bundled sample recording. `exact_cross`
    replaces cross-attention by the cache-free exact module. Returns the record that
    `save_mla_model` writes; it is also set as `model.mla_config`.

    Calibration knobs (`eps` and `weighting` chosen on held-aside LJ Speech windows; "auto"
    has no free parameter, checked against 0.5x and 2x it below): `eps` regularises the
    input second moment relative to its mean eigenvalue; `weighting="output"` measures key
    errors through the queries and value errors through the output projection ("none":
    plain activation-aware SVD); `key_scale` balances them:
    "auto" (default) weighs a head's key errors by the spread of its output-projected values
    (`value_spread`), a number uses one scale for every head. Measured on tiny.en at 87.5%
    (LJ + JFK calibration, product loop), "auto" reads 24.6 / 20.4 / 6.9% WER on the
    LibriSpeech utterances / concat / LJ Speech against 30.7 / 28.6 / 12.6% with 1.0 (half or
    twice "auto": 26.8 and 27.2% on the utterances); at 75% they are within noise.

    `rank_allocation="uniform"` (default) gives every layer `rank`. "spectrum" keeps the same
    total cache (rank x layers) but shares it out by the layers' weighted singular values
    (`allocate_ranks`). Measured on tiny.en at 75% (sample calibration, product loop), it
    starves the first layers and is far worse: WER 27.2 / 38.9 / 26.7% on the LibriSpeech
    utterances / concat / LJ Speech against 14.6 / 14.0 / 5.4% uniform (normalising each
    layer's spectrum by its own energy: 15.9 / 15.8 / 8.5%). An experiment, not a default.
    A sequence of ints gives each layer of every converted kind its rank explicitly (with
    `compensate`, too); the config then records the reduction of their mean rank.
    "sensitivity" (calibrated decoder self-attention) measures how much each decoder layer
    suffers at each rank of a grid and shares the same total out by that
    (`engine.mla.rank_split`; other kinds stay uniform). Measured on tiny.en at 87.5% (LJ +
    JFK calibration) it picks 160/48/48/128 and reads 20.1 / 14.8 / 7.6% WER against uniform's
    24.6 / 20.4 / 6.9%; at 75% such splits win one set and lose another (README). "auto" (what
    the CLI, the app and `compare` pass) is "sensitivity" from 85% KV reduction on where it
    applies (calibrated decoder self-attention, no kept key dimensions), else "uniform"
    (`rank_split.recommended_allocation`).

    `compensate` (calibrated decoder self-attention, uniform ranks): convert the layers one
    after the other, each fitted to reproduce stock's keys and values from the inputs it
    sees behind the already converted layers (`DriftTracker`), so errors are partly undone
    rather than compounded. Costs about three teacher-forced decoder passes per sequence.

    `keep_key_dims` n > 0: the paper's layout (`engine.mla.kept_keys`): per head n key
    dimensions (chosen by `key_selection`, "norm" or "uniform") are cached exactly and the
    rest of the rank is a joint latent of the other key rows and the values. Same cache
    size as the plain latent of the same rank.

    `attention_mix` a > 0 (calibrated decoder self-attention): each token's key/value input
    row counts (1 - a) + a * (the attention stock gives it), because that is what its key and
    value errors cost (`calibrate.received_attention`); the start-of-transcript token draws
    most of it. Measured on tiny.en (README): the held-out KL to stock on LibriSpeech falls
    by a quarter at 75% with 4 minutes of calibration audio, but rises with the 11 s sample,
    and greedy WER does not follow the KL, so it is off (0) by default.
    """
    explicit: list[int] | None = None
    modules = tuple(dict.fromkeys(modules))
    if rank_allocation == "auto":  # the product's choice: the measured split only where it applies and is deep
        rank_allocation = "uniform"
        if init == "calibrated" and "decoder-self" in modules and not keep_key_dims:
            d = model.config.d_model
            rank_allocation = recommended_allocation(reduction_for_rank(d, _resolve_rank(d, rank, kv_reduction)))
    if not isinstance(rank_allocation, str):
        explicit = [int(x) for x in rank_allocation]
        rank_allocation = "explicit"
    elif rank_allocation not in ("uniform", "spectrum", "sensitivity"):
        raise ValueError("rank_allocation must be 'uniform', 'spectrum', 'sensitivity' or a list of ranks, "
                         f"got {rank_allocation!r}")
    if rank_allocation == "sensitivity" and (init != "calibrated" or "decoder-self" not in modules):
        raise ValueError("rank_allocation='sensitivity' measures calibrated decoder self-attention: "
                         "it needs init='calibrated' and the decoder-self module")
    if keep_key_dims and rank_allocation != "uniform":
        raise ValueError("kept key dimensions need uniform rank allocation")
    if key_selection not in KEY_SELECTIONS:
        raise ValueError(f"key_selection must be one of {', '.join(KEY_SELECTIONS)}, got {key_selection!r}")
    if isinstance(key_scale, str) and key_scale != "auto":
        raise ValueError(f"key_scale must be a number or 'auto', got {key_scale!r}")
    if weighting not in ("output", "none"):
        raise ValueError(f"weighting must be 'output' or 'none', got {weighting!r}")
    cfg = MLAConfig(modules=modules, init=init, exact_cross=exact_cross, source=source)  # validates names
    if not modules and not exact_cross:
        raise ValueError("nothing to convert: give modules and/or exact_cross")
    if getattr(model, "mla_config", None) is not None:
        raise ValueError("model is already converted")
    d = model.config.d_model
    if explicit is not None and rank is None and kv_reduction is None:
        rank = max(1, round(sum(explicit) / max(1, len(explicit))))  # the warning thresholds below use it
    r = _resolve_rank(d, rank, kv_reduction) if modules else 0

    moments: Moments | None = None
    sequences: list[ForcedSequence] | None = None
    if modules and init == "calibrated":
        audio_names: list[str] = []
        if calibration_features is None:
            if not calibration_audio and r < d // 2:
                log.warning("rank %d (%.1f%% KV reduction) calibrated on the bundled 11 s sample only: expect "
                            "a large accuracy loss; calibrate on a few minutes of audio like yours and fine-tune "
                            "(measured on tiny.en at 87.5%%, LibriSpeech utterances: 47%% WER with the sample, "
                            "18%% with 4 minutes, stock 15%%)", r, 100 * reduction_for_rank(d, r))
            paths = [Path(p) for p in (calibration_audio or [DEFAULT_CALIBRATION])]
            audio_names = [p.name for p in paths]
            calibration_features = features_for_files(paths, n_mels=model.config.num_mel_bins)
        log.info("calibrating on %d windows", calibration_features.shape[0])
        sequences = [] if compensate or rank_allocation == "sensitivity" else None
        moments = collect_moments(model, calibration_features, modules, keep_sequences=sequences,
                                  attention_mix=attention_mix)
        cfg.calibration_audio = audio_names
        cfg.init_options = {"eps": eps, "weighting": weighting, "key_scale": key_scale,
                            "windows": int(calibration_features.shape[0]),
                            "attention_mix": float(attention_mix)}
    if rank_allocation != "uniform":
        cfg.init_options["rank_allocation"] = rank_allocation

    def ranks_for(kind: str, n_layers: int) -> list[int]:
        if kind == "decoder-self" and rank_allocation == "sensitivity":
            split = measure_split(model, sequences, lambda i: layer_svd(kind, i, model.model.decoder.layers[i].self_attn,
                                                                          None), r, max_rank(d))
            cfg.init_options["rank_sensitivity"] = split.as_record()
            return split.ranks
        if explicit is None:
            return [r] * n_layers
        if len(explicit) != n_layers or not all(1 <= x <= d for x in explicit):
            raise ValueError(f"{kind}: {len(explicit)} ranks given for {n_layers} layers "
                             f"(each must be 1..{d}): {explicit}")
        return explicit

    def layer_factors(kind: str, i: int, attn, drift: Moments | None, rank: int):
        if not keep_key_dims:
            return layer_svd(kind, i, attn, drift).truncate(rank)
        sigma, weight, cross = layer_inputs(kind, i, attn, drift)
        energies = dim_energies(attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight,
                                *((moments.second_moment((kind, i, "q")), moments.mean((kind, i, "q")),
                                   moments.second_moment((kind, i, "kv"))) if moments is not None else ()))
        kept = select_kept_key_dims(attn.num_heads, attn.head_dim, keep_key_dims, key_selection, *energies)
        return kept_key_factors(attn.k_proj.weight, attn.v_proj.weight, kept, rank, sigma, eps=eps,
                                row_weight=weight, cross_moment=cross)

    def layer_svd(kind: str, i: int, attn, drift: Moments | None):
        sigma, weight, cross = layer_inputs(kind, i, attn, drift)
        return weighted_svd(attn.k_proj.weight, attn.v_proj.weight, sigma, eps=eps, row_weight=weight,
                            cross_moment=cross)

    def layer_inputs(kind: str, i: int, attn, drift: Moments | None):
        """(input second moment, output row weight, cross moment) for one layer's factorisation."""
        sigma, weight, cross = None, None, None
        if moments is not None:
            sigma = moments.second_moment((kind, i, "kv"))
            if drift is not None:
                sigma, cross = drift.second_moment((kind, i, "kv")), drift.second_moment((kind, i, "cross"))
            if weighting == "output":
                scale = key_scale
                if scale == "auto":
                    scale = value_spread(attn.v_proj.weight, attn.out_proj.weight, attn.num_heads,
                                         moments.second_moment((kind, i, "kv")), moments.mean((kind, i, "kv")))
                weight = output_row_weight(attn.q_proj.weight, attn.q_proj.bias, attn.out_proj.weight,
                                           attn.num_heads, moments.second_moment((kind, i, "q")),
                                           moments.mean((kind, i, "q")), key_scale=scale, eps=eps)
        return sigma, weight, cross

    def install(kind: str, i: int, layer, attr: str, low) -> int:
        setattr(layer, attr, MLAAttention.from_factors(getattr(layer, attr), low))
        log.debug("%s layer %d: rank %d keeps %.4f of the energy", kind, i, low.rank, low.energy)
        return low.rank

    compensated = False
    for kind in modules:
        slots = list(_slots(model, kind))
        wanted = ranks_for(kind, len(slots))
        if compensate and sequences and kind == "decoder-self" and rank_allocation != "spectrum":
            tracker = DriftTracker(model, sequences, attention_mix)
            ranks = []
            for (i, layer, attr), lr in zip(slots, wanted):  # in order: each sees the converted ones before it
                drift = tracker.moments(i)
                ranks.append(install(kind, i, layer, attr, layer_factors(kind, i, getattr(layer, attr), drift, lr)))
                tracker.advance(i)
            compensated = True
        else:
            if rank_allocation == "spectrum":
                svds = [layer_svd(kind, i, getattr(layer, attr), None) for i, layer, attr in slots]
                layer_ranks = allocate_ranks([f.s for f in svds], r * len(slots), min_rank=max(1, r // 4))
                lows = [svd.truncate(lr) for svd, lr in zip(svds, layer_ranks)]
            else:
                lows = [layer_factors(kind, i, getattr(layer, attr), None, lr)
                        for (i, layer, attr), lr in zip(slots, wanted)]
            ranks = [install(kind, i, layer, attr, low) for (i, layer, attr), low in zip(slots, lows)]
        cfg.ranks[kind] = ranks
    if compensated:
        cfg.init_options["compensate"] = True
    if keep_key_dims:
        cfg.init_options.update(keep_key_dims=keep_key_dims, key_selection=key_selection)
    if exact_cross:
        for _, layer, attr in _slots(model, "cross"):
            setattr(layer, attr, ExactCrossAttention.like(getattr(layer, attr)))
    if modules:
        first = cfg.ranks[modules[0]]
        cfg.kv_reduction = round(reduction_for_rank(d, sum(first) / len(first)), 6)
    cfg.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    model.mla_config = cfg
    log.info("converted: %s", cfg.describe(d))
    return cfg


def apply_structure(model, cfg: MLAConfig) -> None:
    """Give a freshly built stock model the module layout `cfg` describes (weights to be loaded)."""
    for kind in cfg.modules:
        ranks = cfg.ranks[kind]
        slots = list(_slots(model, kind))
        if len(ranks) != len(slots):
            raise ValueError(f"{kind}: {len(ranks)} ranks recorded for {len(slots)} layers")
        for (_, layer, attr), r in zip(slots, ranks):
            if cfg.init == "exact":  # a saved default-mode model: the identity down-projection has no weights
                from engine.mla.exact_latent import ExactLatentAttention

                setattr(layer, attr, ExactLatentAttention.shaped_like(getattr(layer, attr)))
            else:
                setattr(layer, attr, MLAAttention.like(getattr(layer, attr), r))
    if cfg.exact_cross:
        for _, layer, attr in _slots(model, "cross"):
            setattr(layer, attr, ExactCrossAttention.like(getattr(layer, attr)))
    model.mla_config = cfg


def set_attention_path(model, path: str = "auto", absorb: str = "auto") -> None:
    """Force every MLA module's compute path: "naive", "absorbed" or "auto" (tests, benchmarks)."""
    for m in model.modules():
        if isinstance(m, MLAAttention):
            m.path, m.absorb = path, absorb


__all__ = ["MODULE_KINDS", "apply_structure", "convert_model", "set_attention_path"]
