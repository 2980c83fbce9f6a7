"""The VQGAN's perceptual term: LPIPS (the `lpips` package: VGG16 features, its learned linear heads), as taming's
VQGAN trains with. The package ships the heads; the VGG16 backbone is torchvision's ImageNet file, read from a local
path (`metrics.weights`, name `vgg16`) instead of the download torchvision would start."""
import warnings

import torch

from galip_bench.errors import UserError


def build_lpips(vgg16_path, device="cpu"):
    """A frozen LPIPS-VGG: callable(x, y) on images in [-1, 1] -> [B,1,1,1] distances."""
    import lpips
    with warnings.catch_warnings():  # lpips builds its blank backbone through torchvision's deprecated `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)  # heads loaded, backbone blank
    try:
        state = torch.load(vgg16_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"VGG16 weights {vgg16_path} could not be read ({type(err).__name__}): expected "
                        "torchvision's vgg16-397923af.pth") from None
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    own = model.net.state_dict()  # slice<k>.<index in vgg16.features>.<param>
    missing = [k for k in own if k.split(".", 1)[1] not in features]
    if missing:
        key = missing[0].split(".", 1)[1]
        raise UserError(f"{vgg16_path} is not a torchvision VGG16 state_dict (no features.{key})")
    model.net.load_state_dict({k: features[k.split(".", 1)[1]] for k in own})
    return model.to(device).eval().requires_grad_(False)
