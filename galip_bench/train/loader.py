"""The training input pipeline: the step-indexed batches of `Batches` fed through a `DataLoader` with worker
processes, pinned memory and a one-batch lookahead onto the device.

Determinism does not depend on the worker count: every sample is read with its own seed, a function of (seed,
rank, step, position in the batch), which seeds the augmentation (crop, flip) and the caption draw wherever the
sample is decoded. A loader started at step k yields exactly the batches an uninterrupted one yields from k on."""
import atexit
import random
import signal
import weakref
import zlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from galip_bench.data.device_decode import decode_batch
from galip_bench.errors import UserError
from galip_bench.train.batches import Batches, seed_step


def sample_seed(seed: int, rank: int, step: int, position: int) -> int:
    return zlib.crc32(f"{seed}/{rank}/{step}/{position}".encode())


class SeededSamples(Dataset):
    """Item (index, seed): seeds python, numpy and torch, then reads dataset[index]."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        except UserError as err:  # handed to the training process as it is (a worker would wrap its message)
            return {"user_error": err}


class StepSampler(Sampler):
    """The batches of steps [start, stop), each a list of (index, sample seed)."""

    def __init__(self, batches: Batches, start: int, stop: int):
        self.batches, self.start, self.stop = batches, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        b = self.batches
        for step in range(self.start, self.stop):
            yield [(i, sample_seed(b.seed, v, step, j)) for i, (v, j) in zip(b.indices(step), b.sample_keys(step))]


def _ignore_stop_signals(_worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the training process, which stops at a step boundary and then ends them (a
    scheduler's or a terminal's signal reaches the whole process group; a worker that died of it would fail the
    step the training process is finishing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(samples: list) -> dict:
    """Images stacked; with `data.decode: torchvision`, the JPEGs' decode plans (and any non-JPEG decoded by PIL)."""
    errors = [s["user_error"] for s in samples if "user_error" in s]
    if errors:
        return {"user_error": errors[0]}
    batch = {}
    if "tokens" in samples[0]:  # language-free samples carry no caption
        batch = {"tokens": torch.stack([s["tokens"] for s in samples]), "caption": [s["caption"] for s in samples]}
    if all("image" in s for s in samples):
        batch["image"] = torch.stack([s["image"] for s in samples])
    else:
        batch["pixels"] = [s.get("plan", s.get("image")) for s in samples]
    return batch


def _decode_on(pixels: list, device) -> torch.Tensor:
    plans = [p for p in pixels if isinstance(p, dict)]
    decoded = iter(decode_batch(plans, device))
    return torch.stack([next(decoded) if isinstance(p, dict) else p.to(device) for p in pixels])


class StepLoader:
    """Iterates the batches of steps [start, stop) on `device`. Map-style data goes through a DataLoader with
    `num_workers` processes (0: read in this process, same samples); streamed (webdataset) data is read in order
    in this process, as the resume position of a stream is a count of samples."""

    def __init__(self, batches: Batches, start: int, stop: int, num_workers: int = 0, device="cpu",
                 prefetch_factor: int = 4):
        self.batches, self.start, self.stop = batches, start, stop
        self.device = torch.device(device)
        self.loader = self._iterator = None
        if not batches.streamed:
            workers = dict(num_workers=num_workers, prefetch_factor=prefetch_factor, persistent_workers=False,
                           worker_init_fn=_ignore_stop_signals) if num_workers > 0 else {}
            self.loader = DataLoader(SeededSamples(batches.dataset), batch_sampler=StepSampler(batches, start, stop),
                                     collate_fn=collate, pin_memory=self.device.type == "cuda", **workers)

    def close(self) -> None:
        """End the worker processes now. They ignore SIGTERM, so they must not be left to interpreter exit
        (multiprocessing would terminate and then wait for them); the training loop calls this on every way out."""
        if self._iterator is not None and hasattr(self._iterator, "_shutdown_workers"):
            self._iterator._shutdown_workers()
        self._iterator = None

    def _host_batches(self):
        if self.loader is not None:
            self._iterator = iter(self.loader)
            yield from self._iterator
            return
        for step in range(self.start, self.stop):
            seed_step(self.batches.seed, self.batches.rank, step)
            yield collate(self.batches.streamed_samples(step))

    def _to_device(self, batch: dict) -> dict:
        if "user_error" in batch:
            raise batch["user_error"]
        if "pixels" in batch:
            batch["image"] = _decode_on(batch.pop("pixels"), self.device)
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def __iter__(self):
        """Batch k+1 is copied to the device (asynchronously, from pinned memory) before batch k is handed out. An
        error, the end or an abandoned iteration ends the workers."""
        _LIVE.add(self)
        try:
            host = self._host_batches()
            ahead = next(host, None)
            ahead = None if ahead is None else self._to_device(ahead)
            while ahead is not None:
                current = ahead
                ahead = next(host, None)
                ahead = None if ahead is None else self._to_device(ahead)
                yield current
        finally:
            self.close()


_LIVE = weakref.WeakSet()


@atexit.register
def _close_live_loaders() -> None:
    """Registered after multiprocessing's exit hook, so it runs first: workers that ignore SIGTERM are ended
    through their loader instead of being terminated (and waited for) by multiprocessing."""
    for loader in list(_LIVE):
        loader.close()
