"""Evaluation: metric protocols as executable specs (`protocols`), their sample plans (`plans`), the generic driver
that executes them (`driver`), and the checkpoint entry point of `eval`, `regress` and `speed` (`evaluate`)."""
from galip_bench.evaluation.protocols import PROTOCOLS, get_protocol, protocol_class  # noqa: F401
