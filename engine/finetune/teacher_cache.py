"""What the teacher says about each crop, computed once and kept on disk.

Per crop the stock model (teacher) transcribes the audio greedily with timestamps, and its
top-k next-token log-probabilities are recorded along three teacher-forced sequences shaped like real decoding (the idea of
`engine.mla.calibrate.calibration_sequences`): plain transcript after <|notimestamps|>,
timestamped transcript, and the timestamped transcript conditioned on previous text (the
teacher's transcripts of earlier crops of the same file), which covers the late decoder
positions that long-form decoding uses.

Greedy decoding is the expensive part on a CPU, so results are stored under the user cache
folder, keyed by the teacher's identity and the crop's content key (audio content hash,
placement, perturbation): a resumed run, a longer run or a run with more crops reuses them.
JSON for transcripts, safetensors for the log-probabilities; never pickle.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.atomic import atomic_write_bytes, atomic_write_text
from engine.finetune.data import SAMPLE_RATE, WINDOW_S, AudioPool, Crop
from engine.mla.calibrate import prompts
from engine.mla.decode import greedy_decode

log = logging.getLogger(__name__)

FORMAT = 1
CONTEXT = 223  # previous-text tokens after <|startofprev|>: half the decoder context, as the transcriber keeps


@dataclass
class Sequence:
    """One teacher-forced sequence: predictions at positions `loss_from`..end are trained.

    `targets[j]` is the token that follows position `loss_from + j` (the teacher's greedy
    choice, end-of-text last); `topk_idx` / `topk_logp` (positions x k) the teacher's top-k
    next-token ids and log-probabilities there (None for supervised sequences).
    """

    tokens: list[int]
    loss_from: int
    targets: list[int]
    kind: str
    topk_idx: torch.Tensor | None = None
    topk_logp: torch.Tensor | None = None
    weight: float = 1.0


@dataclass
class CropTargets:
    crop: Crop
    plain: list[int]
    stamped: list[int]
    sequences: list[Sequence]


def teacher_id(loaded) -> str:
    """Identity of a teacher model: its weights file(s) by size, date and first MiB, and its name."""
    h = hashlib.sha256(str(loaded.info.name).encode())
    for f in sorted(Path(loaded.folder).glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:20]


def default_cache_root() -> Path:
    from engine.user_dirs import cache_dir

    return cache_dir() / "finetune-teacher"


def crop_features(pool: AudioPool, crops: list[Crop], n_mels: int) -> torch.Tensor:
    """(n, n_mels, 3000) log-mel of the crops, each zero-padded to 30 s like a transcription window."""
    from engine.features import log_mel

    n = int(WINDOW_S * SAMPLE_RATE)
    batch = np.zeros((len(crops), n), dtype=np.float32)
    for i, c in enumerate(crops):
        s = pool.samples(c)[:n]
        batch[i, : len(s)] = s
    return log_mel(batch, n_mels=n_mels)


class TeacherCache:
    """Folder of per-crop teacher outputs for one teacher."""

    def __init__(self, root: str | Path, teacher: str) -> None:
        self.dir = Path(root) / teacher
        self.dir.mkdir(parents=True, exist_ok=True)

    def _transcript_path(self, crop: Crop) -> Path:
        return self.dir / f"{crop.key}.json"

    def _logits_path(self, crop: Crop, tag: str) -> Path:
        return self.dir / f"{crop.key}-{tag}.safetensors"

    def transcripts(self, crop: Crop) -> tuple[list[int], list[int]] | None:
        p = self._transcript_path(crop)
        if not p.is_file():
            return None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                return None
            return [int(t) for t in d["plain"]], [int(t) for t in d["stamped"]]
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable teacher transcript, recomputing", p)
            return None

    def put_transcripts(self, crop: Crop, plain: list[int], stamped: list[int]) -> None:
        atomic_write_text(self._transcript_path(crop), json.dumps(
            {"format": FORMAT, "crop": crop.__dict__, "plain": plain, "stamped": stamped}))

    def sequences(self, crop: Crop, tag: str) -> list[Sequence] | None:
        from safetensors import safe_open

        p = self._logits_path(crop, tag)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = json.loads(f.metadata()["sequences"])
                out = []
                for i, m in enumerate(meta):
                    out.append(Sequence(m["tokens"], m["loss_from"], m["targets"], m["kind"],
                                        f.get_tensor(f"idx{i}").long(), f.get_tensor(f"logp{i}").float(),
                                        m.get("weight", 1.0)))
                return out
        except (OSError, ValueError, KeyError, RuntimeError):
            log.warning("%s: unreadable teacher logits, recomputing", p)
            return None

    def put_sequences(self, crop: Crop, tag: str, seqs: list[Sequence]) -> None:
        from safetensors.torch import save

        tensors, meta = {}, []
        for i, s in enumerate(seqs):
            tensors[f"idx{i}"] = s.topk_idx.to(torch.int32).contiguous()
            tensors[f"logp{i}"] = s.topk_logp.to(torch.float16).contiguous()
            meta.append({"tokens": s.tokens, "loss_from": s.loss_from, "targets": s.targets, "kind": s.kind,
                         "weight": s.weight})
        atomic_write_bytes(self._logits_path(crop, tag), save(tensors, metadata={"sequences": json.dumps(meta)}))


def _text(tokens: list[int], eot: int) -> list[int]:
    return [t for t in tokens if t < eot]


def plan_sequences(model, plain: list[int], stamped: list[int], previous: list[int]) -> list[Sequence]:
    """The teacher-forced sequences of one crop (tokens and targets only)."""
    eot = int(model.config.eos_token_id)
    max_len = int(model.config.max_target_positions)
    p_prompt, ts_prompt = prompts(model)
    sot_prev = getattr(model.generation_config, "prev_sot_token_id", None)
    out = []

    def add(prefix: list[int], body: list[int], kind: str) -> None:
        body = body[: max_len - len(prefix) - 1]
        toks = prefix + body
        out.append(Sequence(toks, len(prefix) - 1, body + [eot], kind))

    add(p_prompt, plain, "plain")
    add(ts_prompt, stamped, "timestamped")
    if sot_prev is not None and previous:
        add([int(sot_prev)] + previous[-CONTEXT:] + ts_prompt, stamped, "conditioned")
    return out


@torch.inference_mode()
def topk_for(model, enc: torch.Tensor, seqs: list[Sequence], k: int) -> None:
    """Fill each sequence's teacher top-k in place (one decoder pass per sequence, encoder output given)."""
    for s in seqs:
        ids = torch.tensor([s.tokens], device=enc.device)
        hidden = model.model.decoder(input_ids=ids, encoder_hidden_states=enc, use_cache=False).last_hidden_state
        logits = model.proj_out(hidden[0, s.loss_from :]).float()
        logp = torch.log_softmax(logits, -1)
        val, idx = logp.topk(k, -1)
        # rounded as the cache stores them, so a run that computed them and one that read them
        # back (a resumed run) train on identical numbers
        s.topk_idx, s.topk_logp = idx.cpu(), val.cpu().to(torch.float16).float()


def previous_text(pool: AudioPool, crop: Crop, plains: dict[str, list[int]], eot: int) -> list[int]:
    """Teacher text of the crops of the same file that end before this one starts, in order."""
    before = [c for c in pool.train + pool.held_out
              if c.audio_id == crop.audio_id and c.start_s + c.length_s <= crop.start_s + 1e-3 and c.key in plains]
    before.sort(key=lambda c: c.start_s)
    toks: list[int] = []
    for c in before[-4:]:
        toks += _text(plains[c.key], eot)
    return toks[-CONTEXT:]


def build_targets(teacher, pool: AudioPool, crops: list[Crop], cache: TeacherCache, *, top_k: int = 32,
                  batch_size: int = 8, conditioned: bool = True,
                  report: Callable[[int, int], None] | None = None) -> list[CropTargets]:
    """Teacher transcripts and top-k log-probabilities of `crops`, from the cache where present.

    `report(done, total)` is called as crops are processed (teacher work can take minutes).
    """
    model = teacher
    eot = int(model.config.eos_token_id)
    param = next(model.parameters())
    n_mels = model.config.num_mel_bins
    _, ts_prompt = prompts(model)
    everything = pool.train + pool.held_out
    plains: dict[str, list[int]] = {}
    stampeds: dict[str, list[int]] = {}
    todo = []
    for c in everything if conditioned else crops:
        got = cache.transcripts(c)
        if got is None:
            todo.append(c)
        else:
            plains[c.key], stampeds[c.key] = got
    need = {c.key for c in crops}
    todo = [c for c in todo if c.key in need or conditioned]
    total = len(todo) + len(crops)
    done = 0
    if todo:
        log.info("teacher transcribes %d crops (%d cached)", len(todo), len(plains))
    for i in range(0, len(todo), batch_size):
        part = todo[i : i + batch_size]
        with torch.inference_mode():
            feats = crop_features(pool, part, n_mels).to(param.device, param.dtype)
            enc = model.model.encoder(feats).last_hidden_state
            st = greedy_decode(model, feats, ts_prompt, encoder_output=enc).tokens
            # the plain sequence reuses the timestamped text: the KL targets are the teacher's
            # distributions along whatever text is forced, and one greedy pass halves the cost
            pl = [_text(t, eot) for t in st]
        for c, a, b in zip(part, pl, st):
            plains[c.key], stampeds[c.key] = a, b
            cache.put_transcripts(c, a, b)
        done += len(part)
        if report:
            report(done, total)
    results: list[CropTargets] = []
    missing: list[tuple[Crop, str, list[Sequence]]] = []
    for c in crops:
        prev = previous_text(pool, c, plains, eot) if conditioned else []
        tag = hashlib.sha256(json.dumps([prev, top_k]).encode()).hexdigest()[:12]
        seqs = cache.sequences(c, tag)
        if seqs is None:
            seqs = plan_sequences(model, plains[c.key], stampeds[c.key], prev)
            missing.append((c, tag, seqs))
        results.append(CropTargets(c, plains[c.key], stampeds[c.key], seqs))
    done += len(crops) - len(missing)
    for i in range(0, len(missing), batch_size):
        part = missing[i : i + batch_size]
        with torch.inference_mode():
            feats = crop_features(pool, [c for c, _, _ in part], n_mels).to(param.device, param.dtype)
            enc = model.model.encoder(feats).last_hidden_state
        for row, (c, tag, seqs) in enumerate(part):
            topk_for(model, enc[row : row + 1], seqs, top_k)
            cache.put_sequences(c, tag, seqs)
        done += len(part)
        if report:
            report(done, total)
    return results
