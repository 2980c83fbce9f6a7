"""CLIP tokens through open_clip's tokenizer (the BPE vocabulary ships with the package: no download)."""
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _tokenizer():
    import open_clip
    return open_clip.get_tokenizer("ViT-B-32")


def tokenize(texts) -> torch.Tensor:
    """list of str -> LongTensor [B, 77], truncated with the end-of-text token kept."""
    return _tokenizer()(list(texts))


@lru_cache(maxsize=100_000)
def tokenize_one(text: str) -> torch.Tensor:
    """One caption's tokens [77], memoised: procedural captions repeat, and tokenizing dominates their cost."""
    return tokenize([text])[0]
