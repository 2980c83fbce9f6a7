"""The on-disk layouts: file lists, captions and boxes of CUB, COCO and generic captioned folders/manifests.
Every missing or malformed file is a UserError naming the path and what was expected."""
import csv
import json
import pickle
import zlib
from pathlib import Path

from galip_bench.data.captioned import Entry
from galip_bench.errors import UserError
from galip_bench.files import require_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_FOLDER = "a folder of images with same-named .txt caption files"


def require_dir(path, what: str) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, expected a folder: {what}")
    if not path.is_dir():
        raise UserError(f"{path} not found: expected {what}")
    return path


def split_file(root: Path, split: str) -> Path:
    """ROOT/{train,test}/filenames.pickle, which must exist."""
    path = Path(root) / split / "filenames.pickle"
    if path.is_dir():
        raise UserError(f"split file {path} is a directory, expected a file: a pickled list of keys")
    if not path.is_file():
        raise UserError(f"split file {path} not found: expected a pickled list of keys "
                        "(from the GALIP/DF-GAN birds.zip or coco.zip metadata)")
    return path


def cub_folders(root) -> tuple:
    """(ROOT, ROOT/CUB_200_2011), both of which must exist."""
    root = require_dir(root, "the CUB data root (CUB_200_2011/, text/, train/, test/)")
    return root, require_dir(root / "CUB_200_2011", "the CUB_200_2011 folder from Caltech")


def coco_folder(root) -> Path:
    """ROOT, which must hold images/."""
    root = require_dir(root, "the COCO data root (images/, text/, train/, test/)")
    require_dir(root / "images", "COCO 2014 images as images/<key>.jpg or images/{train2014,val2014}/jpg/<key>.jpg")
    return root


def read_split(root: Path, split: str) -> list:
    """ROOT/{train,test}/filenames.pickle: the keys of a split (GALIP / DF-GAN data releases)."""
    path = split_file(root, split)
    with open(path, "rb") as f:
        try:
            keys = pickle.load(f, encoding="latin1")
        except Exception as err:
            raise UserError(f"split file {path} could not be read ({type(err).__name__})") from None
    return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]


def read_captions(path: Path) -> list:
    """The captions of one caption file, as the official GALIP loader's get_caption (code/lib/datasets.py) reads
    them: the file in text mode (universal newlines: CRLF and CR end a line too), split on '\n', every line of
    non-zero length kept as it is -- not stripped, so a line of spaces is a caption."""
    if path.is_dir():
        raise UserError(f"caption file {path} is a directory, expected a file of one caption per line")
    if not path.is_file():
        raise UserError(f"caption file {path} not found: expected one caption per line")
    with open(path, encoding="utf-8", errors="replace") as f:  # newline=None: universal newlines, as open(p, "r")
        captions = [line for line in f.read().split("\n") if len(line) != 0]
    if not captions:
        raise UserError(f"caption file {path} is empty: expected at least one caption per line")
    return captions


def read_boxes(path: Path, ids: dict) -> dict:
    """{key: (x, y, w, h)} from CUB's bounding_boxes.txt, cast to int (truncated toward zero) as the official
    load_bbox's pandas `.astype(int)` does before GALIP crops."""
    boxes = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            idx, *xywh = line.split()
            try:
                if len(xywh) != 4:
                    raise ValueError
                boxes[ids[idx][: -len(".jpg")]] = tuple(int(float(v)) for v in xywh)
            except (ValueError, KeyError):
                raise UserError(f"{path}:{n}: expected 'image_id x y width height' with an id of images.txt, got "
                                f"{line.strip()!r}") from None
    return boxes


def cub_entries(root, split: str, captions: bool = True) -> list:
    """ROOT/CUB_200_2011/{images/<class>/<name>.jpg, images.txt, bounding_boxes.txt}, ROOT/text/<class>/<name>.txt."""
    root, cub = cub_folders(root)
    for name in ("images.txt", "bounding_boxes.txt"):
        if not (cub / name).is_file():
            raise UserError(f"{cub / name} not found: it ships with CUB_200_2011")
    ids = dict(line.split() for line in (cub / "images.txt").read_text().splitlines() if line.strip())
    boxes = read_boxes(cub / "bounding_boxes.txt", ids)
    entries = []
    for key in read_split(root, split):
        if key not in boxes:
            raise UserError(f"{key} (in {root / split / 'filenames.pickle'}) has no line in {cub / 'images.txt'}")
        text = read_captions(root / "text" / f"{key}.txt") if captions else []
        entries.append(Entry(key, str(cub / "images" / f"{key}.jpg"), text, boxes[key]))
    return entries


def coco_image_path(root: Path, key: str) -> Path:
    """Both layouts exist in the wild: ROOT/images/<key>.jpg, or ROOT/images/{train2014,val2014}/jpg/<key>.jpg."""
    flat = root / "images" / f"{key}.jpg"
    if flat.exists():
        return flat
    folder = "val2014" if "val2014" in key else "train2014"
    nested = root / "images" / folder / "jpg" / f"{key}.jpg"
    return nested if nested.exists() else flat


def coco_entries(root, split: str, captions: bool = True) -> list:
    root = coco_folder(root)
    return [Entry(key, str(coco_image_path(root, key)), read_captions(root / "text" / f"{key}.txt") if captions else [])
            for key in read_split(root, split)]


def _in_split(key: str, split: str, explicit) -> bool:
    if explicit:
        return explicit == split
    return (zlib.crc32(key.encode()) % 10 == 0) == (split == "test")  # a fixed 90/10 split by key


def require_manifest(manifest) -> Path:
    return require_file(manifest, "a JSONL or CSV manifest of (image, caption)")


def manifest_entries(manifest, root, split: str, captions: bool = True) -> list:
    """A JSONL ({"image": path, "caption": str | "captions": [...], "split"?}) or CSV (image, caption[, split])
    manifest; relative image paths are relative to `root` (or the manifest's folder). captions=False: rows need
    only `image` (language-free training)."""
    manifest = require_manifest(manifest)
    base = Path(root) if root else manifest.parent
    if manifest.suffix == ".csv":
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = []
        for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{manifest}:{n}: not valid JSON") from None
    entries = []
    for n, row in enumerate(rows, 1):
        if "image" not in row or (captions and not (row.get("caption") or row.get("captions"))):
            raise UserError(f"{manifest}: row {n} needs `image` and `caption` (or a `captions` list)")
        text = []
        if captions:
            text = row.get("captions") or [row["caption"]]
            text = [text] if isinstance(text, str) else [str(c) for c in text if str(c).strip()]
        key = str(Path(row["image"]).with_suffix(""))
        if _in_split(key, split, row.get("split")):
            entries.append(Entry(key, str(base / row["image"]), text))
    return entries


def folder_entries(root, split: str, captions: bool = True) -> list:
    """A folder of images with same-named .txt caption files (one caption per line); captions=False: images
    alone (language-free training), .txt files not read."""
    root = require_dir(root, CAPTION_FOLDER)
    entries = []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        key = str(image.relative_to(root).with_suffix(""))
        if _in_split(key, split, None):
            entries.append(Entry(key, str(image), read_captions(image.with_suffix(".txt")) if captions else []))
    if not entries and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        raise UserError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return entries
