"""CPU, RAM and GPU samples (core/system.py): live psutil, the real NVML library's failure
paths, and a stand-in NVML library for the GPU this machine does not have."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from entrenar_tui.core.system import (
    GpuSample,
    RecordedSampler,
    SystemSample,
    SystemSampler,
    recorded_samples,
)

HAS_NVIDIA_GPU = any(Path("/proc/driver/nvidia/gpus").glob("*"))


def test_live_sample_is_sane():
    sampler = SystemSampler()
    try:
        samples = [sampler.sample() for _ in range(3)]
    finally:
        sampler.close()
    for s in samples:
        assert 0.0 <= s.cpu_percent <= 100.0
        assert s.cpu_count >= 1
        assert 0 < s.ram_used_bytes <= s.ram_total_bytes
        assert s.time > 0
    assert samples[0].time <= samples[-1].time
    if HAS_NVIDIA_GPU:
        assert samples[-1].gpus and samples[-1].gpu_note is None
        for gpu in samples[-1].gpus:
            assert 0 <= gpu.memory_used_bytes <= gpu.memory_total_bytes
            assert 0.0 <= gpu.utilization <= 100.0
            assert gpu.power_w is None or 0 < gpu.power_w < 2000  # watts, not milliwatts
    else:
        assert samples[-1].gpus == ()
        assert samples[-1].gpu_note.startswith("no NVIDIA GPU")


def test_sample_round_trips_through_json():
    sampler = SystemSampler()
    try:
        sample = sampler.sample()
    finally:
        sampler.close()
    assert recorded_samples([json.loads(json.dumps(sample.to_dict()))]) == [sample]


@pytest.mark.parametrize(
    ("code", "note"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no NVIDIA GPU (no NVIDIA driver)"),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA GPU (no NVIDIA driver)"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no NVIDIA GPU (NVML: Insufficient Permissions)"),
    ],
)
def test_nvml_init_failure_is_a_note(monkeypatch, code, note):
    def fail():
        raise pynvml.NVMLError(code)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    sampler = SystemSampler()
    sample = sampler.sample()
    assert sample.gpus == () and sample.gpu_note == note
    assert sampler.sample().gpu_note == note
    sampler.close()


def test_without_nvidia_ml_py_the_note_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    sample = SystemSampler().sample()
    assert sample.gpus == ()
    assert sample.gpu_note == "no NVIDIA GPU (nvidia-ml-py is not installed)"


# ------------------------------------------------------------------------------ stand-in NVML
# This machine has no NVIDIA GPU, so the one path that reads GPU fields runs against a small
# stand-in for the pynvml module: it answers like nvidia-ml-py does for one device (memory in
# bytes, power in milliwatts, the name as bytes in older releases). It stands in for hardware,
# not for the code under test.


class FakeNVMLError(Exception):
    pass


class FakeNVML:
    NVMLError = FakeNVMLError

    def __init__(self, count=1, unsupported=(), lost=False):
        self.count, self.unsupported, self.lost = count, set(unsupported), lost
        self.inits = self.shutdowns = 0

    def _check(self, name):
        if name in self.unsupported:
            raise FakeNVMLError("Not Supported")

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetMemoryInfo(self, handle):
        if self.lost:
            raise FakeNVMLError("GPU is lost")
        return SimpleNamespace(total=80 * 2**30, used=12 * 2**30, free=68 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._check("utilization")
        return SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetName(self, handle):
        return f"NVIDIA Fake {handle[1]}".encode()

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._check("temperature")
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return 61

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check("power")
        return 215_500  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        self._check("power")
        return 700_000  # milliwatts


def test_gpu_fields_and_units(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemSampler()
    sample = sampler.sample()
    assert sample.gpu_note is None
    assert sample.gpus == (
        GpuSample(
            index=0,
            name="NVIDIA Fake 0",
            utilization=37.0,
            memory_used_bytes=12 * 2**30,
            memory_total_bytes=80 * 2**30,
            temperature_c=61,
            power_w=215.5,
            power_limit_w=700.0,
        ),
    )
    assert isinstance(sample.gpus[0].utilization, float)
    sampler.sample()
    assert fake.inits == 1  # initialised once, on the first sample
    sampler.close()
    assert fake.shutdowns == 1


def test_fields_a_gpu_does_not_report_are_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(2, {"temperature", "power"}))
    gpus = SystemSampler().sample().gpus
    assert [g.index for g in gpus] == [0, 1] and gpus[1].name == "NVIDIA Fake 1"
    assert all(g.temperature_c is None and g.power_w is None for g in gpus)
    assert all(g.power_limit_w is None and g.utilization == 37.0 for g in gpus)


def test_a_lost_gpu_is_a_note_not_an_exception(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemSampler()
    assert len(sampler.sample().gpus) == 1
    fake.lost = True
    sample = sampler.sample()
    assert sample.gpus == () and sample.gpu_note == "GPU 0: NVML: GPU is lost"


def test_no_devices_is_a_note(monkeypatch):
    fake = FakeNVML(count=0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sample = SystemSampler().sample()
    assert sample.gpus == () and sample.gpu_note == "no NVIDIA GPU (the driver sees none)"
    assert fake.shutdowns == 1


def test_sampling_after_close_starts_nvml_again(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemSampler()
    sampler.sample()
    sampler.close()
    assert len(sampler.sample().gpus) == 1 and fake.inits == 2
    sampler.close()
    sampler.close()  # twice is harmless
    assert fake.shutdowns == 2


# ------------------------------------------------------------------------------ recorded


def sample_at(t: float, gpus=()) -> SystemSample:
    return SystemSample(t, 10.0 * t, 4, int(t) << 30, 16 << 30, gpus, None if gpus else "none")


def test_recorded_sampler_replays_in_order_then_repeats_the_last():
    samples = [sample_at(1), sample_at(2), sample_at(3)]
    sampler = RecordedSampler(samples)
    assert [sampler.sample() for _ in range(5)] == [*samples, samples[-1], samples[-1]]
    sampler.close()


def test_recorded_samples_round_trip_with_a_gpu():
    gpu = GpuSample(0, "NVIDIA H100", 93.0, 70 << 30, 80 << 30, 67.0, 512.25, 700.0)
    originals = [sample_at(1, (gpu,)), sample_at(2)]
    recorded = json.loads(json.dumps([s.to_dict() for s in originals]))
    assert isinstance(recorded[0]["gpus"], list)  # JSON has no tuples
    replayed = recorded_samples(recorded)
    assert replayed == originals
    assert isinstance(replayed[0].gpus, tuple) and replayed[0].gpus[0] == gpu
