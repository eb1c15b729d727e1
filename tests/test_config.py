import pytest

from mammo_utils.config import load_config
from mammo_utils.errors import ConfigError


def test_profiles_differ_and_synthetic_demo_is_smaller():
    smoke, demo = load_config("smoke", "synthetic"), load_config("demo", "synthetic")
    assert smoke.image_size_px < demo.image_size_px
    assert load_config("demo", "mias").image_size_px == 128 and demo.image_size_px == 128
    assert load_config("full", "mias").image_size_px == 512
    assert smoke.pretrain.epochs < demo.pretrain.epochs < load_config("full").pretrain.epochs


def test_environment_and_overrides_take_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMMO_PROFILE", "smoke")
    monkeypatch.setenv("MAMMO_TASK", "malignant")
    cfg = load_config(overrides=["pretrain.epochs=7", "augment.crop_scale=0.5,1.0"], runs_dir=str(tmp_path))
    assert cfg.profile == "smoke" and cfg.task == "malignant"
    assert cfg.pretrain.epochs == 7 and cfg.augment.crop_scale == (0.5, 1.0)
    assert cfg.runs_dir == str(tmp_path)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(profile="huge"), "Unknown profile 'huge'"),
        (dict(dataset="ddsm"), "Unknown dataset 'ddsm'"),
        (dict(task="cancer"), "Unknown task 'cancer'"),
        (dict(overrides=["pretrain.epoch=3"]), "Unknown setting 'pretrain.epoch'"),
        (dict(overrides=["pretrain.epochs"]), "must look like SECTION.NAME=VALUE"),
        (dict(overrides=["finetune.protocol=half"]), "finetune.protocol"),
    ],
)
def test_bad_settings_give_one_clear_message(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(**kwargs)
    assert "\n" not in str(info.value)


def test_section_hash_changes_only_with_its_sections():
    a = load_config("smoke")
    b = load_config("smoke", overrides=["finetune.epochs=5"])
    assert a.section_hash("pretrain") == b.section_hash("pretrain")
    assert a.section_hash("finetune") != b.section_hash("finetune")


def test_the_demo_budget_follows_the_precision_and_the_user_s_settings_win(monkeypatch):
    """fp32 on a CPU gets the reduced demo (REDUCED_DEMO), bf16 the standard one; an explicit setting wins."""
    from mammo_utils import devices
    from mammo_utils.config import REDUCED_DEMO

    for var in ("MAMMO_PROFILE", "MAMMO_DATASET", "MAMMO_OVERRIDES", "MAMMO_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    standard = load_config("demo", "synthetic")
    assert standard.budget == "standard"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    reduced = load_config("demo", "synthetic")
    assert reduced.budget == "reduced"
    assert reduced.pretrain.epochs == int(REDUCED_DEMO["pretrain.epochs"]) < standard.pretrain.epochs
    assert reduced.finetune.epochs == int(REDUCED_DEMO["finetune.epochs"]) < standard.finetune.epochs
    assert load_config("demo", "synthetic", overrides=["pretrain.epochs=9"]).pretrain.epochs == 9
    assert load_config("demo", "synthetic", overrides=["budget=standard"]).pretrain.epochs == standard.pretrain.epochs
    assert load_config("demo", "synthetic", precision="bf16-mixed").budget == "standard"
    assert load_config("smoke", "synthetic").budget == "standard"
    with pytest.raises(ConfigError, match="budget"):
        load_config("demo", "synthetic", overrides=["budget=tiny"])
