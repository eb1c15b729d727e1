import pytest
import torch
import torchvision

from mammo_utils.errors import CheckpointError, MammoError
from mammo_utils.models import (
    Classifier,
    imagenet_weights_path,
    load_backbone,
    load_classifier,
    make_backbone,
    save_backbone,
    save_classifier,
)


@pytest.mark.parametrize(("arch", "width"), [("resnet50", 2048), ("resnet18", 512)])
def test_one_channel_backbone_and_classifier_shapes(arch, width):
    torch.manual_seed(0)
    model = Classifier(arch=arch).eval()
    assert model.backbone.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1)
        assert model.backbone(torch.rand(2, 1, 32, 32)).shape == (2, width)


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
def test_checkpoints_round_trip_with_weights_only_and_know_their_architecture(tmp_path, arch):
    torch.manual_seed(0)
    backbone = make_backbone(arch)
    save_backbone(tmp_path / "b.pt", backbone)
    loaded = load_backbone(tmp_path / "b.pt")
    assert type(loaded.layer1[0]) is type(backbone.layer1[0])
    for (k, v), (_, w) in zip(backbone.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    model = Classifier(backbone)
    save_classifier(tmp_path / "c.pt", model, meta={"init": "simclr"})
    back, meta = load_classifier(tmp_path / "c.pt")
    assert meta == {"init": "simclr"} and not back.training


def test_bad_checkpoints_give_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_backbone(tmp_path / "junk.pt")
    save_classifier(tmp_path / "c.pt", Classifier())
    with pytest.raises(CheckpointError, match="'resnet50-1ch-classifier' checkpoint, not a one-channel ResNet backbone"):
        load_backbone(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_backbone(tmp_path / "absent.pt", hint="Run stage 02 first.")


def test_imagenet_weights_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(MammoError, match="not in the local torch cache"):
        make_backbone("resnet50", "imagenet")


def test_imagenet_weights_load_from_the_torch_cache_with_the_stem_reduced_to_one_channel(monkeypatch, tmp_path):
    """The real loading path: a stand-in weights file where torchvision keeps its cache (TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME again
    torch.manual_seed(1)
    stand_in = torchvision.models.resnet50(weights=None).state_dict()
    path = imagenet_weights_path("resnet50")
    assert str(path).startswith(str(tmp_path)) and path.name.startswith("resnet50-")
    path.parent.mkdir(parents=True)
    torch.save(stand_in, path)
    backbone = make_backbone("resnet50", "imagenet")
    for name, value in backbone.state_dict().items():
        if name == "conv1.weight":  # three RGB kernels summed into one grey kernel
            assert value.shape == (64, 1, 7, 7)
            assert torch.allclose(value, stand_in[name].sum(dim=1, keepdim=True))
        else:
            assert torch.equal(value, stand_in[name]), name
    assert "fc.weight" not in backbone.state_dict()
    # A grey image through the one-channel stem equals the same image repeated in three channels.
    grey = torch.rand(1, 1, 32, 32)
    rgb_conv = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), stand_in["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(backbone.conv1(grey), rgb_conv, atol=1e-5)
