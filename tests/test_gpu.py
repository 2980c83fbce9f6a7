"""GPU-only checks of the numerics the CPU cannot show (skipped without a GPU; CI has none): TF32 as the official
environment inside the faithful path and restored after it, the compiled fast path close to the faithful one, and
clip_score_galip's CLIP with fp16 weights as the official clip.load gives them on a GPU."""
import pytest
import torch
from helpers import tiny_galip

from galip_bench.data.tokens import tokenize
from galip_bench.evaluation.protocols import get_protocol
from galip_bench.evaluation.synthesis import Synthesizer, compare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_faithful_path_uses_tf32_as_the_official_environment_and_restores_the_flags():
    galip = tiny_galip(seed=0).cuda().eval()
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with Synthesizer(galip, "faithful"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_compiled_fast_path_stays_close_to_the_faithful_one():
    galip = tiny_galip(seed=0).cuda().eval()
    tokens = tokenize(["a red circle", "a blue square above a green triangle"] * 8)
    noise = torch.randn(16, galip.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with Synthesizer(galip, "faithful") as synth:
        faithful = synth(tokens, noise)
    with Synthesizer(galip, "fast") as synth:
        fast = synth(tokens, noise)
    scale = faithful.abs().mean()
    assert compare(fast / scale, faithful / scale)["mean_abs"] < 0.02


def test_clip_score_galip_keeps_fp16_clip_weights_on_a_gpu():
    embedder = get_protocol("clip_score_galip").build(None, "cuda")
    assert embedder.model.visual.conv1.weight.dtype == torch.float16
    assert get_protocol("clip_score").build(None, "cuda").model.visual.conv1.weight.dtype == torch.float32
