"""The `model:` section of a config file as a models.GALIPConfig."""
from omegaconf import OmegaConf

from galip_bench.config.io import dotlist, merge_onto, read_yaml, to_object
from galip_bench.errors import UserError
from models import GALIPConfig


def model_config(path=None, overrides=None) -> GALIPConfig:
    """GALIPConfig from an optional YAML file's `model:` section and `model.key=value` (or `key=value`) overrides."""
    section = None
    source = "defaults"
    if path is not None:
        source = str(path)
        section = read_yaml(path).get("model", OmegaConf.create({}))
    override = dotlist([o[len("model."):] if o.startswith("model.") else o for o in overrides or []])
    conf = merge_onto(GALIPConfig, section, source=source)
    conf = merge_onto(GALIPConfig, conf, override, source="--set")
    cfg = to_object(conf, source)
    try:
        cfg.validate()
    except ValueError as err:
        raise UserError(f"{source}: {err}") from None
    return cfg
