"""Reading tensor bytes as numpy arrays (memory-mapped), widening bf16/f16 to float32."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from .tensors import TensorInfo

MAX_DIMS = 64  # numpy's limit on dimensions
MAX_DIM = 1 << 63  # numpy sizes are signed 64-bit


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32; numpy has no bf16, so widen the bits."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


NUMPY_DTYPES = {  # safetensors dtype -> numpy (bfloat16 and float8 have none)
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors_tensor(info: TensorInfo, as_float32: bool = True) -> np.ndarray:
    """Memory-map one tensor's bytes; widen floats to float32 when asked."""
    if len(info.shape) > MAX_DIMS or any(d >= MAX_DIM for d in info.shape):
        raise UnsupportedError(
            f"{info.file}: tensor {info.name!r} has shape {list(info.shape)[:8]}..., which "
            "numpy cannot hold (at most 64 dimensions, each under 2^63)",
            "the header is corrupt or the tensor is not a weight; re-export the model",
        )
    if info.numel == 0:
        return np.zeros(info.shape, dtype=np.float32)
    if info.dtype == "BF16":
        raw = np.memmap(info.file, dtype=np.uint16, mode="r", offset=info.offset, shape=info.shape)
        return bf16_to_f32(np.asarray(raw)) if as_float32 else raw
    if info.dtype.startswith("F8"):
        import torch

        raw = np.fromfile(info.file, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        tdt = torch.float8_e4m3fn if info.dtype == "F8_E4M3" else torch.float8_e5m2
        return torch.from_numpy(raw).view(tdt).float().reshape(info.shape).numpy()
    arr = np.memmap(
        info.file, dtype=NUMPY_DTYPES[info.dtype], mode="r", offset=info.offset, shape=info.shape
    )
    return arr.astype(np.float32) if as_float32 and info.dtype in {"F16", "F64"} else arr
