import pytest
import torch

from mammo_utils.errors import CheckpointError, MammoError
from mammo_utils.models import (
    Classifier,
    load_backbone,
    load_classifier,
    resnet50_backbone,
    save_backbone,
    save_classifier,
)


def test_one_channel_backbone_and_classifier_shapes():
    torch.manual_seed(0)
    model = Classifier().eval()
    assert model.backbone.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1)
        assert model.backbone(torch.rand(2, 1, 32, 32)).shape == (2, 2048)


def test_checkpoints_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    backbone = resnet50_backbone()
    save_backbone(tmp_path / "b.pt", backbone)
    loaded = load_backbone(tmp_path / "b.pt")
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
    with pytest.raises(CheckpointError, match="not 'resnet50-1ch'"):
        load_backbone(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_backbone(tmp_path / "absent.pt", hint="Run stage 02 first.")


def test_imagenet_weights_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MammoError, match="not in the local torch cache"):
        resnet50_backbone("imagenet")
