"""Exact labels of a synthetic-shapes scene (`data.synthetic`), read from the scene itself or parsed from any of its
captions, in one canonical form: the objects ordered by where they are (the upper one first for above/below, the
left one first for left of/right of), so that the two captions of a scene ("A above B", "B below A") give the same
labels and a reader of the image can be compared with a caption slot by slot.

Label vector (integers, -1 where a field does not apply): background, count (0: one object, 1: two), axis (0:
vertical, 1: horizontal; two objects only), then shape, colour, size of the first object and of the second."""
import re

import numpy as np

from galip_bench.data.synthetic import BACKGROUNDS, COLOURS, SHAPES, SIZES

BGS, COLS, SIZ = list(BACKGROUNDS), list(COLOURS), list(SIZES)
FIELDS = ("background", "count", "axis", "shape1", "colour1", "size1", "shape2", "colour2", "size2")
CLASSES = (len(BGS), 2, 2, len(SHAPES), len(COLS), len(SIZ), len(SHAPES), len(COLS), len(SIZ))
NONE = -1

_OBJECT = rf"a ({'|'.join(SIZ)}) ({'|'.join(COLS)}) ({'|'.join(SHAPES)})"
_BG = rf"({'|'.join(BGS)})"
_RELATION = "(above|below|left of|right of)"
_FORMS = [re.compile(rf"^{_OBJECT} on a {_BG} background$"),
          re.compile(rf"^{_OBJECT} in front of a plain {_BG} backdrop$"),
          re.compile(rf"^{_OBJECT} {_RELATION} {_OBJECT} on a {_BG} background$"),
          re.compile(rf"^{_OBJECT} {_RELATION} {_OBJECT}, {_BG} background$")]


def _object(size: str, colour: str, shape: str) -> list:
    return [SHAPES.index(shape), COLS.index(colour), SIZ.index(size)]


def _labels(background: str, first: list, second=None, axis=None) -> np.ndarray:
    rest = second if second is not None else [NONE] * 3
    return np.array([BGS.index(background), int(second is not None), NONE if axis is None else axis,
                     *first, *rest], dtype=np.int64)


def scene_labels(scene: dict) -> np.ndarray:
    """The labels of a scene dict (`SyntheticShapes.scene`)."""
    objs = [_object(o["size"], o["colour"], o["shape"]) for o in scene["objects"]]
    if len(objs) == 1:
        return _labels(scene["background"], objs[0])
    vertical = scene["relation"] in ("above", "below")
    key = 1 if vertical else 0  # order by y for above/below, by x for left of/right of
    first, second = sorted(range(2), key=lambda i: scene["objects"][i]["pos"][key])
    return _labels(scene["background"], objs[first], objs[second], axis=0 if vertical else 1)


def caption_labels(caption: str) -> np.ndarray:
    """The labels of the scene a caption describes (every caption `SyntheticShapes.captions` writes);
    ValueError for another text."""
    for form in _FORMS:
        m = form.match(caption)
        if m is None:
            continue
        g = m.groups()
        if len(g) == 4:
            return _labels(g[3], _object(*g[:3]))
        a, rel, b, bg = _object(*g[:3]), g[3], _object(*g[4:7]), g[7]
        first, second = (a, b) if rel in ("above", "left of") else (b, a)
        return _labels(bg, first, second, axis=0 if rel in ("above", "below") else 1)
    raise ValueError(f"not a synthetic-shapes caption: {caption!r}")
