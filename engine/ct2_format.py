"""Reader for CTranslate2's `model.bin`: a flat list of named tensors, no pickle, no code.

Layout (little-endian): uint32 format version; string spec name; uint32 spec revision;
uint32 variable count; per variable: string name, uint8 rank, rank x uint32 dims, uint8 dtype,
uint32 byte count, raw bytes; then uint32 alias count and (alias, target) string pairs.
A string is a uint16 byte length (including a trailing NUL) followed by the bytes.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

# CTranslate2 DataType enum order.
_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: "bfloat16",
}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """The variables of a model.bin, aliases resolved to the arrays they point at."""

    spec_name: str
    spec_revision: int
    format_version: int
    variables: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise CT2FormatError(f"model.bin lacks variable {name!r}") from None

    def scalar(self, name: str, default: int | None = None) -> int | None:
        arr = self.variables.get(name)
        return default if arr is None else int(np.asarray(arr).reshape(-1)[0])


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise CT2FormatError("model.bin is truncated")
    return struct.unpack(fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "<H")
    raw = f.read(length)
    if len(raw) != length:
        raise CT2FormatError("model.bin is truncated")
    return raw.rstrip(b"\0").decode("utf-8")


def _bf16_to_f32(raw: bytes) -> np.ndarray:
    halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return halves.view(np.float32)


def read_model_bin(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 model.bin into numpy arrays (quantised int8 weights are refused)."""
    path = Path(path)
    with path.open("rb") as f:
        (version,) = _read(f, "<I")
        if version < 5 or version > 7:
            raise CT2FormatError(f"unsupported CTranslate2 format version {version}")
        spec = _read_string(f)
        (revision,) = _read(f, "<I")
        (count,) = _read(f, "<I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(f)
            (rank,) = _read(f, "<B")
            dims = _read(f, f"<{rank}I") if rank else ()
            (dtype_id,) = _read(f, "<B")
            (nbytes,) = _read(f, "<I")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise CT2FormatError("model.bin is truncated")
            dtype = _DTYPES.get(dtype_id)
            if dtype is None:
                raise CT2FormatError(f"variable {name}: unknown dtype id {dtype_id}")
            arr = _bf16_to_f32(raw) if dtype == "bfloat16" else np.frombuffer(raw, dtype=dtype)
            variables[name] = arr.reshape(dims) if dims else arr.reshape(())
        try:
            (n_alias,) = _read(f, "<I")
        except CT2FormatError:
            n_alias = 0
        for _ in range(n_alias):
            alias = _read_string(f)
            target = _read_string(f)
            if target in variables:
                variables[alias] = variables[target]
    quantised = [n for n, a in variables.items() if n.endswith("weight_scale")]
    if quantised:
        raise CT2FormatError("int8-quantised CTranslate2 models are not supported; use a float16/float32 export")
    log.debug("read %s: spec %s rev %d, %d variables", path, spec, revision, len(variables))
    return CT2Model(spec, revision, version, variables)
