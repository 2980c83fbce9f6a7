"""img2dataset-style tar shards (NNNNN.jpg + NNNNN.txt) streamed through the `webdataset` package."""
from pathlib import Path

from torch.utils.data import IterableDataset, get_worker_info

from galip_bench.data.images import image_transform
from galip_bench.data.tokens import tokenize_one
from galip_bench.errors import UserError

NEEDS_WEBDATASET = "data.kind=webdataset needs the webdataset package: pip install 'galip-bench[webdataset]'"


def expand_shards(pattern: str) -> list:
    try:
        from braceexpand import braceexpand  # installed with webdataset
    except ImportError:
        raise UserError(NEEDS_WEBDATASET) from None
    urls = list(braceexpand(pattern))
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(urls)} shards of {pattern!r} not found, first: {missing[0]} "
                        "(expected img2dataset tar shards)")
    return urls


class ShardStream(IterableDataset):
    """Streams (image, caption) samples; each process reads the shards of its rank and worker."""

    def __init__(self, pattern: str, size: int, train: bool, rank: int = 0, world_size: int = 1,
                 captions: bool = True):
        self.urls = expand_shards(pattern)
        self.captions = captions  # False: shards without text are read (language-free training)
        self.transform = image_transform(size, train)
        self.rank, self.world_size = rank, world_size

    def _my_urls(self) -> list:
        worker = get_worker_info()
        n_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        stride, offset = self.world_size * n_workers, self.rank * n_workers + worker_id
        mine = self.urls[offset::stride]
        return mine or self.urls  # fewer shards than readers: everyone reads all of them

    def __iter__(self):
        try:
            import webdataset as wds
        except ImportError:
            raise UserError(NEEDS_WEBDATASET) from None
        stream = wds.WebDataset(self._my_urls(), shardshuffle=False, empty_check=False).decode("pil")
        for sample in stream:
            image = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
            caption = _first_line(sample.get("txt")) if self.captions else None
            if image is None or (self.captions and caption is None):
                continue
            pixels = {"image": self.transform(image.convert("RGB")), "key": sample["__key__"]}
            yield {**pixels, "caption": caption, "tokens": tokenize_one(caption).clone(),
                   "captions": [caption]} if self.captions else pixels


def _first_line(text):
    return text.strip().splitlines()[0] if isinstance(text, str) and text.strip() else None
