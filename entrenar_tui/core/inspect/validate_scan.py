"""The value scan behind `inspect validate`: NaN, Inf and all-zero in one pass per chunk.

Why not `np.isfinite(arr).all()`: it writes a boolean array as large as the tensor and reads
it back, and bf16/f16 must first be widened to float32. Here each chunk (about 1 MiB, so it
stays in cache) costs one reduction that answers every question at once, and only a chunk
that looks suspicious is counted exactly:

- float32/float64: BLAS `dot(x, x)` (one streaming pass, SIMD, GIL released). Its sum of
  squares is finite iff every element is finite (NaN/Inf cannot cancel in a sum of
  non-negative terms), unless |x| is large enough to overflow, and it is zero when every
  element is zero (or so tiny its square underflows). Non-finite or zero sends the chunk to
  the exact bit count, so the answer is always exact.
- 16- and 8-bit floats (bf16, f16, fp8): integer maxima of the raw bits. Viewed unsigned, a
  negative NaN/Inf is >= sign|exponent-all-ones; viewed signed, a positive one is >=
  exponent-all-ones. Two reductions over a cached chunk, no temporaries, no widening.

`benchmarks/bench_validate.py` measures this against the `isfinite` loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHUNK_BYTES = 1 << 20  # fits in L2 with room to spare; big enough that Python overhead vanishes


@dataclass
class ValueCounts:
    """What a scan found in one tensor."""

    numel: int = 0
    nan: int = 0
    inf: int = 0
    nonzero: bool = False  # at least one element is not +-0

    @property
    def all_zero(self) -> bool:
        return self.numel > 0 and not self.nonzero

    def add(self, other: ValueCounts) -> None:
        self.numel += other.numel
        self.nan += other.nan
        self.inf += other.inf
        self.nonzero = self.nonzero or other.nonzero


@dataclass(frozen=True)
class _Bits:
    unsigned: type
    signed: type
    exponent: int  # |bits| at or above this is non-finite (Inf when equal, NaN above)
    has_inf: bool = True

    @property
    def sign(self) -> int:
        return 1 << (np.dtype(self.unsigned).itemsize * 8 - 1)


BITS = {
    "F64": _Bits(np.uint64, np.int64, 0x7FF0000000000000),
    "F32": _Bits(np.uint32, np.int32, 0x7F800000),
    "F16": _Bits(np.uint16, np.int16, 0x7C00),
    "BF16": _Bits(np.uint16, np.int16, 0x7F80),
    "F8_E5M2": _Bits(np.uint8, np.int8, 0x7C),
    "F8_E4M3": _Bits(np.uint8, np.int8, 0x7F, has_inf=False),  # E4M3FN: only S.1111.111 is NaN
}
SCANNABLE = frozenset(BITS)
_BLAS = {"F32": np.float32, "F64": np.float64}


def _exact(bits: np.ndarray, spec: _Bits) -> ValueCounts:
    """Count NaN/Inf/non-zero exactly from the bits (the slow path, for suspicious chunks)."""
    magnitude = np.bitwise_and(bits, spec.unsigned(spec.sign - 1))
    top = spec.unsigned(spec.exponent)
    if spec.has_inf:
        inf = int(np.count_nonzero(magnitude == top))
        nan = int(np.count_nonzero(magnitude > top))
    else:
        inf, nan = 0, int(np.count_nonzero(magnitude == top))
    return ValueCounts(bits.size, nan, inf, bool(magnitude.any()))


def _scan_blas(values: np.ndarray, spec: _Bits) -> ValueCounts:
    step = max(1, CHUNK_BYTES // values.itemsize)
    total = ValueCounts()
    for start in range(0, values.size, step):
        chunk = values[start : start + step]
        square_sum = float(np.dot(chunk, chunk))
        if math.isfinite(square_sum) and square_sum > 0.0:
            total.add(ValueCounts(chunk.size, 0, 0, True))
        else:
            total.add(_exact(chunk.view(spec.unsigned), spec))
    return total


def _scan_small(bits: np.ndarray, spec: _Bits) -> ValueCounts:
    step = max(1, CHUNK_BYTES // bits.itemsize)
    sign, top = spec.sign, spec.exponent
    signed = bits.view(spec.signed)
    total = ValueCounts()
    for start in range(0, bits.size, step):
        high = int(bits[start : start + step].max())  # negatives sort above every positive
        high_signed = int(signed[start : start + step].max())  # positives only
        if high >= sign | top or high_signed >= top:
            total.add(_exact(bits[start : start + step], spec))
        else:
            nonzero = high > sign or high_signed > 0
            total.add(ValueCounts(min(step, bits.size - start), 0, 0, nonzero))
    return total


def scan_bytes(raw: np.ndarray, dtype: str) -> ValueCounts:
    """Scan one tensor given as raw little-endian bytes (a uint8 view, e.g. of an mmap)."""
    spec = BITS[dtype]
    bits = raw.view(spec.unsigned).reshape(-1)
    if bits.size == 0:
        return ValueCounts()
    if dtype in _BLAS:
        return _scan_blas(raw.view(_BLAS[dtype]).reshape(-1), spec)
    return _scan_small(bits, spec)


_NUMPY_NAMES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
}


def scan_array(values: np.ndarray) -> ValueCounts:
    """Scan a float64/32/16 numpy array (dequantised GGUF, PyTorch state dicts)."""
    values = np.ascontiguousarray(values)
    if not values.dtype.isnative:  # big-endian GGUF data
        values = values.astype(values.dtype.newbyteorder("="))
    name = _NUMPY_NAMES.get(values.dtype)
    if name is None:
        raise TypeError(f"cannot scan a {values.dtype} array")
    return scan_bytes(values.reshape(-1).view(np.uint8), name)


# Byte offsets of the float16 scales inside one block of each quantised GGUF type (ggml's
# block structs). Quants are small integers, so a dequantised value is non-finite exactly
# when a scale of its block is: screening the scales reads 2-4 bytes per block instead of
# dequantising (gguf-py's numpy dequantiser runs at tens of MB/s).
_GGUF_SCALES = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
_GGUF_INTEGERS = {"I8", "I16", "I32", "I64"}


def _gguf_scale_screen(tensor, offsets: tuple[int, ...]) -> ValueCounts:
    import gguf

    _, type_size = gguf.GGML_QUANT_SIZES[tensor.tensor_type]
    blocks = np.asarray(tensor.data).reshape(-1, type_size)
    scales = [np.ascontiguousarray(blocks[:, at : at + 2]).reshape(-1) for at in offsets]
    return scan_bytes(np.concatenate(scales), "F16")


def scan_gguf_tensor(tensor) -> ValueCounts | None:
    """Scan a gguf-py ReaderTensor; None for integer tensors (nothing to check).

    For quantised types all-zero means every block scale is zero (exact in that direction;
    blocks whose quants are all zero under a non-zero scale are not looked for).
    """
    import gguf

    kind = tensor.tensor_type.name
    if kind in _GGUF_INTEGERS:
        return None
    raw = np.asarray(tensor.data)
    if kind in ("F32", "F16", "F64"):
        return scan_array(raw)
    if kind == "BF16":
        return scan_bytes(raw.reshape(-1).view(np.uint8), "BF16")
    offsets = _GGUF_SCALES.get(kind)
    if offsets is not None:
        screen = _gguf_scale_screen(tensor, offsets)
        if not (screen.nan or screen.inf):
            return ValueCounts(int(tensor.n_elements), 0, 0, screen.nonzero)
    values = gguf.quants.dequantize(raw, tensor.tensor_type)  # exact counts, or unknown layout
    return scan_array(np.asarray(values, dtype=np.float32))
