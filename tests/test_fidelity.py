"""Proof of fidelity: our GALIP, loaded with the recipe weights, reproduces the official code's outputs."""
import pytest
import torch
from recipe import galip_recipe_weights, load_fixture

from models import GALIP, CLIPConfig, GALIPConfig, parameter_counts
from models.clip import FrozenCLIP
from models.galip import CheckpointMismatch
from models.losses import d_loss, g_loss, mismatched

TOL = 1e-4


def max_rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| relative to the largest reference magnitude."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def official():
    fixture = load_fixture("galip_official_reference.pt")  # fails, not skips, when the fixture is missing
    clip_sd, nets = galip_recipe_weights(fixture)
    clip = FrozenCLIP.from_openai_state_dict(clip_sd, preprocess="official")
    galip = GALIP(GALIPConfig(), clip=clip)
    galip.load_official({"model": nets})
    return fixture, nets, galip


@pytest.fixture(scope="module")
def ours(official):
    fixture, _, galip = official
    inputs = fixture["inputs"]
    clip = galip.clip
    out = {}
    out["sent_emb"], out["words_emb"] = clip.encode_text(inputs["tokens"])
    sent = out["sent_emb"]
    real_maps, out["real_clip_emb"] = clip.encode_image(inputs["real_images"])
    out["real_clip_features"] = real_maps
    out["fake_images"] = galip.netG(inputs["noise"], sent)
    fake_maps, out["fake_clip_emb"] = clip.encode_image(out["fake_images"])
    out["fake_clip_features"] = fake_maps
    out["netD_real"], out["netD_fake"] = galip.netD(real_maps), galip.netD(fake_maps)
    out["netC_real"] = galip.netC(out["netD_real"], sent)
    out["netC_fake"] = galip.netC(out["netD_fake"], sent)
    out["netC_mismatch"] = galip.netC(out["netD_real"], mismatched(sent))
    out.update(d_loss(galip.netD, galip.netC, real_maps, fake_maps, sent))
    out.update(g_loss(galip.netD, galip.netC, fake_maps, out["fake_clip_emb"], sent, sim_w=inputs["sim_w"]))
    return out


def test_recipe_matches_the_fixture_check(official):
    fixture, _, galip = official
    sd = galip.clip.model.state_dict()
    for key, head in fixture["recipe_check"].items():
        assert torch.equal(sd[key].flatten()[: head.numel()], head.flatten()), key


OUTPUTS = ["sent_emb", "words_emb", "real_clip_features", "real_clip_emb", "fake_images", "fake_clip_features",
           "fake_clip_emb", "netD_real", "netD_fake", "netC_real", "netC_fake", "netC_mismatch",
           "errD_real", "errD_mis", "errD_fake", "errD_MAGP", "errD", "text_img_sim", "errG"]


@pytest.mark.parametrize("name", OUTPUTS)
def test_output_matches_official(official, ours, name):
    fixture = official[0]
    ref = fixture["outputs"][name]
    err = max_rel_err(ours[name], ref)
    print(f"{name}: max relative error {err:.3e}")
    assert err <= TOL, f"{name}: max relative error {err:.3e} > {TOL}"


def test_every_fixture_output_is_checked(official):
    assert set(official[0]["outputs"]) == set(OUTPUTS)


def test_parameter_counts_equal_official(official):
    fixture, _, galip = official
    counts = parameter_counts(galip)
    ref = fixture["param_counts"]
    assert counts["netG"]["trainable"] == ref["netG_trainable"] == 51_830_211
    assert counts["netD"]["trainable"] == ref["netD"] == 28_706_821
    assert counts["netC"]["trainable"] == ref["netC"] == 2_099_200


def test_export_official_round_trips_keys_and_values(official):
    fixture, nets, galip = official
    exported = galip.export_official()["model"]
    for name, shapes in fixture["official_state_dict_shapes"].items():
        assert set(exported[name]) == set(shapes), name
        for key, value in nets[name].items():
            assert torch.equal(exported[name][key], value), f"{name}.{key}"


def test_load_official_accepts_ddp_prefixed_keys(official):
    _, nets, galip = official
    prefixed = {name: {"module." + k: v for k, v in sd.items()} for name, sd in nets.items()}
    galip.load_official(prefixed)  # the three dicts without the 'model' wrapper, DDP-prefixed
    assert torch.equal(galip.netC.joint_conv[0].weight, nets["netC"]["joint_conv.0.weight"])


def test_mismatching_checkpoint_names_first_key(official):
    _, nets, _ = official
    tiny = GALIP(GALIPConfig(cond_dim=64, d_out_ch=32, ngf=8, img_size=32,
                             clip=CLIPConfig(model="tiny")))
    with pytest.raises(CheckpointMismatch, match=r"netG: key 'mapping.CLIP_ViT.class_embedding' has shape"):
        tiny.load_official({"model": nets})
    no_prompts = GALIP(GALIPConfig(prompts=False), clip=official[2].clip)
    with pytest.raises(CheckpointMismatch, match=r"unexpected key 'mapping.fc_prompt.weight'"):
        no_prompts.load_official({"model": nets})
