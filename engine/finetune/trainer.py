"""The fine-tuning loop: label-free distillation from the stock model, or supervised on transcripts.

Why it looks the way it does (docs/DESIGN.md section 4): distilling the 87.5% model on a few
clips with a high learning rate collapsed into repetition loops, and even a careful run
overfits four minutes of audio after a few hundred steps. So the loop trains on many random
crops, at a low learning rate with warm-up and cosine decay, clips gradients, measures a
held-aside slice of the audio at regular intervals, keeps the best weights it has seen
there and stops when they stop improving. The output is always the best weights, written as
a normal Whisper-MLA folder that `transcribe` and the app load.

Only the decoder is trained by default, so every crop's encoder output is computed once and
reused: a step is one decoder forward and backward on a few crops' teacher-forced sequences.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import torch

from engine.cancel import CancelToken
from engine.finetune.checkpoint import TrainState, find_checkpoint, load_checkpoint, save_checkpoint
from engine.finetune.data import (Augment, AudioPool, Crop, LabelledFolderError, labelled_pairs, load_pool_audio,
                                  plan_crops, SAMPLE_RATE, WINDOW_S)
from engine.finetune.objective import AttentionMatcher, cross_entropy, topk_kl
from engine.finetune.teacher_cache import (CropTargets, Sequence, TeacherCache, build_targets, crop_features,
                                           default_cache_root, teacher_id)

log = logging.getLogger(__name__)

Trainable = Literal["mla", "decoder", "all"]
TRAINABLE = ("mla", "decoder", "all")
_MLA_PARAMS = (".kv_down.weight", ".k_up.weight", ".v_up.weight", ".v_up.bias")


@dataclass(frozen=True)
class FinetuneOptions:
    """How to train. `steps` or `minutes` bounds the run (training time; the one-off teacher pass is not counted)."""

    steps: int | None = None
    minutes: float | None = None
    trainable: Trainable = "mla"
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: float = 0.05  # share of the run with a linear warm-up
    min_lr_ratio: float = 0.1  # cosine decay ends at this share of lr
    batch_crops: int = 8  # crops per optimizer step (each brings 2-3 sequences)
    micro_batch: int = 4  # crops per forward/backward (gradient accumulation up to batch_crops)
    grad_clip: float = 1.0
    temperature: float = 1.0
    kl_weight: float = 1.0
    kl_fraction: float = 0.25  # share of positions with the KL term per step (the output layer is costly)
    attention_weight: float = 1.0  # layer-wise attention-output matching (converted modules only)
    top_k: int = 32
    crops: int = 128  # random training crops cut from the audio (label-free)
    short_share: float = 0.5  # share of utterance-like 3-20 s crops
    holdout_fraction: float = 0.15
    augment: float = 0.0  # share of crops with speed / noise / gain perturbation
    conditioned: bool = True  # also train on sequences conditioned on previous text
    eval_every: int = 20
    checkpoint_every: int = 40
    patience: int = 8  # evaluations without improvement before stopping (0: never stop early)
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True  # bf16/fp16 autocast on CUDA (ignored on the CPU)
    save_dtype: str = "float16"
    teacher_cache: str | None = None  # default: <model cache>/finetune-teacher
    cross_kv_cache_mb: float | None = None  # per-crop cross K/V kept in memory; None: a quarter of free memory
    snapshot_minutes: tuple[float, ...] = ()  # also write the best-so-far model at these training minutes
    ema: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights (e.g. 0.98)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.steps is not None and self.steps < 0:
            raise ValueError("steps must be >= 0")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError("minutes must be > 0")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("ema must be in [0, 1) (0: no weight average)")


@dataclass(frozen=True)
class FinetuneProgress:
    """One report: phase is "teacher" (step = crops done), "train", "eval" or "done"."""

    phase: str
    step: int
    total_steps: int | None
    loss: float | None = None
    held_out: float | None = None  # KL to the teacher (distillation) or WER (supervised)
    agreement: float | None = None  # top-1 agreement with the teacher on held-out windows
    elapsed_s: float = 0.0
    eta_s: float | None = None


ProgressCallback = Callable[[FinetuneProgress], None]


@dataclass
class FinetuneResult:
    out_dir: Path
    checkpoint_dir: Path
    steps: int
    train_seconds: float
    teacher_seconds: float
    stopped: str  # "steps", "minutes", "early-stop", "cancelled", "no-training"
    best_step: int
    initial: dict
    best: dict
    training: dict  # what mla_config.json records
    snapshots: dict[float, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- helpers
def trainable_parameters(model, which: str) -> dict[str, torch.nn.Parameter]:
    """Select and unfreeze the parameters of a trainable set; everything else is frozen.

    Embeddings (token table tied to the output projection, positions) stay frozen in every
    set: a few minutes of audio cannot retrain a 51k-word vocabulary without damage.
    """
    out = {}
    for n, p in model.named_parameters():
        if which == "mla":
            keep = n.endswith(_MLA_PARAMS)
        elif which == "decoder":
            keep = n.startswith("model.decoder.") and ".embed_" not in n
        else:
            keep = ".embed_" not in n
        p.requires_grad_(keep)
        if keep:
            out[n] = p
    if not out:
        raise ValueError(f"no trainable parameters in set {which!r} (is the model converted?)")
    return out


def lr_factor(fraction: float, warmup: float, min_ratio: float) -> float:
    """Linear warm-up from 10% over `warmup` of the run, then cosine decay to `min_ratio`."""
    f = min(max(fraction, 0.0), 1.0)
    if warmup > 0 and f < warmup:
        return 0.1 + 0.9 * f / warmup
    t = (f - warmup) / max(1e-9, 1.0 - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _fingerprint(student_dir: Path, options: FinetuneOptions, crops: list[Crop], method: str) -> str:
    import hashlib
    import json

    keep = {k: v for k, v in dataclasses.asdict(options).items()
            if k not in ("steps", "minutes", "patience", "device", "teacher_cache", "snapshot_minutes",
                         "eval_every", "checkpoint_every", "save_dtype", "cross_kv_cache_mb")}
    payload = json.dumps({"student": str(Path(student_dir).resolve()), "options": keep, "method": method,
                          "crops": [c.key for c in crops]}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass
class _Item:
    crop_index: int
    seq: Sequence


def cross_kv_budget(options: FinetuneOptions, device: torch.device) -> int:
    """Bytes the per-crop cross-attention K/V may take: the option, else a quarter of free memory."""
    if options.cross_kv_cache_mb is not None:
        return int(options.cross_kv_cache_mb * 1e6)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    import psutil

    return psutil.virtual_memory().available // 4


class _Run:
    """State of one training run (model, data, caches); `_train` drives it."""

    def __init__(self, student, teacher, tokenizer, pool: AudioPool, train: list[CropTargets],
                 held: list[CropTargets], options: FinetuneOptions, references: dict[str, str] | None) -> None:
        self.student, self.teacher, self.tok, self.pool, self.opt = student, teacher, tokenizer, pool, options
        self.train, self.held, self.references = train, held, references
        self.device = next(student.parameters()).device
        self.params = trainable_parameters(student, options.trainable)
        self.encoder_frozen = not any(p.requires_grad for p in student.model.encoder.parameters())
        self.crops = [t.crop for t in train] + [t.crop for t in held]
        self.enc_cache: dict[int, torch.Tensor] = {}
        # cross-attention keys/values per crop, when nothing that feeds them is trained: computing
        # them once instead of once per sequence and step is the largest saving on a CPU
        from transformers.models.whisper.modeling_whisper import WhisperAttention

        # bounded (least recently used out first): 18 MB per crop for tiny.en, 110 MB for small
        self.kv_cache: OrderedDict[int, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.kv_cache_budget = cross_kv_budget(options, self.device)
        self.kv_capacity: int | None = None
        self.share_cross_kv = self.encoder_frozen and all(
            type(layer.encoder_attn) is WhisperAttention and not layer.encoder_attn.k_proj.weight.requires_grad
            and not layer.encoder_attn.v_proj.weight.requires_grad for layer in student.model.decoder.layers)
        self.matcher = AttentionMatcher(student, teacher) if options.attention_weight > 0 and teacher is not None \
            else None
        self.eot = int(student.config.eos_token_id)
        amp = options.autocast and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    # encoder outputs ------------------------------------------------------------------------
    def encoder_out(self, idx: list[int], grad: bool) -> torch.Tensor:
        if self.encoder_frozen:
            missing = [i for i in idx if i not in self.enc_cache]
            for k in range(0, len(missing), 8):
                part = missing[k : k + 8]
                with torch.no_grad():
                    feats = crop_features(self.pool, [self.crops[i] for i in part], self.student.config.num_mel_bins)
                    enc = self.student.model.encoder(feats.to(self.device)).last_hidden_state
                for i, e in zip(part, enc):
                    self.enc_cache[i] = e
            return torch.stack([self.enc_cache[i] for i in idx])
        feats = crop_features(self.pool, [self.crops[i] for i in idx], self.student.config.num_mel_bins)
        with torch.set_grad_enabled(grad):
            return self.student.model.encoder(feats.to(self.device)).last_hidden_state

    @torch.no_grad()
    def cross_kv(self, idx: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, (keys, values) of shape (len(idx), heads, frames, head_dim)."""
        for i in idx:
            if i in self.kv_cache:
                self.kv_cache.move_to_end(i)
                continue
            enc = self.encoder_out([i], grad=False)
            kv = []
            for layer in self.student.model.decoder.layers:
                a = layer.encoder_attn
                shape = (1, -1, a.num_heads, a.head_dim)
                kv.append((a.k_proj(enc).view(shape).transpose(1, 2).contiguous(),
                           a.v_proj(enc).view(shape).transpose(1, 2).contiguous()))
            self.kv_cache[i] = kv
            if self.kv_capacity is None:
                per_crop = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
                self.kv_capacity = max(1, self.kv_cache_budget // per_crop)
                log.info("cross-attention K/V of up to %d crops kept (%.0f MB each, budget %.0f MB)",
                         self.kv_capacity, per_crop / 1e6, self.kv_cache_budget / 1e6)
            while len(self.kv_cache) > max(self.kv_capacity, len(idx)):
                self.kv_cache.popitem(last=False)
        layers = len(self.student.model.decoder.layers)
        return [(torch.cat([self.kv_cache[i][n][0] for i in idx]), torch.cat([self.kv_cache[i][n][1] for i in idx]))
                for n in range(layers)]

    def _decoder_cache(self, items: list[_Item]):
        """An EncoderDecoderCache whose cross-attention part already holds every row's keys/values."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for n, (k, v) in enumerate(self.cross_kv([it.crop_index for it in items])):
            cache.cross_attention_cache.update(k, v, n)
            cache.is_updated[n] = True
        return cache

    # one forward ------------------------------------------------------------------------------
    def forward_loss(self, items: list[_Item], grad: bool,
                     rng: random.Random | None = None) -> tuple[torch.Tensor, dict]:
        """Weighted loss of a micro-batch of sequences, and per-sequence numbers for evaluation.

        With `rng` (training) only a random `kl_fraction` of each sequence's positions goes
        through the output layer; evaluation always uses all of them.
        """
        uniq = sorted({it.crop_index for it in items})
        enc_all = self.encoder_out(uniq, grad)
        enc = enc_all[[uniq.index(it.crop_index) for it in items]]
        length = max(len(it.seq.tokens) for it in items)
        ids = torch.full((len(items), length), self.eot, dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        rows, cols, seq_of, picks = [], [], [], []
        for b, it in enumerate(items):
            s = it.seq
            ids[b, : len(s.tokens)] = torch.tensor(s.tokens)
            mask[b, : len(s.tokens)] = True
            n = len(s.targets)
            pick = list(range(n))
            if rng is not None and self.opt.kl_fraction < 1.0:  # the output layer dominates the cost
                pick = sorted(rng.sample(pick, max(1, round(self.opt.kl_fraction * n))))
            rows += [b] * len(pick)
            cols += [s.loss_from + j for j in pick]
            seq_of += [b] * len(pick)
            picks.append(pick)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.matcher is not None:
            self.matcher.reset()
            self.matcher.enabled = grad
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else _nullcontext()
        with ctx, torch.set_grad_enabled(grad):
            if self.share_cross_kv:
                # train mode keeps MLA modules on their differentiable (naive) path with a cache;
                # Whisper's dropout rates are 0, so nothing else changes
                self.student.train()
                try:
                    hidden = self.student.model.decoder(input_ids=ids, encoder_hidden_states=enc.to(ids.device),
                                                        cache=self._decoder_cache(items),
                                                        use_cache=True).last_hidden_state
                finally:
                    self.student.eval()
            else:
                hidden = self.student.model.decoder(input_ids=ids, encoder_hidden_states=enc.to(ids.device),
                                                    use_cache=False).last_hidden_state
            logits = self.student.proj_out(hidden[torch.tensor(rows), torch.tensor(cols)]).float()
        seq_of_t = torch.tensor(seq_of, device=logits.device)
        targets = torch.tensor([it.seq.targets[j] for it, pick in zip(items, picks) for j in pick],
                               device=logits.device)
        if all(it.seq.topk_idx is not None for it in items):
            idx = torch.cat([it.seq.topk_idx[pick] for it, pick in zip(items, picks)]).to(logits.device)
            logp = torch.cat([it.seq.topk_logp[pick] for it, pick in zip(items, picks)]).to(logits.device)
            per_pos = topk_kl(logits, idx, logp, self.opt.temperature)
        else:
            per_pos = cross_entropy(logits, targets)
        weights = torch.tensor([it.seq.weight / len(pick) for it, pick in zip(items, picks)], device=logits.device)
        w_pos = weights[seq_of_t]
        main = (per_pos * w_pos).sum() / weights.new_tensor([it.seq.weight for it in items]).sum()
        loss = self.opt.kl_weight * main
        att = None
        if self.matcher is not None and grad:
            with ctx:
                att = self.matcher.loss(mask)
            loss = loss + self.opt.attention_weight * att
            self.matcher.reset()
        agree = (logits.argmax(-1) == targets).float()
        stats = {"main": float(main.detach()), "att": None if att is None else float(att.detach()),
                 "agree_sum": float(agree.sum()), "positions": len(targets),
                 "main_sum": float((per_pos * w_pos).sum().detach()),
                 "weight_sum": float(sum(it.seq.weight for it in items))}
        return loss, stats

    # evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out numbers: KL to the teacher and top-1 agreement (distillation) or WER (supervised)."""
        if not self.held:
            return {}
        offset = len(self.train)
        items = [_Item(offset + i, s) for i, t in enumerate(self.held) for s in t.sequences]
        main_sum = weight_sum = agree = positions = 0.0
        for k in range(0, len(items), 6):
            _, st = self.forward_loss(items[k : k + 6], grad=False)
            main_sum += st["main_sum"]
            weight_sum += st["weight_sum"]
            agree += st["agree_sum"]
            positions += st["positions"]
        out = {"loss": main_sum / max(weight_sum, 1e-9), "agreement": agree / max(positions, 1)}
        if self.references is not None:
            out["wer"] = self._held_out_wer()
        return out

    def _held_out_wer(self) -> float:
        from engine.mla.decode import decode_prompt, greedy_decode
        from engine.wer import word_error_rate

        offset = len(self.train)
        hyps, refs = [], []
        for i, t in enumerate(self.held):
            enc = self.encoder_out([offset + i], grad=False)
            toks = greedy_decode(self.student, None, decode_prompt(self.student), encoder_output=enc).tokens[0]
            hyps.append(self.tok.decode(toks, skip_special_tokens=True))
            refs.append(self.references[t.crop.key])
        return word_error_rate(refs, hyps).wer


def teacher_agreement(student, pool: AudioPool, targets: list[CropTargets],
                      options: FinetuneOptions | None = None) -> dict:
    """Teacher-forced KL to the teacher ("loss") and top-1 agreement of `student` on `targets`.

    The numbers the loop's early stopping uses, for any set of crops (tests, benchmarks).
    """
    opt = dataclasses.replace(options or FinetuneOptions(), attention_weight=0.0)
    run = _Run(student, None, None, pool, [], targets, opt, None)
    try:
        return run.evaluate()
    finally:
        for p in student.parameters():
            p.requires_grad_(False)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------------- main entry
def finetune(student_dir: str | Path, out_dir: str | Path, *, audio: list[str | Path] | None = None,
             labelled_dir: str | Path | None = None, teacher: str | None = None,
             options: FinetuneOptions | None = None, progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None, resume: bool = False,
             checkpoint_dir: str | Path | None = None) -> FinetuneResult:
    """Fine-tune the Whisper-MLA folder `student_dir` and write the result to `out_dir`.

    With `audio` (label-free distillation): the teacher (default: the model the MLA folder
    was converted from) transcribes crops of the audio and the student learns its
    next-token distributions on those transcripts, plus layer-wise attention matching.
    With `labelled_dir` (audio + same-stem .txt, each clip at most 30 s): cross-entropy
    on the references, early stopping on the held-out clips' WER.

    Checkpoints go to `checkpoint_dir` (default `<out_dir>.finetune`); `resume=True`
    continues from the last one. A `cancel` or Ctrl-C saves a checkpoint and writes the
    best weights so far to `out_dir` (KeyboardInterrupt is re-raised after saving).
    """
    from engine.mla.storage import is_mla_dir, load_mla_model

    opt = options or FinetuneOptions()
    if opt.steps is None and opt.minutes is None:
        opt = dataclasses.replace(opt, steps=300)
    if (audio is None) == (labelled_dir is None):
        raise ValueError("give audio files (distillation) or a labelled folder (supervised), not both")
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".finetune")
    if not is_mla_dir(student_dir):
        raise ValueError(f"{student_dir}: not a Whisper-MLA folder (convert a model first: whisper-mla convert)")
    device = torch.device(opt.device if opt.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    student, cfg = load_mla_model(student_dir, device=device, dtype=torch.float32)
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast.from_pretrained(student_dir, local_files_only=True)
    t_teacher = time.perf_counter()
    method = "distill" if audio is not None else "supervised"
    references: dict[str, str] | None = None
    teacher_model = None
    teacher_name = ""
    if method == "distill":
        pool = plan_crops(load_pool_audio([Path(a) for a in audio]), opt.crops, holdout_fraction=opt.holdout_fraction,
                          short_share=opt.short_share, augment=Augment(probability=opt.augment), seed=opt.seed)
    else:
        pool, train, held, references = _labelled_data(student, tokenizer, Path(labelled_dir), opt)
    fingerprint = _fingerprint(student_dir, opt, pool.train + pool.held_out, method)
    if resume:  # refuse a foreign checkpoint before the (long) teacher pass
        _check_resume(ckpt_dir, fingerprint)
    if method == "distill" or opt.attention_weight > 0:
        from engine.model_sources import resolve_model

        spec = teacher or cfg.source or None
        if not spec:
            log.warning("%s records no source model; using the bundled tiny.en as teacher", student_dir)
        loaded_t = resolve_model(spec, device=device, dtype=torch.float32)
        if getattr(loaded_t.model, "mla_config", None) is not None:
            raise ValueError(f"teacher {spec} is itself an MLA model; give the stock model with --teacher")
        teacher_model, teacher_name = loaded_t.model.requires_grad_(False), loaded_t.info.name
    if method == "distill":
        cache = TeacherCache(opt.teacher_cache or default_cache_root(), teacher_id(loaded_t))

        def report(done: int, total: int) -> None:
            if progress:
                progress(FinetuneProgress("teacher", done, total, elapsed_s=time.perf_counter() - t_teacher))

        targets = build_targets(teacher_model, pool, pool.train + pool.held_out, cache, top_k=opt.top_k,
                                conditioned=opt.conditioned, report=report)
        train, held = targets[: len(pool.train)], targets[len(pool.train) :]
    run = _Run(student, teacher_model, tokenizer, pool, train, held, opt, references)
    if run.encoder_frozen:  # once, before the clock starts: every step then only runs the decoder
        run.encoder_out(list(range(len(run.crops))), grad=False)
    teacher_seconds = time.perf_counter() - t_teacher
    try:
        return _train(run, cfg, student_dir, out_dir, ckpt_dir, method, teacher_name, fingerprint, teacher_seconds,
                      progress, cancel, resume, [Path(a).name for a in (audio or [])] or [str(labelled_dir)])
    finally:
        if run.matcher is not None:
            run.matcher.close()


def distill(student_dir: str | Path, audio_paths: list[str | Path], out_dir: str | Path,
            options: FinetuneOptions | None = None, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, *, teacher: str | None = None, resume: bool = False) -> FinetuneResult:
    """Label-free distillation from the stock teacher on the user's audio (see `finetune`)."""
    return finetune(student_dir, out_dir, audio=list(audio_paths), teacher=teacher, options=options,
                    progress=progress, cancel=cancel, resume=resume)


def supervised(student_dir: str | Path, labelled_dir: str | Path, out_dir: str | Path,
               options: FinetuneOptions | None = None, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, *, resume: bool = False) -> FinetuneResult:
    """Supervised fine-tuning on audio + same-stem .txt pairs (see `finetune`)."""
    opt = dataclasses.replace(options or FinetuneOptions(), attention_weight=0.0)
    return finetune(student_dir, out_dir, labelled_dir=labelled_dir, options=opt, progress=progress,
                    cancel=cancel, resume=resume)


def _labelled_data(student, tokenizer, folder: Path, opt: FinetuneOptions):
    from engine.mla.calibrate import prompts

    clips = labelled_pairs(folder)
    pool = load_pool_audio([c.audio for c in clips])
    eot = int(student.config.eos_token_id)
    plain, _ = prompts(student)
    targets, refs = [], {}
    for clip, aid in zip(clips, list(pool.audio)):
        dur = len(pool.audio[aid]) / SAMPLE_RATE
        if dur > WINDOW_S:
            raise LabelledFolderError(f"{clip.audio}: {dur:.1f} s is longer than one 30 s window; supervised "
                                      f"fine-tuning needs clips of at most 30 s with their own transcript")
        crop = Crop(aid, clip.audio.name, 0.0, round(dur, 3))
        body = tokenizer.encode(" " + clip.text, add_special_tokens=False)
        seq = Sequence(plain + body, len(plain) - 1, body + [eot], "reference")
        targets.append(CropTargets(crop, body, [], [seq]))
        refs[crop.key] = clip.text
    rng = random.Random(opt.seed)
    order = list(range(len(targets)))
    rng.shuffle(order)
    n_held = max(1, int(round(opt.holdout_fraction * len(targets)))) if len(targets) >= 5 else 0
    held = [targets[i] for i in order[:n_held]]
    train = [targets[i] for i in order[n_held:]]
    pool.train, pool.held_out = [t.crop for t in train], [t.crop for t in held]
    return pool, train, held, refs


def _check_resume(ckpt_dir: Path, fingerprint: str) -> None:
    import json

    found = find_checkpoint(ckpt_dir)
    if found is not None and json.loads((found / "state.json").read_text(encoding="utf-8")).get(
            "fingerprint") != fingerprint:
        raise ValueError(f"{found}: checkpoint of a different run (model, data or options changed); "
                         f"remove it or start without --resume")


def _metric(ev: dict) -> float:
    return ev.get("wer", ev.get("loss", float("inf")))


def _train(run: _Run, cfg, student_dir: Path, out_dir: Path, ckpt_dir: Path, method: str, teacher_name: str,
           fingerprint: str, teacher_seconds: float, progress: ProgressCallback | None,
           cancel: CancelToken | None, resume: bool, data_names: list[str]) -> FinetuneResult:
    opt = run.opt
    params = run.params
    decay = [p for n, p in params.items() if p.ndim >= 2]
    no_decay = [p for n, p in params.items() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=opt.lr)
    state = TrainState(fingerprint=fingerprint)
    best = {n: p.detach().clone() for n, p in params.items()}
    ema = {n: p.detach().clone() for n, p in params.items()} if opt.ema else None
    initial: dict = {}
    if resume:
        found = find_checkpoint(ckpt_dir)
        if found is None:
            log.warning("no checkpoint in %s: starting from the beginning", ckpt_dir)
        else:
            import json

            saved = json.loads((found / "state.json").read_text(encoding="utf-8"))
            if saved.get("fingerprint") != fingerprint:
                raise ValueError(f"{found}: checkpoint of a different run (model, data or options changed); "
                                 f"remove it or start without --resume")
            state, best, saved_ema = load_checkpoint(found, params, optimizer)
            if ema is not None:
                ema = saved_ema or {n: p.detach().clone() for n, p in params.items()}
            initial = state.evals[0] if state.evals else {}
            log.info("resumed at step %d (%.0f s trained)", state.step, state.train_seconds)
    total = opt.steps
    budget = opt.minutes * 60 if opt.minutes else None
    train_items = [[_Item(i, s) for s in t.sequences] for i, t in enumerate(run.train)]
    snapshots: dict[float, Path] = {}
    pending_snaps = sorted(m for m in opt.snapshot_minutes if m * 60 > state.train_seconds)
    stopped = ""
    last_loss: float | None = None

    def fraction() -> float:
        if total:
            return state.step / total
        return state.train_seconds / budget if budget else 1.0

    def emit(phase: str, ev: dict | None = None) -> None:
        if not progress:
            return
        f = fraction()
        eta = state.train_seconds * (1 - f) / f if f > 0 else None
        if budget:
            eta = max(0.0, budget - state.train_seconds)
        progress(FinetuneProgress(phase, state.step, total, last_loss, None if not ev else _metric(ev),
                                  None if not ev else ev.get("agreement"), state.train_seconds, eta))

    def do_eval() -> None:
        with _weights_swapped(params, ema):  # with a weight average, that is what is judged and kept
            _judge()

    def _judge() -> None:
        ev = run.evaluate()
        if not ev:
            return
        ev = {"step": state.step, "train_seconds": round(state.train_seconds, 1), **ev}
        state.evals.append(ev)
        m = _metric(ev)
        if state.best_metric is None or m < state.best_metric - 1e-6:
            state.best_metric, state.best_step, state.stale_evals = m, state.step, 0
            for n, p in params.items():
                best[n] = p.detach().clone()
        else:
            state.stale_evals += 1
        log.info("step %d: held-out %s", state.step, {k: round(v, 4) for k, v in ev.items() if isinstance(v, float)})
        emit("eval", ev)

    def write_output(target: Path) -> Path:
        return _write_model(run, cfg, best, target, student_dir, method, teacher_name, state, data_names, stopped,
                            initial)

    if not state.evals and run.held:
        t0 = time.perf_counter()
        do_eval()
        state.train_seconds += time.perf_counter() - t0
        initial = dict(state.evals[0])
    interrupted: BaseException | None = None
    try:
        while True:
            if cancel is not None and cancel.cancelled:
                stopped = "cancelled"
                break
            if total is not None and state.step >= total:
                stopped = "steps"
                break
            if budget is not None and state.train_seconds >= budget:
                stopped = "minutes"
                break
            if opt.patience and run.held and state.stale_evals >= opt.patience:
                stopped = "early-stop"
                break
            t0 = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = opt.lr * lr_factor(fraction(), opt.warmup, opt.min_lr_ratio)
            rng = random.Random(opt.seed * 1_000_003 + state.step)
            chosen = [rng.randrange(len(run.train)) for _ in range(opt.batch_crops)]
            optimizer.zero_grad(set_to_none=True)
            losses = []
            for k in range(0, len(chosen), opt.micro_batch):
                items = [it for c in chosen[k : k + opt.micro_batch] for it in train_items[c]]
                share = len(chosen[k : k + opt.micro_batch]) / len(chosen)
                # long (conditioned) and short sequences in separate passes: padding everything to
                # the longest would triple the decoder's work
                groups = [g for g in ([it for it in items if len(it.seq.tokens) > 128],
                                      [it for it in items if len(it.seq.tokens) <= 128]) if g]
                total_w = sum(it.seq.weight for it in items)
                for g in groups:
                    loss, _ = run.forward_loss(g, grad=True, rng=rng)
                    loss = loss * share * sum(it.seq.weight for it in g) / total_w
                    (run.scaler.scale(loss) if run.scaler else loss).backward()
                    losses.append(float(loss.detach()))
            if run.scaler:
                run.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(list(params.values()), opt.grad_clip)
            if run.scaler:
                run.scaler.step(optimizer)
                run.scaler.update()
            else:
                optimizer.step()
            state.step += 1
            if ema is not None:
                _update_average(ema, params, min(opt.ema, (1 + state.step) / (10 + state.step)))
            last_loss = sum(losses)
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {state.step}; lower the learning rate")
            state.train_seconds += time.perf_counter() - t0
            emit("train")
            t0 = time.perf_counter()
            snap_due = bool(pending_snaps) and state.train_seconds >= pending_snaps[0] * 60
            if run.held and (state.step % opt.eval_every == 0 or snap_due):
                do_eval()
            if state.step % opt.checkpoint_every == 0:
                save_checkpoint(ckpt_dir, params, best, optimizer, state, ema)
            state.train_seconds += time.perf_counter() - t0
            while pending_snaps and state.train_seconds >= pending_snaps[0] * 60:
                m = pending_snaps.pop(0)
                stopped = f"snapshot at {m:g} min"
                snapshots[m] = write_output(out_dir.with_name(f"{out_dir.name}-at-{m:g}min"))
                stopped = ""
    except KeyboardInterrupt as e:
        stopped, interrupted = "cancelled", e
    if run.held and state.evals and state.evals[-1]["step"] != state.step and stopped != "cancelled":
        do_eval()
    save_checkpoint(ckpt_dir, params, best, optimizer, state, ema)
    if not run.held:  # nothing to select on: the final weights (or their average) are the result
        best = {n: (ema[n] if ema is not None else p).detach().clone() for n, p in params.items()}
    if state.step == 0 and stopped != "cancelled":
        stopped = "no-training"
    out = write_output(out_dir)
    emit("done", state.evals[-1] if state.evals else None)
    best_ev = next((e for e in state.evals if e["step"] == state.best_step), {})
    result = FinetuneResult(out, ckpt_dir / "checkpoint", state.step, state.train_seconds, teacher_seconds, stopped,
                            state.best_step, initial, best_ev, run.student.mla_config.training)
    result.snapshots = snapshots
    if interrupted is not None:
        raise interrupted
    return result


def _update_average(ema: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * weights (beta ramps up over the first steps, as in Polyak averaging)."""
    with torch.no_grad():
        for n, p in params.items():
            ema[n].lerp_(p.detach(), 1.0 - beta)


@contextlib.contextmanager
def _weights_swapped(params: dict[str, torch.nn.Parameter], ema: dict[str, torch.Tensor] | None):
    """The averaged weights in the model for the block (nothing changes without an average)."""
    if ema is None:
        yield
        return
    live = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(ema[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(live[n])


def _write_model(run: _Run, cfg, best: dict[str, torch.Tensor], target: Path, student_dir: Path, method: str,
                 teacher_name: str, state: TrainState, data_names: list[str], stopped: str, initial: dict) -> Path:
    """Write the best weights as a normal MLA folder; the live weights are put back afterwards."""
    from engine.mla.storage import save_mla_model

    opt = run.opt
    current = {n: p.detach().clone() for n, p in run.params.items()}
    best_ev = next((e for e in state.evals if e["step"] == state.best_step), {})
    training = {
        "method": method,
        "teacher": teacher_name,
        "data": data_names,
        "audio_seconds": round(run.pool.seconds, 1),
        "train_crops": len(run.train),
        "held_out_windows": len(run.held),
        "steps": state.step,
        "best_step": state.best_step,
        "train_seconds": round(state.train_seconds, 1),
        "stopped": stopped,
        "trainable": opt.trainable,
        "options": {k: v for k, v in dataclasses.asdict(opt).items() if k not in ("teacher_cache",)},
        "held_out_initial": initial,
        "held_out_final": best_ev,
        "from": str(student_dir),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    new_cfg = dataclasses.replace(cfg, training=training)
    try:
        with torch.no_grad():
            for n, p in run.params.items():
                p.copy_(best[n])
        run.student.mla_config = new_cfg
        return save_mla_model(run.student, new_cfg, target, extra_files_from=student_dir,
                              dtype=getattr(torch, opt.save_dtype))
    finally:
        with torch.no_grad():
            for n, p in run.params.items():
                p.copy_(current[n])
