import pytest
import torch
import torchvision

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


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_backbone_matches_torchvision_resnet50(bf16):
    """The project's ResNet-50 (integer ReLU, out-of-place residual add and gradient sum on bf16 CPU tensors) is
    torchvision's: same weights, bit-identical outputs and gradients."""
    torch.manual_seed(0)
    ours = resnet50_backbone()
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    ref.conv1, ref.fc = ours.conv1, torch.nn.Identity()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    results = []
    for model in (ours, ref):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        params = list(model.parameters())
        grad, *param_grads = torch.autograd.grad(out.float().square().sum(), [x, *params])
        results.append((out, grad, param_grads))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            results[-1] += (model.eval()(x),)
    assert results[0][0].dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert all(torch.equal(a, b) for a, b in zip(results[0][2], results[1][2], strict=True))
    assert torch.equal(results[0][3], results[1][3])


def test_bf16_relu_matches_torch_relu_on_edge_values():
    from mammo_utils.models import ReLU

    values = [0.0, -0.0, 1e-40, -1e-40, 1.5, -1.5, 3e38, -3e38, float("inf"), float("-inf"), float("nan")]
    x = torch.tensor(values + torch.randn(1000).tolist(), dtype=torch.bfloat16).reshape(-1, 1, 1, 1)
    x = x.expand(-1, 3, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_out = torch.randn(x.shape).to(torch.bfloat16)
    outputs, grads = [], []
    for fn in (ReLU(), torch.nn.ReLU()):
        out = fn(x)
        outputs.append(out)
        grads.append(torch.autograd.grad(out, x, grad_out)[0])
    assert outputs[0].dtype == torch.bfloat16 and outputs[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(outputs[0], outputs[1], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(grads[0], grads[1])


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
