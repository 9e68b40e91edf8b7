"""Format conversion: GGUF, safetensors, pth and APR writers, each verified after writing.

`convert_model` is re-exported lazily, so reading an .apr file (which imports `.apr`) does not
import the dispatcher and its dependencies.
"""

from __future__ import annotations

__all__ = ["ConvertResult", "convert_model"]


def __getattr__(name: str):
    if name in __all__:
        from . import dispatch

        return getattr(dispatch, name)
    raise AttributeError(name)
