"""Precision, memory format and allocator choices of the training loops."""

import platform

import pytest

from mammo_utils.config import load_config
from mammo_utils.training import cpu_has_bf16, keep_freed_memory, resolve_precision, use_channels_last


def test_precision_follows_the_hardware_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("MAMMO_PRECISION", raising=False)
    cfg = load_config("smoke", "synthetic", accelerator="cpu")
    expected = "bf16-mixed" if cpu_has_bf16() else "32-true"
    assert resolve_precision(cfg) == expected and use_channels_last(cfg) == (expected != "32-true")
    forced = load_config("smoke", "synthetic", accelerator="cpu", precision="32-true")
    assert resolve_precision(forced) == "32-true" and not use_channels_last(forced)


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("MAMMO_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    monkeypatch.delenv("MAMMO_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory() is True
