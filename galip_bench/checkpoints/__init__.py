"""Model files: our checkpoint format (`format`), building the frozen CLIP from its weights (`clip`), and the one
loader of every checkpoint form (`loader`)."""
from galip_bench.checkpoints.format import (FORMAT, FORMAT_VERSION, config_of, load_nets,  # noqa: F401
                                            load_official_nets, make_checkpoint, read_checkpoint, save_checkpoint)
from galip_bench.checkpoints.loader import LoadedModel, load_model  # noqa: F401
