"""The `model:` section of a config file as a models.GALIPConfig, or its `clipgen.model:` section as a
models.clipgen.ClipGenConfig."""
from omegaconf import OmegaConf

from galip_bench.config.io import dotlist, merge_onto, read_yaml, to_object
from galip_bench.errors import UserError
from models import GALIPConfig
from models.clipgen import ClipGenConfig


def _section_config(schema, path, key: str, overrides, label=None):
    """`schema` from an optional YAML file's `key` section and `key.k=v` (or `k=v`) overrides, validated; errors
    name the file (prefixed with `label` when given)."""
    section, source = None, "defaults"
    if path is not None:
        source = str(path)
        section = OmegaConf.select(read_yaml(path), key) or OmegaConf.create({})
    prefix = f"{key}."
    override = dotlist([o[len(prefix):] if o.startswith(prefix) else o for o in overrides or []])
    conf = merge_onto(schema, section, source=source)
    conf = merge_onto(schema, conf, override, source="--set")
    cfg = to_object(conf, source)
    try:
        cfg.validate()
    except ValueError as err:
        where = f"{label} ({source}{' + --set' if overrides else ''})" if label else source
        raise UserError(f"{where}: {err}") from None
    return cfg


def model_config(path=None, overrides=None) -> GALIPConfig:
    """GALIPConfig from an optional YAML file's `model:` section and `model.key=value` (or `key=value`) overrides."""
    return _section_config(GALIPConfig, path, "model", overrides)


def clipgen_model_config(path=None, overrides=None) -> ClipGenConfig:
    """ClipGenConfig from an optional YAML file's `clipgen.model:` section and `clipgen.model.key=value` (or
    `key=value`, e.g. `vqgan.codebook=ema`) overrides."""
    return _section_config(ClipGenConfig, path, "clipgen.model", overrides, label="clipgen.model")
