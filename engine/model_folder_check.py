"""Is a model folder whole? Cheap checks of config.json and the safetensors headers before any loading.

A folder can be broken in more ways than a loader reports well: truncated or corrupt weights,
a tensor of the wrong shape, a config that is not an object or asks for absurd sizes (which
a loader would try to allocate). Everything here reads only the JSON files and the first
bytes of each weights file, so a broken folder costs milliseconds and ends in one sentence
naming the folder, what is wrong and what to do; `engine.model_sources` turns it into a
`ModelSourceError` (`error: FOLDER: reason` on the command line, a message in the app).
"""
from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path
from typing import Any

FIX = "download or convert the model again"
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
# sane bounds of Whisper's shapes (large-v3: d 1280, 32 layers, 20 heads, ffn 5120, vocab 51866, 128 mels)
LIMITS: dict[str, tuple[int, int]] = {
    "d_model": (32, 8192),
    "encoder_layers": (1, 128), "decoder_layers": (1, 128),
    "encoder_attention_heads": (1, 256), "decoder_attention_heads": (1, 256),
    "encoder_ffn_dim": (1, 65536), "decoder_ffn_dim": (1, 65536),
    "vocab_size": (100, 1_000_000),
    "num_mel_bins": (1, 512),
    "max_source_positions": (1, 100_000), "max_target_positions": (8, 100_000),
}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class BrokenModelFolder(ValueError):
    """The folder cannot be a working model; the message says why and what to do."""


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BrokenModelFolder(f"{what} is missing; {FIX}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BrokenModelFolder(f"{what} is not readable JSON ({_short(e)}); {FIX}") from None
    if not isinstance(data, dict):
        raise BrokenModelFolder(f"{what} is not a JSON object (it holds a {type(data).__name__}); {FIX}")
    return data


def check_config(config: dict[str, Any]) -> None:
    """Every size Whisper's architecture reads is an integer in a sane range and heads divide the width."""
    for key, (lo, hi) in LIMITS.items():
        if key not in config:
            continue  # transformers has defaults for these
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise BrokenModelFolder(f"config.json: {key} = {json.dumps(value)[:40]} is not an integer from {lo} "
                                    f"to {hi}; {FIX}")
    d = config.get("d_model", 384)
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        if key in config and d % config[key]:
            raise BrokenModelFolder(f"config.json: d_model {d} is not a multiple of {key} {config[key]}; {FIX}")


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a safetensors file, checked against the file's real size (no tensor read)."""
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise BrokenModelFolder(f"{name} is truncated ({size} bytes); {FIX}")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise BrokenModelFolder(f"{name} is truncated or not a safetensors file (header of {n} bytes in a "
                                        f"file of {size}); {FIX}")
            raw = f.read(n)
    except OSError as e:
        raise BrokenModelFolder(f"{name} cannot be read ({_short(e)})") from None
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BrokenModelFolder(f"{name} has a corrupt header ({_short(e)}); {FIX}") from None
    if not isinstance(table, dict):
        raise BrokenModelFolder(f"{name} has a corrupt header (not a table of tensors); {FIX}")
    data_bytes = size - 8 - n
    for key, entry in table.items():
        if key == "__metadata__":
            continue
        _check_entry(name, key, entry, data_bytes)
    return table


def _check_entry(name: str, key: str, entry: Any, data_bytes: int) -> None:
    bad = f"{name}: tensor {key[:80]!r}"
    if not isinstance(entry, dict):
        raise BrokenModelFolder(f"{bad} has no description; {FIX}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise BrokenModelFolder(f"{bad} has an unknown type {json.dumps(dtype)[:20]}; {FIX}")
    if not (isinstance(shape, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape)):
        raise BrokenModelFolder(f"{bad} has no valid shape; {FIX}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise BrokenModelFolder(f"{bad} has no valid position in the file; {FIX}")
    if offsets[1] > data_bytes:
        raise BrokenModelFolder(f"{name} is truncated: tensor {key[:80]!r} ends at byte {offsets[1]} of "
                                f"{data_bytes}; {FIX}")
    if offsets[1] - offsets[0] != prod(shape) * DTYPE_BYTES[dtype]:
        raise BrokenModelFolder(f"{bad}: its bytes do not match its shape {shape}; {FIX}")


def expected_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """Shapes a Whisper checkpoint of this config must have (the ones whose mismatch transformers would
    otherwise re-initialise with a warning, or fail on deep inside)."""
    d = config.get("d_model", 384)
    mels = config.get("num_mel_bins", 80)
    vocab = config.get("vocab_size", 51865)
    return {
        "model.encoder.conv1.weight": [d, mels, 3],
        "model.encoder.conv2.weight": [d, d, 3],
        "model.decoder.embed_tokens.weight": [vocab, d],
        "model.decoder.embed_positions.weight": [config.get("max_target_positions", 448), d],
        "model.encoder.embed_positions.weight": [config.get("max_source_positions", 1500), d],
        "model.decoder.layer_norm.weight": [d],
        "model.encoder.layers.0.fc1.weight": [config.get("encoder_ffn_dim", 1536), d],
        "model.decoder.layers.0.fc1.weight": [config.get("decoder_ffn_dim", 1536), d],
    }


def _layer_count(tensors: dict[str, Any], stack: str) -> int:
    prefix = f"model.{stack}.layers."
    found = {int(k[len(prefix):].split(".")[0]) for k in tensors if k.startswith(prefix)
             and k[len(prefix):].split(".")[0].isdigit()}
    return max(found) + 1 if found else 0


def check_model_folder(folder: Path) -> None:
    """Raise BrokenModelFolder if config.json or the weights' headers cannot make a working Whisper model."""
    config = read_json_object(folder / "config.json", "config.json")
    check_config(config)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        table = read_json_object(index, index.name).get("weight_map")
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise BrokenModelFolder(f"{index.name} has no weight_map of file names; {FIX}")
        files = sorted({folder / Path(v).name for v in table.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BrokenModelFolder(f"no safetensors weights; {FIX}")
    tensors: dict[str, Any] = {}
    for f in files:
        if not f.is_file():
            raise BrokenModelFolder(f"{f.name} (listed in the index) is missing; {FIX}")
        tensors.update(safetensors_header(f))
    for stack in ("encoder", "decoder"):  # a layer without weights would be initialised at random, silently
        want, have = config.get(f"{stack}_layers"), _layer_count(tensors, stack)
        if want is not None and want != have:
            raise BrokenModelFolder(f"config.json asks for {want} {stack} layers, the weights have {have}; {FIX}")
    for key, shape in expected_shapes(config).items():
        got = tensors.get(key)
        if isinstance(got, dict) and got.get("shape") != shape:
            raise BrokenModelFolder(f"tensor {key} has shape {got.get('shape')}, but config.json needs {shape}; "
                                    f"the weights and config.json are from different models; {FIX}")


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]
