"""Broken model folders end in one `ModelSourceError` naming the folder, never in a traceback (issue 18, item 2).

Hypothesis mutates the bundled tiny.en folder's config.json (values of every type in every key,
whole documents that are not objects, bytes that are not JSON) and its safetensors header
(truncations, corrupt tables, wrong shapes and offsets). Unchanged files are symlinked, so an
example costs a few milliseconds unless its mutation is harmless and the model really loads.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model_sources import ModelSourceError, resolve_model

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


@pytest.fixture(scope="module")
def source(tiny) -> Path:
    return Path(tiny.folder)


def _folder(source: Path, root: str, replace: dict[str, bytes]) -> Path:
    """A copy of `source` (symlinks) with some files' bytes replaced."""
    folder = Path(tempfile.mkdtemp(dir=root))
    for f in source.iterdir():
        if f.name in replace:
            (folder / f.name).write_bytes(replace[f.name])
        else:
            os.symlink(f, folder / f.name)
    return folder


def _loads_or_refuses(folder: Path) -> None:
    try:
        loaded = resolve_model(str(folder))
    except ModelSourceError as e:
        text = str(e)
        assert str(folder) in text and "\n" not in text and len(text) < 400, text
    else:  # a harmless change (a default value, an unused key) loads, and then it must also decode
        from engine.batching import measure_window_cache

        assert measure_window_cache(loaded).self_bytes_per_token > 0


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_config_json_fuzz_never_escapes_as_a_traceback(source, tmp_path, data):
    config = json.loads((source / "config.json").read_text())
    kind = data.draw(st.sampled_from(["value", "value", "value", "delete", "document", "bytes"]))
    if kind == "value":
        key = data.draw(st.sampled_from(sorted(config) + ["d_model", "encoder_layers", "vocab_size", "model_type"]))
        config[key] = data.draw(json_values)
        raw = json.dumps(config).encode()
    elif kind == "delete":
        del config[data.draw(st.sampled_from(sorted(config)))]
        raw = json.dumps(config).encode()
    elif kind == "document":
        raw = json.dumps(data.draw(json_values)).encode()
    else:
        raw = data.draw(st.binary(max_size=64))
    _loads_or_refuses(_folder(source, str(tmp_path), {"config.json": raw}))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_safetensors_header_fuzz_never_escapes_as_a_traceback(source, tmp_path, data):
    weights = source / "model.safetensors"
    with weights.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        table = json.loads(f.read(n))
        body = f.read(1 << 16)  # a truncated body: no mutated file ever holds a whole model
    kind = data.draw(st.sampled_from(["entry", "entry", "length", "garbage", "truncated"]))
    if kind == "entry":
        key = data.draw(st.sampled_from(sorted(table)))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
        value = data.draw(json_values)
        if field is None:
            table[key] = value
        elif isinstance(table[key], dict):
            table[key][field] = value
        header = json.dumps(table).encode()
        raw = struct.pack("<Q", len(header)) + header + body
    elif kind == "length":
        header = json.dumps(table).encode()
        raw = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1))) + header + body
    elif kind == "garbage":
        junk = data.draw(st.binary(max_size=256))
        raw = struct.pack("<Q", len(junk)) + junk + body
    else:
        full = struct.pack("<Q", n) + json.dumps(table).encode()
        raw = full[: data.draw(st.integers(0, len(full) + 100))]
    _loads_or_refuses(_folder(source, str(tmp_path), {"model.safetensors": raw}))


def test_named_breakages_say_what_is_wrong(source, tmp_path):
    config = json.loads((source / "config.json").read_text())
    cases = {
        "is not a JSON object": {"config.json": b"[1, 2, 3]"},
        "d_model = 100000000 is not an integer": {"config.json": json.dumps({**config, "d_model": 10**8}).encode()},
        "asks for 9 decoder layers, the weights have 4": {
            "config.json": json.dumps({**config, "decoder_layers": 9}).encode()},
        "model.safetensors is truncated": {"model.safetensors": (source / "model.safetensors").read_bytes()[:5000]},
    }
    for words, replace in cases.items():
        with pytest.raises(ModelSourceError, match=words.replace("(", r"\(")):
            resolve_model(str(_folder(source, str(tmp_path), replace)))
    shapes = json.loads((source / "config.json").read_text())
    shapes["num_mel_bins"] = 128
    with pytest.raises(ModelSourceError, match="has shape .* but config.json needs"):
        resolve_model(str(_folder(source, str(tmp_path), {"config.json": json.dumps(shapes).encode()})))


@pytest.fixture(scope="module")
def mla_source(tiny, tmp_path_factory) -> Path:
    import copy

    from engine.mla import convert_model, save_mla_model

    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.875, init="svd", exact_cross=True, source="tiny.en")
    return save_mla_model(model, cfg, tmp_path_factory.mktemp("mla") / "tiny-mla", tokenizer=tiny.tokenizer,
                          extra_files_from=tiny.folder)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_mla_config_fuzz_never_escapes_as_a_traceback(mla_source, tmp_path, data):
    """Ranks that contradict the weights or are negative, versions from the future, documents of any shape."""
    config = json.loads((mla_source / "mla_config.json").read_text())
    kind = data.draw(st.sampled_from(["value", "value", "value", "nested", "document"]))
    if kind == "value":
        config[data.draw(st.sampled_from(sorted(config)))] = data.draw(json_values)
    elif kind == "nested":
        lists = [k for k, v in config.items() if isinstance(v, (list, dict)) and v]
        key = data.draw(st.sampled_from(lists))
        if isinstance(config[key], list):
            config[key][data.draw(st.integers(0, len(config[key]) - 1))] = data.draw(json_values)
        else:
            config[key][data.draw(st.sampled_from(sorted(config[key])))] = data.draw(json_values)
    else:
        config = data.draw(json_values)
    _loads_or_refuses(_folder(mla_source, str(tmp_path), {"mla_config.json": json.dumps(config).encode()}))
