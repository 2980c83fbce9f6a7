"""Opt-in cache of sentence embeddings per (dataset, split, CLIP weights): the frozen text tower need not run
every step. One .pt file per key under the cache folder, written atomically; a file that does not load or does not
match its key is rebuilt, never trusted."""
import hashlib
from pathlib import Path

import torch

from galip_bench.data.tokens import tokenize
from galip_bench.files import atomic_torch_save

FORMAT = "galip-bench-sentence-embeddings-v1"


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a module's tensors."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, folder, dataset_key: str, split: str, clip_hash: str):
        self.key = f"{dataset_key}|{split}|{clip_hash}"
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.path = Path(folder) / f"sentences-{digest}.pt"
        self.table = None

    def load(self):
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=False)
        except (FileNotFoundError, EOFError, RuntimeError, OSError, ValueError):
            return None
        ok = isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == self.key
        return data if ok and len(data["captions"]) == len(data["embeddings"]) else None

    def build(self, captions, encode, batch_size: int = 256) -> "EmbeddingCache":
        """Load the cache, or encode every caption with `encode(tokens) -> [B, D]` and write it."""
        data = self.load()
        if data is None:
            unique = sorted(set(captions))
            chunks = []
            with torch.no_grad():
                for i in range(0, len(unique), batch_size):
                    chunks.append(encode(tokenize(unique[i:i + batch_size])).float().cpu())
            data = {"format": FORMAT, "key": self.key, "captions": unique,
                    "embeddings": torch.cat(chunks) if chunks else torch.zeros(0)}
            atomic_torch_save(data, self.path)
        self.table = {c: i for i, c in enumerate(data["captions"])}
        self.embeddings = data["embeddings"]
        return self

    def lookup(self, captions) -> torch.Tensor:
        missing = [c for c in captions if c not in self.table]
        if missing:
            raise KeyError(f"caption not in the embedding cache {self.path}: {missing[0]!r}")
        return self.embeddings[[self.table[c] for c in captions]]
