"""Sample grids of fixed noise and fixed test captions, so grids from different steps and variants compare."""
import torch
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from galip_bench.data import build_dataset, tokenize
from galip_bench.files import atomic_write


def fixed_captions(data_cfg, n: int) -> tuple:
    """The first caption of each of the first n test images (no image is decoded), and their tokens."""
    table = build_dataset(data_cfg, "test", train=False).caption_table()
    captions = [table[i % len(table)][1][0] for i in range(n)]
    return captions, tokenize(captions)


class SampleSheet:
    def __init__(self, cfg, galip, device, seed: int = 1234):
        self.galip = galip
        # language-free training data may hold no caption: its sheets take the evaluation data's
        data = (cfg.eval.data or cfg.data) if cfg.model.condition == "clip_image" else cfg.data
        self.captions, tokens = fixed_captions(data, cfg.train.num_sample_images)
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(len(self.captions), cfg.model.z_dim, generator=gen).to(device)
        self.tokens = tokens.to(device)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        return self.galip.netG(self.noise, self.galip.text_condition(self.tokens)).float().clamp(-1, 1).cpu()

    def save(self, path) -> None:
        grid = make_grid((self.images() + 1) / 2, nrow=min(8, len(self.captions)), padding=2)
        image = to_pil_image(grid)
        atomic_write(path, lambda f: image.save(f, format="PNG"))
        atomic_write(path.with_suffix(".txt"), lambda f: f.write("\n".join(self.captions).encode()))
