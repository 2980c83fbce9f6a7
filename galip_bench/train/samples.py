"""Sample grids of fixed noise and fixed test captions, so grids from different steps and variants compare; for
CLIP-GEN's stage 1 (no text-to-image model yet), fixed test images beside their VQGAN reconstructions."""
import torch
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from galip_bench.data import build_dataset, reference_images, tokenize
from galip_bench.files import atomic_write


def fixed_captions(data_cfg, n: int) -> tuple:
    """The first caption of each of the first n test images (no image is decoded), and their tokens."""
    table = build_dataset(data_cfg, "test", train=False).caption_table()
    captions = [table[i % len(table)][1][0] for i in range(n)]
    return captions, tokenize(captions)


def _save_grid(path, images: torch.Tensor, nrow: int) -> None:
    image = to_pil_image(make_grid((images + 1) / 2, nrow=nrow, padding=2))
    atomic_write(path, lambda f: image.save(f, format="PNG"))


class SampleSheet:
    """Any text-to-image model with the evaluation interface (GALIP, ClipGen): generator(noise, text_condition)."""

    def __init__(self, cfg, galip, device, seed: int = 1234):
        self.galip = galip
        # language-free training data (language-free GALIP, CLIP-GEN) may hold no caption: sheets take the
        # evaluation data's
        language_free = cfg.system == "clipgen" or cfg.model.condition == "clip_image"
        data = (cfg.eval.data or cfg.data) if language_free else cfg.data
        self.captions, tokens = fixed_captions(data, cfg.train.num_sample_images)
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(len(self.captions), galip.noise_dim, generator=gen).to(device)
        self.tokens = tokens.to(device)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        return self.galip.generator(self.noise, self.galip.text_condition(self.tokens)).float().clamp(-1, 1).cpu()

    def save(self, path) -> None:
        _save_grid(path, self.images(), min(8, len(self.captions)))
        atomic_write(path.with_suffix(".txt"), lambda f: f.write("\n".join(self.captions).encode()))


class ReconstructionSheet:
    """The first test images of the evaluation data (the training data's without one), each beside its
    reconstruction by `vqgan` (four pairs a row), run in eval mode so that the sheet leaves its EMA codebook as it
    was."""

    def __init__(self, cfg, vqgan, device):
        self.vqgan = vqgan
        n = cfg.train.num_sample_images  # fewer when the test split is smaller
        first = reference_images(cfg.eval.data or cfg.data, batch_size=n, limit=n, captions=False)
        self.real = next(iter(first)).to(device)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        was_training = self.vqgan.training
        self.vqgan.eval()
        try:
            recon = self.vqgan(self.real)[0]
        finally:
            self.vqgan.train(was_training)
        return torch.stack([self.real, recon.clamp(-1, 1)], dim=1).flatten(0, 1).float().cpu()

    def save(self, path) -> None:
        _save_grid(path, self.images(), 2 * min(4, len(self.real)))
