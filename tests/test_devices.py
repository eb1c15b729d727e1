"""The one place that chooses device, precision and memory format: CPUs with and without bf16, CUDA GPUs with
and without bf16 tensor cores, Apple's MPS (faked: these machines have none), and the glibc allocator setting."""

import os
import pickle
import platform

import pytest
import torch
import torch._dynamo  # noqa: F401 -- imported before any torch function is patched (it records them at import)
from torch.utils.data import DataLoader

from mammo_utils.config import load_config
from mammo_utils.runs import devices
from mammo_utils.runs.devices import keep_freed_memory, placement, resolve_accelerator, resolve_precision


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.delenv("MAMMO_PRECISION", raising=False)
    monkeypatch.delenv("MAMMO_CPU_BF16", raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.mark.parametrize("flags, expected", [({"avx2", "avx512_bf16"}, "bf16-mixed"), ({"avx2", "amx_bf16"}, "bf16-mixed"),
                                             ({"avx2", "fma"}, "32-true")], ids=["avx512-bf16", "amx", "avx2-only"])
def test_cpu_precision_follows_the_cpu_flags(no_gpu, monkeypatch, flags, expected):
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    where = placement(load_config("smoke", "synthetic"))
    assert (where.accelerator, where.device.type, where.precision) == ("cpu", "cpu", expected)
    assert where.channels_last  # oneDNN prefers channels_last in fp32 and bf16 alike
    assert where.bf16_on_cpu == (expected == "bf16-mixed")
    assert where.autocast_dtype == (torch.bfloat16 if expected == "bf16-mixed" else None)


def test_precision_can_be_forced_and_bf16_switched_off(no_gpu, monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert resolve_precision(load_config("smoke", "synthetic", precision="32-true")) == "32-true"
    monkeypatch.setenv("MAMMO_CPU_BF16", "0")  # a bf16 machine running the path of a laptop without it
    assert resolve_precision(load_config("smoke", "synthetic")) == "32-true"


@pytest.mark.parametrize("capability, expected", [((7, 5), "16-mixed"), ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")],
                         ids=["T4", "A100", "H100"])
def test_gpus_without_bf16_tensor_cores_get_fp16(monkeypatch, capability, expected):
    monkeypatch.delenv("MAMMO_PRECISION", raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    # A T4 "supports" bf16 by emulation; the choice must not rest on that answer.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    where = placement(load_config("smoke", "synthetic"))
    assert (where.accelerator, where.device.type, where.precision, where.channels_last) == (
        "gpu", "cuda", expected, True)


def test_apple_silicon_gets_mps_in_fp32_without_touching_cuda(monkeypatch):
    monkeypatch.delenv("MAMMO_PRECISION", raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)

    def cuda_only(*args, **kwargs):
        raise AssertionError("a CUDA-only API was called on a Mac")

    for name in ("is_available", "get_device_capability", "is_bf16_supported", "get_device_name", "device_count",
                 "synchronize"):
        monkeypatch.setattr(torch.cuda, name, cuda_only)
    cfg = load_config("smoke", "synthetic")
    where = placement(cfg)
    assert (resolve_accelerator(cfg), where.device.type, where.precision) == ("mps", "mps", "32-true")
    assert not where.channels_last and not where.bf16_on_cpu and where.autocast_dtype is None
    forced = placement(load_config("smoke", "synthetic", precision="16-mixed"))
    assert forced.autocast_dtype == torch.float16


def test_trainer_is_built_for_mps_with_the_chosen_precision(monkeypatch, tmp_path):
    monkeypatch.delenv("MAMMO_PRECISION", raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    seen = {}

    class FakeTrainer:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    import mammo_utils.runs.trainer as training

    monkeypatch.setattr(training.pl, "Trainer", FakeTrainer)
    training.make_trainer(load_config("smoke", "synthetic", runs_dir=str(tmp_path)), tmp_path, max_epochs=1)
    assert (seen["accelerator"], seen["precision"], seen["sync_batchnorm"]) == ("mps", "32-true", False)
    assert not any(type(c).__name__ == "FastBf16Blocks" for c in seen["callbacks"])


def test_loader_workers_start_under_spawn_as_on_macos(tiny_cfg):
    """macOS starts DataLoader workers with spawn: the datasets of stages 02 and 03 and their transforms must pickle."""
    import pandas as pd

    from mammo_utils.finetune.full import film_images
    from mammo_utils.prepare.stage import load_hires, run_prepare
    from mammo_utils.pretrain.regions import BreastRegions

    index = pd.read_csv(run_prepare(tiny_cfg) / "preprocessed.csv", keep_default_na=False).head(4)
    for dataset, shape in ((BreastRegions(load_hires(index), 24, 4), (2, 1, 24, 24)),
                           (film_images(index, tiny_cfg, augment=True), (2, 1, 32, 32))):
        assert len(pickle.loads(pickle.dumps(dataset))) == 4
        loader = DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn")
        x, _ = next(iter(loader))
        assert x.shape == shape


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("MAMMO_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    monkeypatch.delenv("MAMMO_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory() is True


def test_the_cuda_check_is_the_cached_one_only_where_there_is_no_gpu(monkeypatch):
    from mammo_utils.runs import devices

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning leaves it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices.use_cached_cuda_check()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"  # a GPU: Lightning's fork-safe check stays
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    devices.use_cached_cuda_check()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"
