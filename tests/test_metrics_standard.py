"""Standard FID/KID protocols against torch-fidelity and clean-fid, with locally saved random-init weights."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torchvision

from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol
from galip_bench.metrics.standard import kid_from_features, to_uint8
from galip_bench.metrics.weights import WeightsResolver


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _smooth_images(seed, n, offset):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1 + offset
    return torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def tf_inception_dir(tmp_path_factory):
    """A random-init state_dict with the keys of torch-fidelity's FeatureExtractorInceptionV3 (TF FID layout)."""
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    state = net.state_dict()
    for key, value in state.items():
        if value.dim() > 1:  # He init keeps activations O(1) through the eval-mode BN (running var 1)
            state[key] = torch.randn_like(value) * (2.0 / value[0].numel()) ** 0.5
    folder = tmp_path_factory.mktemp("weights")
    torch.save(state, folder / "weights-inception-2015-12-05-6726825d.pth")
    return folder


def _accumulate(proto, weights_dir, gen, real, batch):
    """The protocol's accumulators of generated (in batches) and reference features."""
    extractor = proto.make_extractor(WeightsResolver(weights_dir), "cpu")
    acc_gen, acc_real = proto.new_accumulator(), proto.new_accumulator()
    for chunk in gen.split(batch):
        acc_gen.update(extractor(chunk))
    acc_real.update(extractor(real))
    return acc_gen, acc_real


def test_fid_agrees_with_torch_fidelity(tf_inception_dir):
    import torch_fidelity
    gen, real = _smooth_images(0, 10, 0.0), _smooth_images(1, 10, 0.3)
    proto = get_protocol("fid")
    acc_gen, acc_real = _accumulate(proto, tf_inception_dir, gen, real, 4)
    ours = proto.compute(acc_gen, acc_real.state())

    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(to_uint8(gen)), input2=_Images(to_uint8(real)), fid=True, cuda=False, batch_size=5,
        feature_extractor="inception-v3-compat", cache=False, verbose=False, save_cpu_ram=True,
        feature_extractor_weights_path=str(tf_inception_dir / "weights-inception-2015-12-05-6726825d.pth"),
    )["frechet_inception_distance"]
    assert theirs > 0
    print(f"fid ours={ours!r} torch-fidelity={theirs!r} rel={abs(ours - theirs) / abs(theirs):.2e}")
    assert abs(ours - theirs) / abs(theirs) <= 1e-3


def test_kid_agrees_with_torch_fidelity_with_subsets_smaller_than_n(tf_inception_dir):
    """Subsets of 10 out of 14: the subsets drawn depend on the seed, so this needs torch-fidelity's default rng_seed
    (2020), which the protocol records."""
    import torch_fidelity
    from torch_fidelity.defaults import DEFAULTS
    gen, real = _smooth_images(2, 14, 0.0), _smooth_images(3, 14, 0.4)
    proto = get_protocol("kid", options={"kid_subset_size": 10, "kid_subsets": 7})
    assert proto.settings_dict()["options"]["kid_rng_seed"] == DEFAULTS["rng_seed"] == 2020
    acc_gen, acc_real = _accumulate(proto, tf_inception_dir, gen, real, 5)
    ours = proto.compute_all(acc_gen, acc_real.state())
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(to_uint8(gen)), input2=_Images(to_uint8(real)), kid=True, kid_subset_size=10, kid_subsets=7,
        cuda=False, batch_size=8, feature_extractor="inception-v3-compat", cache=False, verbose=False,
        feature_extractor_weights_path=str(tf_inception_dir / "weights-inception-2015-12-05-6726825d.pth"))
    print(f"kid ours={ours} torch-fidelity={theirs}")
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)
    seed0 = get_protocol("kid", options={"kid_subset_size": 10, "kid_subsets": 7, "kid_rng_seed": 0})
    other = seed0.compute_all(acc_gen, acc_real.state())["kid"]  # the evaluation seed would draw other subsets
    assert abs(other - theirs["kernel_inception_distance_mean"]) > 1e-3 * abs(other)


def test_kid_matches_unbiased_poly_mmd():
    rng = np.random.default_rng(0)
    f1, f2 = rng.standard_normal((30, 16)), rng.standard_normal((30, 16)) * 1.2 + 0.2
    mean, _ = kid_from_features(f1, f2, subsets=1, subset_size=30)  # one subset = the whole sets

    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3
    m = len(f1)
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    expected = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    assert mean == pytest.approx(expected, rel=1e-5)


def test_kid_protocol_reports_mean_and_std():
    rng = np.random.default_rng(1)
    proto = get_protocol("kid", options={"kid_subset_size": 10, "kid_subsets": 5})
    acc = proto.new_accumulator()
    acc.update(rng.standard_normal((20, 8)))
    out = proto.compute_all(acc, {"features": rng.standard_normal((25, 8)) + 1})
    assert set(out) == {"kid", "kid_std"} and out["kid"] > 0


@pytest.mark.parametrize("name, filename", [("fid_clean", "inception-2015-12-05.pt"),
                                            ("fid", "weights-inception-2015-12-05-6726825d.pth"),
                                            ("fid_galip", "inception_v3_google-0cc3c7bd.pth")])
def test_missing_weights_one_clear_line(tmp_path, monkeypatch, name, filename):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    if name == "fid_clean" and os.path.isfile("/tmp/inception-2015-12-05.pt"):
        pytest.skip("a real clean-fid Inception is present in /tmp")
    with pytest.raises(UserError) as err:
        get_protocol(name).make_extractor(WeightsResolver(tmp_path / "weights"), "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert filename in message and f"'{name}'" in message and "https://" in message


class _TinyLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2048, kernel_size=13, stride=13)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)


class _TinyTorchScriptInception(torch.nn.Module):
    """Stands in for NVlabs' inception-2015-12-05.pt: a TorchScript module with a ``layers`` attribute."""

    def __init__(self):
        super().__init__()
        self.layers = _TinyLayers()

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # torch.jit, cleanfid's sqrtm
def test_fid_clean_agrees_with_clean_fid(tmp_path):
    from cleanfid import fid as cleanfid_fid
    from cleanfid.inception_torchscript import InceptionV3W
    from PIL import Image
    torch.manual_seed(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.jit.script(_TinyTorchScriptInception()).save(str(weights / "inception-2015-12-05.pt"))
    gen, real = _smooth_images(2, 6, 0.0), _smooth_images(3, 6, 0.4)
    for name, images in (("gen", gen), ("real", real)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(to_uint8(images)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / name / f"{i:03d}.png")

    proto = get_protocol("fid_clean")
    extractor = proto.make_extractor(WeightsResolver(weights), "cpu")
    ours_gen, ours_real = extractor(gen), extractor(real)

    model = InceptionV3W(str(weights), download=False, resize_inside=False)
    ref = {name: cleanfid_fid.get_folder_features(str(tmp_path / name), model=model, num_workers=0, batch_size=4,
                                                  device=torch.device("cpu"), mode="clean", verbose=False)
           for name in ("gen", "real")}
    np.testing.assert_allclose(ours_gen.numpy(), ref["gen"], rtol=1e-5, atol=1e-6)
    acc_gen, acc_real = proto.new_accumulator(), proto.new_accumulator()
    acc_gen.update(ours_gen[:, :64])  # 64 dims keep the two sqrtm calls fast; the features are compared in full
    acc_real.update(ours_real[:, :64])
    ours = proto.compute(acc_gen, acc_real.state())
    theirs = cleanfid_fid.fid_from_feats(ref["gen"][:, :64], ref["real"][:, :64])
    assert abs(ours - theirs) / abs(theirs) <= 1e-3
