"""The student's optimizer, as its `TrainSettings` say: torch's fused AdamW, bitsandbytes'
8-bit AdamW (it runs on CPU as well as CUDA), or SGD with momentum; and for 16-bit weights,
fp32 master copies that the optimizer updates (Micikevicius et al. 2018, "Mixed Precision
Training"), with dynamic loss scaling for fp16.

The memory estimator counts exactly this: AdamW's two states per trainable value (in fp32 with
master weights, else in the weights' dtype), 8-bit AdamW's two bytes plus an fp32 absmax per
256 values, SGD's one momentum buffer; master weights 4 bytes per trainable parameter.
"""

from __future__ import annotations

import torch

from ..memory.settings import TrainSettings

SGD_MOMENTUM = 0.9
FP16_INITIAL_SCALE = 2.0**16
FP16_GROWTH_INTERVAL = 2000  # steps without overflow before the scale doubles (as GradScaler)


def make_optimizer(params, settings: TrainSettings, learning_rate: float, weight_decay: float):
    """The optimizer over `params`, wrapped in master weights when the settings keep them."""
    params = list(params)
    if settings.uses_master_weights:
        return MasterWeights(
            params,
            lambda masters: _plain(masters, settings.optimizer, learning_rate, weight_decay),
            loss_scaling=settings.precision == "fp16",
        )
    return _plain(params, settings.optimizer, learning_rate, weight_decay)


def _plain(params, optimizer: str, learning_rate: float, weight_decay: float):
    if optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=learning_rate, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=learning_rate, momentum=SGD_MOMENTUM, weight_decay=weight_decay
        )
    # fused: one kernel per step, no foreach temporaries (what the memory estimator assumes)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=True)


def schedulable(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer an LR scheduler drives (the inner one under master weights)."""
    return optimizer.inner if isinstance(optimizer, MasterWeights) else optimizer


class MasterWeights:
    """fp32 copies of 16-bit parameters, updated by `inner`, copied back after each step.

    Gradients stay in the weights' dtype through backward (2 bytes each); at the step each one
    is cast to fp32 and applied to its master one tensor at a time, so the fp32 copy of a
    gradient never exists for more than one tensor. With fp16 the loss is scaled before
    backward and a step whose gradients overflow is skipped with the scale halved."""

    def __init__(self, params: list, make_inner, loss_scaling: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.masters = [
            p.detach().to(torch.float32).clone().requires_grad_(True) for p in self.params
        ]
        self.inner = make_inner(self.masters)
        self.scale = FP16_INITIAL_SCALE if loss_scaling else 1.0
        self.good_steps = 0
        self.skipped_steps = 0

    @property
    def param_groups(self) -> list[dict]:
        return self.inner.param_groups

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.scale != 1.0 else loss

    def _overflowed(self) -> bool:
        return any(
            p.grad is not None and not torch.isfinite(p.grad).all().item() for p in self.params
        )

    def step(self, max_grad_norm: float | None = None) -> bool:
        """Unscale, clip, update the masters and copy them back; False: skipped (overflow)."""
        if self.scale != 1.0 and self._overflowed():
            self.zero_grad()
            self.scale /= 2
            self.good_steps = 0
            self.skipped_steps += 1
            return False
        clip = 1.0
        if max_grad_norm:
            norms = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
            total = float(torch.stack(norms).norm()) / self.scale if norms else 0.0
            clip = min(1.0, max_grad_norm / (total + 1e-6))
        for param, master in zip(self.params, self.masters, strict=True):
            if param.grad is None:
                continue
            master.grad = param.grad.to(torch.float32).mul_(clip / self.scale)
            param.grad = None
            self.inner.step()  # steps the one master that has a gradient
            master.grad = None
            with torch.no_grad():
                param.copy_(master)
        self.good_steps += 1
        if self.scale != 1.0 and self.good_steps % FP16_GROWTH_INTERVAL == 0:
            self.scale *= 2
        return True

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None
        self.inner.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {
            "inner": self.inner.state_dict(),
            "masters": [master.detach().clone() for master in self.masters],
            "scale": self.scale,
            "good_steps": self.good_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        with torch.no_grad():
            for param, master, saved in zip(
                self.params, self.masters, state["masters"], strict=True
            ):
                master.copy_(saved)
                param.copy_(saved)
        self.scale, self.good_steps = state["scale"], state["good_steps"]
