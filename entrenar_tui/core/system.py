"""CPU, RAM and NVIDIA GPU samples behind one small interface (the TUI's system panel, bench).

NVML (`nvidia-ml-py`, imported as `pynvml`) is optional: without the library, the driver or a
GPU, `sample()` still works and says why there is no GPU. A recorded sampler replays fixed
samples so that snapshot tests and demos are deterministic.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    utilization: float  # percent, 0-100
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None = None


@dataclass(frozen=True)
class SystemSample:
    time: float  # time.time() of the sample
    cpu_percent: float  # whole machine, 0-100
    cpu_count: int
    ram_used_bytes: int
    ram_total_bytes: int
    gpus: tuple[GpuSample, ...] = ()
    gpu_note: str | None = None  # why there is no GPU data ("no NVIDIA GPU", "NVML: ...")

    def to_dict(self) -> dict:
        return asdict(self)


class SystemSampler:
    """Live samples from psutil and NVML. NVML is initialised once, on the first sample."""

    def __init__(self) -> None:
        self._nvml = None
        self._handles: list = []
        self._gpu_note: str | None = None
        self._started = False

    def _start_nvml(self) -> None:
        self._started = True
        try:
            import pynvml
        except ImportError:
            self._gpu_note = "no NVIDIA GPU (nvidia-ml-py is not installed)"
            return
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            self._gpu_note = f"no NVIDIA GPU ({_nvml_reason(exc)})"
            return
        if count == 0:
            self._gpu_note = "no NVIDIA GPU (the driver sees none)"
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            return
        try:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            self._gpu_note = f"no NVIDIA GPU ({_nvml_reason(exc)})"
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            return
        self._nvml = pynvml

    def sample(self) -> SystemSample:
        import psutil

        if not self._started:
            self._start_nvml()
            psutil.cpu_percent(None)  # the first call only primes the counter
        memory = psutil.virtual_memory()
        gpus, note = self._gpus()
        return SystemSample(
            time=time.time(),
            cpu_percent=float(psutil.cpu_percent(None)),
            cpu_count=psutil.cpu_count() or 1,
            ram_used_bytes=int(memory.total - memory.available),
            ram_total_bytes=int(memory.total),
            gpus=gpus,
            gpu_note=note,
        )

    def _gpus(self) -> tuple[tuple[GpuSample, ...], str | None]:
        """Every GPU that answers; one that stops answering (fallen off the bus, a driver
        reset) is left out and named in the note instead of failing the whole sample."""
        gpus, lost = [], []
        for index, handle in enumerate(self._handles):
            try:
                gpus.append(self._gpu(index, handle))
            except self._nvml.NVMLError as exc:
                lost.append(f"GPU {index}: NVML: {exc}")
        return tuple(gpus), "; ".join(lost) or self._gpu_note

    def _gpu(self, index: int, handle) -> GpuSample:
        nvml = self._nvml

        def maybe(call, scale: float = 1.0):
            try:
                return call(handle) / scale
            except nvml.NVMLError:  # a field this GPU or driver does not report
                return None

        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = maybe(lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        name = nvml.nvmlDeviceGetName(handle)
        return GpuSample(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name),
            utilization=float(utilization or 0.0),
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            temperature_c=maybe(lambda h: nvml.nvmlDeviceGetTemperature(h, 0)),
            power_w=maybe(nvml.nvmlDeviceGetPowerUsage, 1000.0),
            power_limit_w=maybe(nvml.nvmlDeviceGetEnforcedPowerLimit, 1000.0),
        )

    def close(self) -> None:
        """Shut NVML down; a later sample starts it again."""
        if self._nvml is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        self._nvml, self._handles, self._gpu_note, self._started = None, [], None, False


def _nvml_reason(exc: Exception) -> str:
    text = str(exc)
    if "Driver Not Loaded" in text or "Library Not Found" in text or "not found" in text.lower():
        return "no NVIDIA driver"
    return f"NVML: {text}"


@dataclass
class RecordedSampler:
    """Replays recorded samples in order, then keeps returning the last one; with
    `repeat=False` it returns None once they are used up (the sampling loop then ends, so a
    snapshot always shows exactly the recorded history)."""

    samples: Sequence[SystemSample]
    position: int = field(default=0)
    repeat: bool = True

    def sample(self) -> SystemSample | None:
        if not self.repeat and self.position >= len(self.samples):
            return None
        sample = self.samples[min(self.position, len(self.samples) - 1)]
        self.position += 1
        return sample

    def close(self) -> None:
        pass


def recorded_samples(data: Sequence[dict]) -> list[SystemSample]:
    """Samples from their `to_dict()` form (a recorded JSON file)."""
    out = []
    for item in data:
        gpus = tuple(GpuSample(**gpu) for gpu in item.get("gpus", ()))
        out.append(SystemSample(**{**item, "gpus": gpus}))
    return out
