"""Packaging contracts: the model never needs timm, and the public API is importable."""

import subprocess
import sys


def test_model_code_never_imports_timm():
    # Block timm outright: importing and running the model must still work.
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "import torch, vit_lightning\n"
        "m = vit_lightning.vit_tiny_patch4_32(depth=1)\n"
        "assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)\n"
        "assert not any(k == 'timm' or k.startswith('timm.') for k in sys.modules if sys.modules[k])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torchvision_imports_with_its_operators():
    # The CPU-only local torch wheel breaks torchvision at import ("torchvision::nms does not exist").
    import torch
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
