"""fid_dmgan, fid_dmgan_blur1/2 and is_dmgan against a test-local reimplementation of DM-GAN's `eval/FID` and
CogView's `eval_utils/inception_score.py`, written out below from the released code's steps (the generator's PNG
writer, PNG files on disk, the PIL loader, pytorch-fid's early InceptionV3 wrapper, np.cov and the scipy Frechet
distance; CogView's softmax and scipy-entropy loop), on the same random-init torchvision inception_v3 weights;
negative controls; the smoke profile's Inception Score stand-in; what the records carry; and the CLIP-GEN
references in the report. Inception at 299 px is slow on a CPU: few, small images."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as transforms
from PIL import Image
from helpers import tiny_galip
from test_published_numbers import record_settings, report, write_run

from galip_bench.config.schema import DataConfig, EvalConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.planning import check_sample_count
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.evaluation.protocols import direction
from galip_bench.evaluation.regress import check_settings
from galip_bench.evaluation.smoke import TinyExtractor
from galip_bench.evaluation.spec import HIGHER, LOWER
from galip_bench.metrics.blur import blur
from galip_bench.metrics.dmgan import inception_score_cogview
from galip_bench.metrics.weights import WeightsResolver
from galip_bench.report import tables

WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"


# ---- DM-GAN's and CogView's evaluation code, step by step as released ---------------------------------------------

def dmgan_write_pngs(images, folder):
    """DM-GAN code/trainer.py `sampling`: each [-1, 1] image to a PNG file."""
    folder.mkdir(parents=True, exist_ok=True)
    for j, image in enumerate(images):
        im = image.numpy()
        im = (im + 1.0) * 127.5
        im = im.astype(np.uint8)
        im = np.transpose(im, (1, 2, 0))
        im = Image.fromarray(im)
        im.save(folder / f"{j:03d}_s-1_0.png")
    return folder


class DMGANImageDataset(torch.utils.data.Dataset):
    """DM-GAN eval/FID/img_data.py `Dataset` (its os.walk order sorted, so that rows line up with ours; the FID
    does not depend on the order)."""

    def __init__(self, path, transform=None):
        self.file_names = sorted(os.path.join(p, n) for p, _, files in os.walk(path) for n in files
                                 if n.rfind("jpg") != -1 or n.rfind("png") != -1)
        self.transform = transform

    def __len__(self):
        return len(self.file_names)

    def __getitem__(self, index):
        img = Image.open(self.file_names[index]).convert("RGB")
        return self.transform(img) if self.transform is not None else img


class PytorchFIDInceptionV3(nn.Module):
    """DM-GAN eval/FID/inception.py `InceptionV3([3])` (pytorch-fid's early wrapper), around
    `models.inception_v3(pretrained=True)`: here the same architecture with the test's weights."""

    def __init__(self, state):
        super().__init__()
        inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        inception.load_state_dict(state)
        self.blocks = nn.ModuleList([
            nn.Sequential(inception.Conv2d_1a_3x3, inception.Conv2d_2a_3x3, inception.Conv2d_2b_3x3,
                          nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(inception.Conv2d_3b_1x1, inception.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(inception.Mixed_5b, inception.Mixed_5c, inception.Mixed_5d, inception.Mixed_6a,
                          inception.Mixed_6b, inception.Mixed_6c, inception.Mixed_6d, inception.Mixed_6e),
            nn.Sequential(inception.Mixed_7a, inception.Mixed_7b, inception.Mixed_7c,
                          nn.AdaptiveAvgPool2d(output_size=(1, 1))),
        ])
        self.requires_grad_(False)

    def forward(self, inp):
        x = F.interpolate(inp, size=(299, 299), mode="bilinear", align_corners=True)  # F.upsample then
        x = x.clone()
        x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        for block in self.blocks:
            x = block(x)
        return [x]


@torch.no_grad()
def dmgan_activations(loader, model, batch_size, dims=2048):
    """eval/FID/fid_score.py `get_activations`."""
    model.eval()
    d0 = len(loader) * batch_size
    pred_arr = np.empty((d0, dims))
    for i, batch in enumerate(loader):
        start, end = i * batch_size, i * batch_size + batch_size
        pred = model(batch)[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
        pred_arr[start:end] = pred.cpu().data.numpy().reshape(batch_size, -1)
    return pred_arr


def dmgan_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """eval/FID/fid_score.py `calculate_frechet_distance`."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def dmgan_features_of_path(path, model, batch_size, resize=True):
    """eval/FID/fid_score.py `_compute_statistics_of_path` up to the activations: Resize((299, 299)), ToTensor,
    DataLoader(shuffle=False, drop_last=True); without `resize`, CogView's `calculate_fid_given_dataset` on a
    dataset of ToTensor images at their own size (its transform is not released: our reading)."""
    steps = ([transforms.Resize((299, 299))] if resize else []) + [transforms.ToTensor()]
    dataset = DMGANImageDataset(path, transforms.Compose(steps))
    loader = torch.utils.data.DataLoader(dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=True)
    return dmgan_activations(loader, model, batch_size)


def cogview_model(state):
    """CogView: `inception_v3(pretrained=True, transform_input=False)`, eval mode."""
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def cogview_inception_score(imgs, model, batch_size=32, resize=False, splits=1):
    """THUDM/CogView eval_utils/inception_score.py `inception_score` (cuda=False); also returns its preds."""
    N = len(imgs)
    assert batch_size > 0
    assert N > batch_size
    dataloader = torch.utils.data.DataLoader(imgs, batch_size=batch_size)
    up = nn.Upsample(size=(299, 299), mode="bilinear")

    def get_pred(x):
        if resize:
            x = up(x)
        x = model(x)
        return F.softmax(x, dim=1).data.cpu().numpy()

    preds = np.zeros((N, 1000))
    for i, batch in enumerate(dataloader, 0):
        batch_size_i = batch.size()[0]
        preds[i * batch_size:i * batch_size + batch_size_i] = get_pred(batch)
    return (*cogview_split_scores(preds, splits), preds)


def cogview_split_scores(preds, splits):
    """The rest of CogView's `inception_score`: the mean KL per split, with scipy's entropy."""
    N = len(preds)
    split_scores = []
    for k in range(splits):
        part = preds[k * (N // splits): (k + 1) * (N // splits), :]
        py = np.mean(part, axis=0)
        scores = []
        for i in range(part.shape[0]):
            pyx = part[i, :]
            scores.append(scipy.stats.entropy(pyx, py))
        split_scores.append(np.exp(np.mean(scores)))
    return np.mean(split_scores), np.std(split_scores)


def cogview_images(path, resize=True):
    """The [-1, 1] images CogView's `inception_score` takes, read from DM-GAN's PNGs: Resize((299, 299)) (or not),
    ToTensor, Normalize(0.5, 0.5)."""
    steps = ([transforms.Resize((299, 299))] if resize else []) + [
        transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    dataset = DMGANImageDataset(path, transforms.Compose(steps))
    return torch.stack([dataset[i] for i in range(len(dataset))])


# ---- fixtures ------------------------------------------------------------------------------------------------------

def _images(seed, n, side, offset=0.0, contrast=1.0):
    g = torch.Generator().manual_seed(seed)
    low = (torch.rand(n, 3, 6, 6, generator=g) * 2 - 1) * contrast + offset
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False).clamp(-1, 1)


GEN = _images(1, 3, 64)                               # "generated": 64 px
REAL = _images(2, 3, 48, offset=0.3, contrast=0.7)    # "reference": another size, other statistics


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Seeded random-init torchvision inception_v3 (He-init convs keep activations O(1) through the eval-mode BN),
    saved under torchvision's file name. Its classifier: a random fc scaled by 400 with a bias that centres the
    logits on one image's, so the softmaxes differ between images (an Inception Score well above 1) and the bias
    matters."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        state = net.state_dict()
        for key, value in state.items():
            if value.dim() > 1:
                state[key] = torch.randn_like(value) * (2.0 / value[0].numel()) ** 0.5
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    with torch.no_grad():
        centre = cogview_model(state)(F.interpolate(GEN[:1], size=(299, 299), mode="bilinear"))[0]
    state["fc.weight"] = state["fc.weight"] * 400
    state["fc.bias"] = -400 * centre
    folder = tmp_path_factory.mktemp("tv_inception")
    torch.save(state, folder / WEIGHTS_FILE)
    return folder


@pytest.fixture(scope="module")
def state(weights_dir):
    return torch.load(weights_dir / WEIGHTS_FILE, weights_only=True)


@pytest.fixture(scope="module")
def fid_extractor(weights_dir):
    """fid_dmgan's extractor as the protocol builds it (weights resolved by file name)."""
    return get_protocol("fid_dmgan").make_extractor(WeightsResolver(weights_dir), "cpu")


@pytest.fixture(scope="module")
def ours(fid_extractor):
    """Our fid_dmgan features of GEN and REAL (computed once: each Inception forward costs ~0.5 s on a CPU)."""
    return fid_extractor(GEN).numpy(), fid_extractor(REAL).numpy()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dmgan_pngs")
    return {"gen": dmgan_write_pngs(GEN, root / "gen"), "real": dmgan_write_pngs(REAL, root / "real"),
            "one": dmgan_write_pngs(GEN[:1], root / "one")}


def _rel(ours, ref):
    return float(np.abs(np.asarray(ours) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max())


# ---- fid_dmgan -----------------------------------------------------------------------------------------------------

def test_fid_dmgan_features_and_fid_equal_dmgans_eval_fid(ours, state, pngs):
    """The same images written as DM-GAN's PNGs and read by its loader: identical 2048-d features, and the FID
    (on 2 of the dimensions: 3 samples per set give a full-rank 2-d covariance) equal to 1e-6."""
    ours_gen, ours_real = ours
    model = PytorchFIDInceptionV3(state)
    ref_gen = dmgan_features_of_path(pngs["gen"], model, batch_size=3)
    ref_real = dmgan_features_of_path(pngs["real"], model, batch_size=3)
    err = max(_rel(ours_gen, ref_gen), _rel(ours_real, ref_real))
    print(f"fid_dmgan features: max error {err:.2e} of the largest feature")
    assert ours_gen.shape == (3, 2048) and err <= 1e-6
    proto = get_protocol("fid_dmgan")
    acc_gen, acc_real = proto.new_accumulator(), proto.new_accumulator()
    acc_gen.update(ours_gen[:, :2])
    acc_real.update(ours_real[:, :2])
    value = proto.compute(acc_gen, acc_real.state())
    g, r = ref_gen[:, :2], ref_real[:, :2]
    theirs = dmgan_frechet_distance(g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    print(f"fid_dmgan ours={value!r} DM-GAN's={theirs!r}")
    assert theirs > 1e-4 and value == pytest.approx(theirs, rel=1e-6)


def test_negative_controls_rounding_or_no_uint8_give_other_features(ours, state):
    """The quantisation and the loader are part of the number: rounding instead of DM-GAN's truncation, or no
    uint8 step at all (GALIP's float bilinear path), each move the features far beyond the 1e-6 above."""
    from galip_bench.metrics.dmgan import DMGANInception
    one = GEN[0]
    rounded = np.transpose(np.round((one.numpy() + 1) * 127.5).astype(np.uint8), (1, 2, 0))
    rounded = transforms.ToTensor()(Image.fromarray(rounded).resize((299, 299), Image.Resampling.BILINEAR))
    float_path = F.interpolate((GEN[:1] + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
    net = DMGANInception(state)
    for name, x in (("rounded uint8", rounded[None]), ("no uint8, torch bilinear", float_path)):
        err = _rel(ours[0][:1], net.pool_features(x))
        print(f"{name}: features differ by {err:.2e} of the largest")
        assert err > 1e-4, name


def test_network_side_resize_equals_cogviews_dataset_path(weights_dir, state, pngs, ours):
    """`resize_at: network` (CogView's calculate_fid_given_dataset with tensors at their own size: the wrapper's
    align_corners=True upsample) against the reference on the same PNG, and unlike the loader's PIL resize."""
    proto = get_protocol("fid_dmgan", options={"resize_at": "network"})
    assert "align_corners=True" in proto.resize and "at the image's own size" in proto.resize
    value = proto.make_extractor(WeightsResolver(weights_dir), "cpu")(GEN[:1]).numpy()
    ref = dmgan_features_of_path(pngs["one"], PytorchFIDInceptionV3(state), batch_size=1, resize=False)
    print(f"fid_dmgan resize_at=network: max error {_rel(value, ref):.2e}")
    assert _rel(value, ref) <= 1e-6
    assert _rel(value, ours[0][:1]) > 1e-4
    with pytest.raises(UserError, match="resize_at must be one of loader, network"):
        get_protocol("fid_dmgan", options={"resize_at": "pil"})


def test_blurred_variants_are_fid_dmgan_of_the_blurred_images(fid_extractor):
    """fid_dmgan_blur1/2: fid_blur1/2's blur (sigma = k px at 256 px, scaled with the side) on the clamped float
    image, then fid_dmgan's PNG step and features; blur_sigma 0 is fid_dmgan. A sharp 128 px image (the blur's
    effect is large)."""
    for k in (1, 2):
        proto = get_protocol(f"fid_dmgan_blur{k}")
        assert proto.option("blur_sigma") == k and proto.option("resize_at") == "loader"
        assert proto.resize.startswith(f"Gaussian blur sigma={k} px at 256 px")
        assert "uint8 by truncation" in proto.resize
        assert direction(proto.name, proto.name) == LOWER and proto.weights == "inception_torchvision"
    sharp = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1
    blurred = get_protocol("fid_dmgan_blur2").wrap(fid_extractor)(sharp)
    assert torch.equal(blurred, fid_extractor(blur(sharp, 2 * 128 / 256)))
    plain = get_protocol("fid_dmgan_blur2", options={"blur_sigma": 0}).wrap(fid_extractor)(sharp)
    assert torch.equal(plain, fid_extractor(sharp))
    assert _rel(blurred, plain) > 1e-3  # the blur is applied
    with pytest.raises(UserError, match="blur_sigma must be a number >= 0"):
        get_protocol("fid_dmgan_blur2", options={"blur_sigma": -1})


# ---- is_dmgan ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def is_case(weights_dir, state, tmp_path_factory):
    """4 images at 64 px: our is_dmgan logits, and the same images written as DM-GAN's PNGs for CogView's code."""
    images = torch.cat([GEN[:2], _images(3, 2, 64, offset=-0.2)])
    proto = get_protocol("is_dmgan")
    extractor = proto.make_extractor(WeightsResolver(weights_dir), "cpu")
    # in CogView's batches (3 + 1): float32 convolutions round differently with the batch size, and the test's
    # classifier (fc x 400) amplifies that
    logits = torch.cat([extractor(images[:3]), extractor(images[3:])])
    folder = dmgan_write_pngs(images, tmp_path_factory.mktemp("is_pngs"))
    return images, proto, logits, folder, cogview_model(state)


def test_is_dmgan_equals_cogviews_inception_score(is_case):
    """CogView's inception_score on the PNGs read back at 299 px (batch 3: it asserts N > batch_size)."""
    images, proto, logits, folder, model = is_case
    assert logits.shape == (4, 1000) and logits.dtype == torch.float64
    mean, std, preds = cogview_inception_score(cogview_images(folder), model, batch_size=3, splits=1)
    ours_preds = torch.softmax(logits.float(), dim=1).double().numpy()
    print(f"is_dmgan probabilities: max error {_rel(ours_preds, preds):.2e}")
    assert _rel(ours_preds, preds) <= 1e-6
    acc = proto.new_accumulator()
    for chunk in logits.split(3):
        acc.update(chunk)
    ours = proto.compute_all(acc)
    print(f"is_dmgan ours={ours} CogView's=({mean!r}, {std!r})")
    assert mean > 1.5  # not a degenerate case: the softmaxes differ between images
    assert ours["is_dmgan"] == pytest.approx(mean, rel=1e-6) and ours["is_dmgan_std"] == std == 0
    # more splits: consecutive, no shuffle, the remainder unused (3 samples in 2 splits: 1 + 1)
    for n, splits in ((4, 2), (3, 2)):
        ref = cogview_split_scores(preds[:n], splits)
        assert inception_score_cogview(logits[:n], splits) == pytest.approx(ref, rel=1e-6), (n, splits)
    assert cogview_split_scores(preds, 2)[1] > 0


def test_is_dmgan_negative_controls(is_case, state):
    """The fc bias is part of CogView's logits (torch-fidelity's `is` drops it): without it the score differs; so
    does torch-fidelity's shuffled splitting in place of CogView's consecutive splits."""
    from galip_bench.metrics.standard import inception_score
    images, proto, logits, folder, model = is_case
    mean = inception_score_cogview(logits, 1)[0]
    unbiased = logits - state["fc.bias"].double()
    assert abs(inception_score_cogview(unbiased, 1)[0] - mean) > 1e-2 * mean
    assert abs(inception_score(logits, splits=2)[0] - inception_score_cogview(logits, 2)[0]) > 1e-3 * mean


def test_is_dmgan_network_resize_is_cogviews_resize_true(weights_dir, is_case):
    """`resize_at: network`: CogView's inception_score(resize=True) on the images at their own size."""
    images, _, _, folder, model = is_case
    proto = get_protocol("is_dmgan", options={"resize_at": "network"})
    assert "nn.Upsample bilinear 299, align_corners=False" in proto.resize
    extractor = proto.make_extractor(WeightsResolver(weights_dir), "cpu")
    logits = torch.cat([extractor(images[:1]), extractor(images[1:2])])  # CogView's batches of 1
    mean, _, preds = cogview_inception_score(cogview_images(folder, resize=False)[:2], model, batch_size=1,
                                             resize=True)
    ours = torch.softmax(logits.float(), dim=1).double().numpy()
    print(f"is_dmgan resize_at=network: probabilities max error {_rel(ours, preds):.2e}")
    assert _rel(ours, preds) <= 1e-6
    assert inception_score_cogview(logits, 1)[0] == pytest.approx(mean, rel=1e-6)


# ---- settings, registry, sample counts -----------------------------------------------------------------------------

def test_records_carry_every_setting():
    fid = get_protocol("fid_dmgan").settings_dict()
    is_ = get_protocol("is_dmgan").settings_dict()
    for d in (fid, is_):
        assert "uint8 by truncation" in d["resize"] and "PIL bilinear Resize((299, 299))" in d["resize"]
        assert d["weights"] == "inception_torchvision" and "torchvision inception_v3" in d["extractor"]
        assert d["options"]["resize_at"] == "loader" and d["precision"] == "fp32"
    assert "pool3 2048-d" in fid["extractor"] and "DM-GAN" in fid["matches"]
    assert fid["reference"] == "split: not resolved yet"
    assert "1000 logits (fc with bias)" in is_["extractor"] and "CogView" in is_["matches"]
    assert is_["options"]["isc_splits"] == 1 and is_["reference"] == "n/a" and "Normalize(0.5, 0.5)" in is_["resize"]
    assert direction("is_dmgan", "is_dmgan") == HIGHER and direction("is_dmgan", "is_dmgan_std") is None
    assert direction("fid_dmgan", "fid_dmgan") == LOWER and get_protocol("fid_dmgan").bootstrap
    # the settings are gated: a record with other splits or another resize does not compare
    rec = [{"protocol": "is_dmgan", "metric": "is_dmgan", "value": 2.0, "settings": is_}]
    for key, value in (("isc_splits", 10), ("resize_at", "network")):
        other = [{**rec[0], "settings": {**is_, "options": {**is_["options"], key: value}}}]
        with pytest.raises(UserError, match=key):
            check_settings(rec, other)
    with pytest.raises(UserError, match="isc_splits must be an integer >= 1"):
        get_protocol("is_dmgan", options={"isc_splits": 0})
    check_sample_count(get_protocol("is_dmgan"), 1)
    with pytest.raises(UserError, match="2 samples are fewer than the 3 it needs"):
        check_sample_count(get_protocol("is_dmgan", options={"isc_splits": 3}), 2)


# ---- the smoke stand-in of the Inception Scores --------------------------------------------------------------------

def test_smoke_is_stand_in_tells_generators_apart_and_repeats_exactly(tmp_path):
    """The smoke `is` gave 1.000 for every generator (a linear head on the tiny net's raw features: near-uniform
    softmaxes). Now two different tiny generators get different scores, the same one the same score."""
    from galip_bench.metrics.standard import inception_score
    data = DataConfig(kind="synthetic", size=32, num_test=24)
    site = SiteConfig()
    site.paths.cache = str(tmp_path / "cache")
    eval_cfg = EvalConfig(protocols=["is", "is_dmgan"], extractor="tiny", num_samples=32, batch_size=32)
    evaluator = Evaluator(eval_cfg, data, site, "cpu", progress=False)

    def scores(seed):
        return {r["metric"]: r["value"] for r in evaluator(tiny_galip(seed=seed), step=1)}
    a, b, again = scores(1), scores(2), scores(1)
    print(f"smoke IS: generator 1 {a}, generator 2 {b}")
    assert a == again
    for metric in ("is", "is_dmgan"):
        assert a[metric] > 1.05 and b[metric] > 1.05
        assert abs(a[metric] - b[metric]) > 0.01, metric
    # negative control: the old head (a linear layer on the raw features) on varied images still scores ~1
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = TinyExtractor(seed=7)(images).float()
    g = torch.Generator().manual_seed(1)
    weight, bias = (torch.rand(16, 64, generator=g) * 2 - 1) / 8, (torch.rand(16, generator=g) * 2 - 1) / 8
    assert inception_score((features @ weight.T + bias).double(), splits=1)[0] < 1.001
    assert inception_score(TinyExtractor(seed=7, logits=True)(images), splits=1)[0] > 1.5


# ---- CLIP-GEN's references ------------------------------------------------------------------------------------------

def test_clip_gen_references_name_the_dmgan_protocols_and_never_stand_beside_a_run(tmp_path):
    refs = tables.load_references()
    clipgen = [r for r in refs["references"] if r["grid"] == "clip_gen"]
    by_column = {}
    for r in clipgen:
        by_column.setdefault(r["source"].rsplit("(", 1)[1].rstrip(")"), set()).add((r["protocol"], r["metric"]))
    assert by_column["IS"] == {("is_dmgan", "is_dmgan")}
    assert by_column["FID-0"] == {("fid_dmgan", "fid_dmgan")}
    assert by_column["FID-1"] == {("fid_dmgan_blur1", "fid_dmgan_blur1")}
    assert by_column["FID-2"] == {("fid_dmgan_blur2", "fid_dmgan_blur2")}
    assert all(r["plan"] == "not stated" and r["recipe"] == "not stated" for r in clipgen)
    plan = SamplePlan("fixed", num_samples=30000)
    write_run(tmp_path / "runs" / "clip_gen", "a", "clip_gen",
              [("fid_dmgan", 20.7, record_settings("fid_dmgan", plan, 30000, "split:test")),
               ("is_dmgan", 21.4, record_settings("is_dmgan", plan, 30000))])
    table, md, _ = report(tmp_path, "clip_gen", refs)
    assert table["ref:paper"].isna().all() and table["diff:paper"].isna().all()
    for metric in ("fid_dmgan", "is_dmgan"):
        row = table[(table.metric == metric) & (table.variant == "clip_gen")].iloc[0]
        assert row["why:paper"] == "not comparable (the source's sample plan and N are not stated)"
    results = md.split("## Results")[1].split("## Paper references")[0]
    assert "not stated" in results and "never stand beside a run" in md
