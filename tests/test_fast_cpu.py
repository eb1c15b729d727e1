"""The bf16 CPU fast path: torchvision's ResNet blocks, faster on bf16 CPU tensors, bit-identical."""

import pytest
import torch
import torchvision

from mammo_utils.models import Classifier, make_backbone
from mammo_utils.runs.fast_cpu import FastBasicBlock, FastBottleneck, FastReLU, use_fast_bf16_blocks


@pytest.mark.parametrize(("arch", "block", "n_blocks"), [("resnet50", FastBottleneck, 16),
                                                         ("resnet18", FastBasicBlock, 8)])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_backbone_matches_torchvision(bf16, arch, block, n_blocks):
    """The fast blocks (integer ReLU, out-of-place residual add and gradient sum on bf16 CPU tensors) are
    torchvision's: same weights, bit-identical outputs and gradients."""
    torch.manual_seed(0)
    ours = use_fast_bf16_blocks(make_backbone(arch))
    assert sum(type(m) is block for m in ours.modules()) == n_blocks
    torch.manual_seed(0)
    ref = getattr(torchvision.models, arch)(weights=None)
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
    values = [0.0, -0.0, 1e-40, -1e-40, 1.5, -1.5, 3e38, -3e38, float("inf"), float("-inf"), float("nan")]
    x = torch.tensor(values + torch.randn(1000).tolist(), dtype=torch.bfloat16).reshape(-1, 1, 1, 1)
    x = x.expand(-1, 3, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_out = torch.randn(x.shape).to(torch.bfloat16)
    outputs, grads = [], []
    for fn in (FastReLU(), torch.nn.ReLU()):
        out = fn(x)
        outputs.append(out)
        grads.append(torch.autograd.grad(out, x, grad_out)[0])
    assert outputs[0].dtype == torch.bfloat16 and outputs[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(outputs[0], outputs[1], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(grads[0], grads[1])


def test_the_model_is_plain_torchvision_until_the_fast_path_is_switched_on():
    model = Classifier()
    assert not any(isinstance(m, (FastBottleneck, FastBasicBlock, FastReLU)) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_fast_bf16_blocks(model)
    use_fast_bf16_blocks(model)  # idempotent
    assert sum(isinstance(m, FastBottleneck) for m in model.modules()) == 16
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
