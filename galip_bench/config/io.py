"""Structured configs through omegaconf: YAML sections and dotlist overrides merged onto dataclass schemas, with
user errors that name the key and the file."""
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from galip_bench.errors import UserError


def read_yaml(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a directory, expected a YAML file")
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        conf = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: where the parser stopped, and its first line
        raise UserError(f"{path}{_where(err)}: not valid YAML ({_first_line(err)})") from None
    if not OmegaConf.is_dict(conf):
        raise UserError(f"{path}: expected a mapping at the top level")
    return conf


def _where(err) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _first_line(err) -> str:
    problem = getattr(err, "problem", None)
    return problem or (str(err).splitlines() or [type(err).__name__])[0]


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    first = str(err).splitlines()[0]
    return f"key '{key}': {first}" if key else first


def merge_onto(schema, *layers, source: str = "config"):
    """OmegaConf.structured(schema) merged with each layer (dicts/DictConfigs); unknown keys and wrong types
    raise UserError naming the key and the source."""
    conf = OmegaConf.structured(schema)
    for layer in layers:
        if layer is None:
            continue
        try:
            conf = OmegaConf.merge(conf, layer)
        except OmegaConfBaseException as err:
            raise UserError(f"{source}: {_describe(err)}") from None
    return conf


def dotlist(overrides: Optional[Iterable[str]]):
    overrides = list(overrides or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} is not of the form key=value")
    for item in overrides:
        try:
            OmegaConf.from_dotlist([item])
        except Exception as err:  # the value is parsed as YAML
            raise UserError(f"override {item!r}: the value is not valid YAML ({_first_line(err)})") from None
    return OmegaConf.from_dotlist(overrides)


def to_object(conf, source: str = "config"):
    """The dataclass instance of a structured config (interpolations resolved)."""
    try:
        return OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        raise UserError(f"{source}: {_describe(err)}") from None


def read_data_section(path):
    """The `data:` section of a YAML file as a DataConfig (unknown keys / wrong types name the key and file)."""
    from galip_bench.config.schema import DataConfig
    conf = read_yaml(path)
    if "data" not in conf:
        raise UserError(f"{path} has no `data:` section (e.g. `data: {{kind: coco, root: data/coco}}`)")
    return to_object(merge_onto(DataConfig, conf["data"], source=path), path)
