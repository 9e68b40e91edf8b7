"""PyTorch output (`torch.save` of a plain state dict) and torch <-> raw numpy bytes.

Files written here load with `torch.load(path, weights_only=True)`: only tensors, no pickled
classes. `torch.save` takes the whole dict, so unlike the safetensors writer this one cannot
stream; tensors kept in their source dtype stay memory-mapped views of the source file (the
page cache holds them, not the heap) and only cast tensors are materialised.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .apr import RAW_NUMPY, TensorSource, sha256_of

# safetensors dtype name -> torch dtype attribute name
TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
DTYPE_OF_TORCH = {v: k for k, v in TORCH_NAMES.items()}
# torch dtypes numpy cannot hold: moved through a same-width integer view
_BIT_VIEWS = {
    "BF16": "int16",
    "F8_E4M3": "uint8",
    "F8_E5M2": "uint8",
    "U16": "int16",
    "U32": "int32",
    "U64": "int64",
}


def dtype_name(tensor) -> str:
    """The safetensors dtype name of a torch tensor."""
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in DTYPE_OF_TORCH:
        from ..errors import UnsupportedError

        raise UnsupportedError(
            f"tensor dtype {name} cannot be converted", "cast the model to float32 first"
        )
    return DTYPE_OF_TORCH[name]


def torch_to_raw(tensor) -> np.ndarray:
    """A torch tensor's bytes as the numpy array APR/safetensors writers expect (bf16 as uint16)."""
    dtype = dtype_name(tensor)
    tensor = tensor.detach().cpu().contiguous()
    if dtype in _BIT_VIEWS:
        import torch

        bits = tensor.view(getattr(torch, _BIT_VIEWS[dtype])).numpy()
        return bits.view(RAW_NUMPY[dtype])
    return tensor.numpy()


def raw_to_torch(arr: np.ndarray, dtype: str):
    """The inverse of torch_to_raw; shares memory with `arr` (no copy)."""
    import torch

    arr = np.asarray(arr, order="C")
    with warnings.catch_warnings():  # memory-mapped sources are read-only; torch.save only reads
        warnings.filterwarnings("ignore", message=".*not writable.*")
        if dtype in _BIT_VIEWS:
            bits = torch.from_numpy(arr.view(np.dtype(_BIT_VIEWS[dtype])))
            return bits.view(getattr(torch, TORCH_NAMES[dtype]))
        return torch.from_numpy(arr)


def write_pth(path: Path, tensors: list[TensorSource]) -> dict[str, str]:
    """torch.save a {name: tensor} dict; returns each tensor's sha256 of its bytes."""
    import torch

    state, digests = {}, {}
    for tensor in tensors:
        arr = np.asarray(tensor.load(), order="C")
        if arr.nbytes != tensor.nbytes:
            raise ValueError(
                f"tensor {tensor.name}: loaded {arr.nbytes} bytes, planned {tensor.nbytes}"
            )
        digests[tensor.name] = sha256_of(arr)
        state[tensor.name] = raw_to_torch(arr, tensor.dtype)
    torch.save(state, path)
    return digests
