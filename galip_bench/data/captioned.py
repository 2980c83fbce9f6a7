"""The map-style dataset shared by the on-disk kinds: a list of (key, image path, captions[, bbox]) entries."""
import random
import zlib
from dataclasses import dataclass, field
from typing import List, Optional

from torch.utils.data import Dataset

from galip_bench.data.device_decode import plan_sample
from galip_bench.data.images import CorruptImage, bbox_crop, image_transform, open_rgb
from galip_bench.data.tokens import tokenize_one


@dataclass
class Entry:
    key: str
    path: str
    captions: List[str]
    bbox: Optional[tuple] = None


@dataclass
class CaptionedImages(Dataset):
    entries: List[Entry]
    size: int
    train: bool
    skip_corrupt: bool = False
    seed: int = 0
    decode: str = "pil"               # pil | torchvision (bytes + augmentation plan; decoded on the training device)
    captions: bool = True             # False: language-free training, no caption is read
    skipped: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.transform = image_transform(self.size, self.train)

    def _caption(self, entry: Entry) -> str:
        if self.train:
            return random.choice(entry.captions)  # one random caption per draw (GALIP's)
        rng = random.Random(zlib.crc32(f"{self.seed}/{entry.key}".encode()))
        return rng.choice(entry.captions)

    def __len__(self) -> int:
        return len(self.entries)

    def caption_table(self) -> list:
        """[(key, captions)] in split order: what evaluation plans draw from, without decoding an image."""
        return [(e.key, list(e.captions)) for e in self.entries]

    def all_captions(self) -> list:
        return [c for e in self.entries for c in e.captions]

    def _image(self, entry: Entry):
        img = open_rgb(entry.path)
        return bbox_crop(img, entry.bbox) if entry.bbox is not None else img

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.entries)):
            entry = self.entries[(index + attempt) % len(self.entries)]
            try:
                plan = plan_sample(entry.path, entry.bbox, self.size, self.train) if self.decode != "pil" else None
                img = self._image(entry) if plan is None else None
            except CorruptImage:
                if not self.skip_corrupt:
                    raise
                if entry.key not in self.skipped:
                    self.skipped.append(entry.key)
                continue  # skipped and counted: the next entry takes its place
            pixels = {"image": self.transform(img)} if plan is None else {"plan": plan}
            if not self.captions:
                return {**pixels, "key": entry.key}
            caption = self._caption(entry)
            return {**pixels, "caption": caption, "tokens": tokenize_one(caption).clone(), "key": entry.key,
                    "captions": entry.captions}
        raise CorruptImage("no image of the dataset decodes")
