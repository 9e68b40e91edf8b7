"""Model references, file formats and architecture facts."""

from .handle import Model, open_model
from .resolve import PACKAGED, ModelSource, resolve

__all__ = ["PACKAGED", "Model", "ModelSource", "open_model", "resolve"]
