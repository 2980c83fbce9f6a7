"""The VQGAN's LPIPS term reads torchvision's VGG16 file from a local path into the lpips package's network."""
import warnings

import pytest
import torch
import torchvision

from galip_bench.errors import UserError
from galip_bench.train.perceptual import build_lpips


def test_lpips_from_a_local_vgg16_file_equals_lpips_with_that_backbone(tmp_path):
    import lpips
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16().features, no classifier
    path = tmp_path / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    ours = build_lpips(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    for block in (reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4,
                  reference.net.slice5):  # the backbone copied layer by layer from the VGG16's features
        for index, module in block.named_children():
            if isinstance(module, torch.nn.Conv2d):
                module.load_state_dict(features[int(index)].state_dict())
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        got, want = ours(x, y).flatten(), reference(x, y).flatten()
    assert torch.allclose(got, want, rtol=1e-5) and bool((got > 0).all())
    assert float(ours(x, x).abs().max()) < 1e-6  # a distance: zero on identical images
    assert not any(p.requires_grad for p in ours.parameters())

    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a torchvision VGG16 state_dict"):
        build_lpips(tmp_path / "other.pth")
