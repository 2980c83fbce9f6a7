from galip_bench.train.step import make_optimizers, train_step

__all__ = ["train_step", "make_optimizers"]
