"""entrenar: distillation, LoRA planning, model inspection and conversion.

Importing the package is cheap on purpose: no torch, textual or rich here, so
`entrenar --version` and the core's pure functions start instantly.
"""

__version__ = "0.1.0"
