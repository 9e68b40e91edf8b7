"""GGML block quantisation (Q8_0, Q4_0) byte-identical to gguf-py, several times faster.

Why our own: `gguf.quants.quantize` is single-threaded numpy that makes about a dozen
temporaries per block group (its round-half-away alone is eight passes). Here torch does the
same IEEE float32 operations in the same order, over cache-sized chunks with reused scratch
buffers, writing straight into the output (benchmarks/bench_quantize.py measures the ratio).

What makes the bytes identical to gguf-py (tests/integration/test_gguf_export.py checks it):
- the scale is computed as gguf-py does it (`amax / 127`; `peak / -8` where `peak` is the
  first value of largest magnitude; `1 / d`, or 0 where `d == 0`), all in float32, and stored
  as float16 rounded to nearest even;
- Q8_0 rounds half away from zero like gguf's `np_roundf`; `trunc(q + copysign(0.49999997, q))`
  equals it for every float32 (checked exhaustively over [0, 130], wider than Q8_0's range);
- Q4_0 computes `trunc(x * id + 8.5)` clipped to 0..15: the same two rounded operations;
- blocks torch cannot reproduce cheaply (a non-finite scale from inf/NaN input or a scale so
  small that `1 / d` overflows; a Q4_0 block whose largest magnitude appears with both signs,
  where only the first one's position decides) are re-done by gguf-py itself.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLOCK = 32
Q8_0_BYTES = 34  # float16 scale + 32 int8
Q4_0_BYTES = 18  # float16 scale + 16 bytes of packed nibbles
HALF_BELOW = float(np.nextafter(np.float32(0.5), np.float32(0)))  # 0.49999997
CHUNK_BLOCKS = 16384  # 2 MiB of float32 per task: cache-sized, few Python round trips
MAX_WORKERS = 8
_THREADS_LOCK = threading.Lock()


def can_quantize(shape: tuple[int, ...]) -> bool:
    """Block types need rows that are a whole number of 32-value blocks."""
    return len(shape) >= 1 and shape[-1] > 0 and shape[-1] % BLOCK == 0


def quantize(arr: np.ndarray, qtype) -> np.ndarray:
    """`gguf.quants.quantize(arr, qtype)`: our kernels for Q8_0/Q4_0, gguf-py for the rest."""
    import gguf

    kind = gguf.GGMLQuantizationType(qtype)
    if kind == gguf.GGMLQuantizationType.Q8_0:
        return quantize_q8_0(arr)
    if kind == gguf.GGMLQuantizationType.Q4_0:
        return quantize_q4_0(arr)
    return gguf.quants.quantize(np.asarray(arr, dtype=np.float32), kind)


def quantize_q8_0(arr: np.ndarray) -> np.ndarray:
    """Q8_0 blocks (uint8, shape (..., cols // 32 * 34)), identical to gguf-py's."""
    return _quantize(arr, Q8_0_BYTES, _q8_0_chunk, "Q8_0")


def quantize_q4_0(arr: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (uint8, shape (..., cols // 32 * 18)), identical to gguf-py's."""
    return _quantize(arr, Q4_0_BYTES, _q4_0_chunk, "Q4_0")


def _quantize(arr: np.ndarray, block_bytes: int, kernel, name: str) -> np.ndarray:
    import torch

    if not can_quantize(arr.shape):
        raise ValueError(
            f"cannot quantize shape {arr.shape} to {name}: rows must be a multiple of {BLOCK}"
        )
    blocks = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1, BLOCK)
    out = np.empty((blocks.shape[0], block_bytes), dtype=np.uint8)
    with warnings.catch_warnings():  # memory-mapped (read-only) input: torch only reads it
        warnings.filterwarnings("ignore", message=".*not writable.*")
        source = torch.from_numpy(blocks)
    target = torch.from_numpy(out.view(np.int8))
    starts = range(0, blocks.shape[0], CHUNK_BLOCKS)
    local = threading.local()

    def run(start: int) -> tuple[int, np.ndarray | None]:
        if not hasattr(local, "scratch"):
            rows = min(CHUNK_BLOCKS, blocks.shape[0])
            local.scratch = (
                torch.empty(rows, BLOCK),
                torch.empty(rows, BLOCK),
                torch.empty(rows, BLOCK, dtype=torch.int8),
            )
        stop = min(start + CHUNK_BLOCKS, blocks.shape[0])
        odd = kernel(
            source[start:stop], target[start:stop], *(s[: stop - start] for s in local.scratch)
        )
        return start, (odd.squeeze(1).numpy() if bool(odd.any()) else None)

    # One torch thread per chunk, chunks spread over a pool: no per-op thread barriers, which
    # stall badly when other processes share the cores. The lock keeps concurrent calls from
    # restoring each other's thread count wrongly.
    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                if len(starts) == 1:
                    results = [run(0)]
                else:
                    workers = min(len(starts), os.cpu_count() or 1, MAX_WORKERS)
                    with ThreadPoolExecutor(workers) as pool:
                        results = list(pool.map(run, starts))
        finally:
            torch.set_num_threads(previous)
    for start, odd in results:
        if odd is not None:
            stop = start + len(odd)
            _redo_with_gguf(blocks[start:stop], out[start:stop], odd, name)
    return out.reshape(*arr.shape[:-1], arr.shape[-1] // BLOCK * block_bytes)


# The kernels keep the ggml reference names (ggml-quants.c, gguf-py): x blocks, d scale, q quants.
def _scale_inverse(d):
    """gguf-py's `np.where(d == 0, 0, 1 / d)`, and which blocks torch must not finish.

    A block is odd when d is inf/NaN (inf or NaN input) or 1/d overflows (a subnormal d):
    then d * (1/d) is NaN or inf instead of about 1 (or 0 for an all-zero block)."""
    import torch

    inv = torch.reciprocal(d).masked_fill_(d == 0, 0)
    return inv, ~(d * inv <= 1.5)


def _q8_0_chunk(x, out, q, sign, _int8):
    """d = max|x| / 127; q = round_half_away(x * (1/d)) as int8. Returns the blocks to redo."""
    import torch

    top, bottom = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)
    d = torch.maximum(top, bottom.neg_()).abs_().div_(127)  # abs_: +0, never -0, like gguf's abs
    inv, odd = _scale_inverse(d)
    torch.mul(x, inv, out=q)
    torch.sign(q, out=sign)
    q.add_(sign, alpha=HALF_BELOW)  # exact: the addend is +-0.49999997
    out[:, 2:].copy_(q)  # float -> int8 truncates toward zero
    out[:, :2].copy_(d.to(torch.float16).view(torch.int8))
    return odd


def _q4_0_chunk(x, out, q, _sign, int8):
    """d = peak / -8 (peak: first value of largest |x|); nibble = trunc(x/d + 8.5) in 0..15."""
    import torch

    top, bottom = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)
    magnitude = bottom.neg()
    tie = top == magnitude  # +m and -m both present: only their order decides; gguf redoes it
    peak = torch.where(top > magnitude, top, bottom)
    peak = torch.where(tie, x[:, :1], peak)  # right for all-zero blocks: gguf takes x[0] (+0 or -0)
    d = peak.div_(-8)
    inv, odd = _scale_inverse(d)
    torch.mul(x, inv, out=q)
    int8.copy_(q.add_(8.5))  # >= 0.49 for the blocks kept, so int8's truncation is trunc
    nibbles = int8.clamp_(max=15).view(torch.uint8)
    torch.add(nibbles[:, :16], nibbles[:, 16:], alpha=16, out=out[:, 2:].view(torch.uint8))
    out[:, :2].copy_(d.to(torch.float16).view(torch.int8))
    return odd | (tie & (top != 0))


def _redo_with_gguf(blocks: np.ndarray, out: np.ndarray, odd: np.ndarray, name: str) -> None:
    import gguf

    kind = getattr(gguf.quants, name)
    with np.errstate(all="ignore"):
        out[odd] = kind.quantize_blocks(blocks[odd])
