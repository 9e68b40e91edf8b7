"""Training memory: the one estimator (`estimate.py`) that `inspect memory`, `lora plan`,
`distill estimate` and the TUI planner call, and a measurement of a real step to check it
against (`probe.py`).

Imports run one way: settings -> options; probe -> options, shape; notes -> options,
settings; estimate -> notes, options, settings, shape, activations; activations -> shape. Nothing here imports torch until a measurement runs.
"""

from .estimate import KEYS, MemoryEstimate, estimate_for_model, estimate_memory
from .options import OPTIMIZERS, PRECISION_BYTES
from .probe import MeasuredPeak, measure_run_peak, measure_training_step
from .settings import TrainSettings, device_problem

__all__ = [
    "KEYS",
    "OPTIMIZERS",
    "PRECISION_BYTES",
    "TrainSettings",
    "device_problem",
    "MeasuredPeak",
    "MemoryEstimate",
    "estimate_for_model",
    "estimate_memory",
    "measure_run_peak",
    "measure_training_step",
]
