"""DataConfig: which dataset, where, at which size, and how to read it."""
from dataclasses import dataclass
from typing import Optional


@dataclass
class DataConfig:
    kind: str = "synthetic"           # synthetic | cub | coco | captions | webdataset
    root: Optional[str] = None        # dataset folder (cub, coco, captions)
    size: Optional[int] = None        # image side fed to the model; None: follows the model (the official canvas:
                                      # 256 for the 224 px generator; see schema.canvas_size)
    seed: int = 0                     # synthetic scenes; seeded caption choices in evaluation
    num_train: int = 2000             # synthetic split sizes
    num_test: int = 500
    shards: Optional[str] = None      # webdataset brace pattern, e.g. "cc12m/{00000..01242}.tar"
    test_shards: Optional[str] = None # webdataset shards of the test split (default: `shards`)
    manifest: Optional[str] = None    # captions kind: JSONL/CSV manifest (else a folder of image + .txt pairs)
    skip_corrupt: bool = False        # skip (and count) images that do not decode instead of stopping
    num_workers: int = 0
    embedding_cache: bool = False     # cache sentence embeddings per (dataset, split, CLIP weights)
