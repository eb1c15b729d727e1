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
        (dict(overrides=["finetune.classifier=half"]), "finetune.classifier"),
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


def test_the_configuration_is_the_same_on_every_machine(monkeypatch):
    """Building a configuration never probes the hardware: a CPU with or without bf16, a GPU or none, the same
    profile gives the same settings (and so the same stage keys); only the placement, chosen when a stage runs,
    differs."""
    from mammo_utils.runs import devices

    for var in ("MAMMO_PROFILE", "MAMMO_DATASET", "MAMMO_OVERRIDES", "MAMMO_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    probed = []
    for name in ("cuda_available", "mps_available", "cpu_has_bf16"):
        monkeypatch.setattr(devices, name, lambda name=name: probed.append(name) or False)
    cfg = load_config("demo", "synthetic")
    assert probed == []
    assert cfg.to_dict() == load_config("demo", "synthetic").to_dict()


def test_overrides_keep_the_type_the_setting_declares():
    """``float | int`` settings (Lightning's batch limits: an int counts batches, a float is a fraction) keep a
    whole number an int; tuples of floats and of words parse; a bad value names the setting."""
    cfg = load_config("demo", overrides=["finetune.limit_batches=2", "finetune.label_fractions=0.1,0.5",
                                         "devices=auto"])
    assert cfg.finetune.limit_batches == 2 and isinstance(cfg.finetune.limit_batches, int)
    assert load_config("demo", overrides=["finetune.limit_batches=0.5"]).finetune.limit_batches == 0.5
    assert cfg.finetune.label_fractions == (0.1, 0.5)
    assert load_config("smoke", overrides=["devices=2"]).devices == 2
    with pytest.raises(ConfigError, match=r"pretrain\.steps='three'"):
        load_config("smoke", overrides=["pretrain.steps=three"])
    with pytest.raises(ConfigError, match="finetune.cv"):
        load_config("smoke", overrides=["finetune.cv=maybe"])


@pytest.mark.parametrize(("setting", "value", "allowed"), [
    ("precision", "bf16", "32-true, bf16-mixed, 16-mixed"),
    ("accelerator", "cuda:0", "auto, cpu, gpu, cuda, mps"),
])
def test_precision_and_accelerator_are_checked_with_the_allowed_values(setting, value, allowed):
    with pytest.raises(ConfigError, match=f"Unknown {setting} {value!r}") as err:
        load_config("smoke", overrides=[f"{setting}={value}"])
    assert allowed in str(err.value)
