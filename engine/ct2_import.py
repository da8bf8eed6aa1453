"""Import a CTranslate2 Whisper folder (faster-whisper format) as a transformers model folder.

The result is a plain Hugging Face folder (safetensors weights, config, generation config,
tokenizer, feature extractor) so every later load is `from_pretrained` on safetensors and the
import runs once per model. Everything model-specific (special token ids, suppress lists,
alignment heads, language ids) is read from the CTranslate2 folder's own files.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from engine.atomic import replace_dir, temp_dir_beside
from engine.ct2_format import CT2FormatError, CT2Model, read_model_bin

log = logging.getLogger(__name__)

CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
# Token ids whose text is a language code, e.g. "<|en|>"; the code itself is between the bars.
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw|yue)\|>$")


def is_ct2_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in ("model.bin", "config.json"))


def _layer_count(model: CT2Model, prefix: str) -> int:
    # "encoder/layer_norm" also starts with "layer_": only count layer_<int>.
    ids = {int(m.group(1)) for name in model.variables if (m := re.match(rf"^{prefix}/layer_(\d+)/", name))}
    return len(ids)


def _t(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _linear(sd: dict, dst: str, model: CT2Model, src: str) -> None:
    sd[f"{dst}.weight"] = _t(model.get(f"{src}/weight"))
    if f"{src}/bias" in model.variables:
        sd[f"{dst}.bias"] = _t(model.get(f"{src}/bias"))


def _norm(sd: dict, dst: str, model: CT2Model, src: str) -> None:
    sd[f"{dst}.weight"] = _t(model.get(f"{src}/gamma"))
    sd[f"{dst}.bias"] = _t(model.get(f"{src}/beta"))


def _split_kv(sd: dict, dst: str, weight: np.ndarray, bias: np.ndarray, names: tuple[str, ...]) -> None:
    """Split a fused [q;k;v] or [k;v] projection; Whisper's k_proj has no bias (CT2 stores zeros)."""
    d = weight.shape[1]
    for i, name in enumerate(names):
        sd[f"{dst}.{name}.weight"] = _t(weight[i * d : (i + 1) * d])
        part = bias[i * d : (i + 1) * d]
        if name == "k_proj":
            if np.abs(part.astype(np.float32)).max() > 1e-6:
                log.warning("%s.k_proj has a non-zero bias in the CTranslate2 file; dropping it", dst)
            continue
        sd[f"{dst}.{name}.bias"] = _t(part)


def _attention(sd: dict, dst: str, model: CT2Model, src: str) -> None:
    _split_kv(sd, dst, model.get(f"{src}/linear_0/weight"), model.get(f"{src}/linear_0/bias"), ("q_proj", "k_proj", "v_proj"))
    _linear(sd, f"{dst}.out_proj", model, f"{src}/linear_1")


def convert_state_dict(model: CT2Model) -> dict[str, torch.Tensor]:
    """Map CTranslate2 variable names to `WhisperForConditionalGeneration` parameter names."""
    sd: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        _linear(sd, f"model.encoder.{conv}", model, f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = _t(model.get("encoder/position_encodings/encodings"))
    for i in range(_layer_count(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _attention(sd, f"{dst}.self_attn", model, f"{src}/self_attention")
        _norm(sd, f"{dst}.self_attn_layer_norm", model, f"{src}/self_attention/layer_norm")
        _linear(sd, f"{dst}.fc1", model, f"{src}/ffn/linear_0")
        _linear(sd, f"{dst}.fc2", model, f"{src}/ffn/linear_1")
        _norm(sd, f"{dst}.final_layer_norm", model, f"{src}/ffn/layer_norm")
    _norm(sd, "model.encoder.layer_norm", model, "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = _t(model.get("decoder/embeddings/weight"))
    sd["model.decoder.embed_positions.weight"] = _t(model.get("decoder/position_encodings/encodings"))
    for i in range(_layer_count(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _attention(sd, f"{dst}.self_attn", model, f"{src}/self_attention")
        _norm(sd, f"{dst}.self_attn_layer_norm", model, f"{src}/self_attention/layer_norm")
        _linear(sd, f"{dst}.encoder_attn.q_proj", model, f"{src}/attention/linear_0")
        _split_kv(sd, f"{dst}.encoder_attn", model.get(f"{src}/attention/linear_1/weight"),
                  model.get(f"{src}/attention/linear_1/bias"), ("k_proj", "v_proj"))
        _linear(sd, f"{dst}.encoder_attn.out_proj", model, f"{src}/attention/linear_2")
        _norm(sd, f"{dst}.encoder_attn_layer_norm", model, f"{src}/attention/layer_norm")
        _linear(sd, f"{dst}.fc1", model, f"{src}/ffn/linear_0")
        _linear(sd, f"{dst}.fc2", model, f"{src}/ffn/linear_1")
        _norm(sd, f"{dst}.final_layer_norm", model, f"{src}/ffn/layer_norm")
    _norm(sd, "model.decoder.layer_norm", model, "decoder/layer_norm")
    return sd


def _token_ids(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}


def build_configs(model: CT2Model, ct2_config: dict, tokens: dict[str, int]):
    """WhisperConfig + GenerationConfig from the CTranslate2 files (no hand-typed ids)."""
    from transformers import GenerationConfig, WhisperConfig

    emb = model.get("decoder/embeddings/weight")
    vocab, d_model = emb.shape
    enc_layers, dec_layers = _layer_count(model, "encoder"), _layer_count(model, "decoder")
    n_mels = model.get("encoder/conv1/weight").shape[1]
    ffn = model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]
    eot = tokens["<|endoftext|>"]
    sot = tokens["<|startoftranscript|>"]
    no_ts = tokens["<|notimestamps|>"]
    multilingual = vocab >= 51865  # openai-whisper's own rule: .en vocabularies are one smaller
    lang_ids = ct2_config.get("lang_ids") or []
    id_to_token = {v: k for k, v in tokens.items()}
    lang_to_id = {id_to_token[i]: i for i in lang_ids if i in id_to_token} if multilingual else {}
    config = WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(ffn),
        decoder_ffn_dim=int(ffn),
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        tie_word_embeddings=True,
    )
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        no_timestamps_token_id=no_ts,
        max_initial_timestamp_index=50,
        prev_sot_token_id=tokens.get("<|startofprev|>"),
        is_multilingual=multilingual,
        lang_to_id=lang_to_id,
        task_to_id={t: tokens[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in tokens},
        alignment_heads=[list(map(int, h)) for h in ct2_config.get("alignment_heads", [])],
        forced_decoder_ids=None,
    )
    return config, gen


def import_ct2_folder(src: Path, dst: Path, *, model_bin: Path | None = None) -> Path:
    """Import `src` (a CTranslate2 Whisper folder) into `dst` as a transformers folder.

    Written to a temp folder and renamed, so an interrupted import never leaves a half folder.
    `model_bin` overrides `src/model.bin` (used for models shipped in split parts).
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    bin_path = model_bin or src / "model.bin"
    log.info("importing CTranslate2 model %s -> %s", bin_path, dst)
    ct2 = read_model_bin(bin_path)
    if ct2.spec_name != "WhisperSpec":
        raise CT2FormatError(f"{bin_path}: not a Whisper model (spec {ct2.spec_name})")
    ct2_config = json.loads((src / "config.json").read_text())
    tok_path = src / "tokenizer.json"
    tokens = _token_ids(json.loads(tok_path.read_text(encoding="utf-8")))
    config, gen = build_configs(ct2, ct2_config, tokens)

    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    state = convert_state_dict(ct2)
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if m != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise CT2FormatError(f"weights do not match a Whisper layout: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.tie_weights()
    hf.generation_config = gen
    hf.to(torch.float16)  # CTranslate2 exports are float16 already: no precision is lost, half the disk

    tmp = temp_dir_beside(dst)
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer = WhisperTokenizerFast(tokenizer_file=str(tok_path), eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                         pad_token="<|endoftext|>")
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        (tmp / "import_source.json").write_text(json.dumps({"ct2_folder": str(src), "model_bin": str(bin_path)}, indent=2))
        replace_dir(tmp, dst, lambda _: True, "model cache")  # our own cache folder (an incomplete import)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
