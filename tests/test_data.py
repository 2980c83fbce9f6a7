"""Dataset kinds on miniature on-disk layouts (generated JPEGs and caption files), the synthetic set, bad input."""
import csv
import hashlib
import json
import pickle
import subprocess
import sys
import tarfile
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from galip_bench.cli import main
from galip_bench.config.schema import DataConfig
from galip_bench.data import build_dataset, legacy_stats_path, reference_images
from galip_bench.data.tokens import tokenize
from galip_bench.errors import UserError

SIZE = 32


def jpeg(path, w=80, h=60, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def expected(path, box=None):
    """Independent expectation: PIL crop + torchvision's eval transform, written out here."""
    img = Image.open(path).convert("RGB")
    if box is not None:
        img = img.crop(box)
    t = transforms.Compose([transforms.Resize(int(SIZE * 76 / 64)), transforms.CenterCrop(SIZE), transforms.ToTensor()])
    return t(img) * 2 - 1


def write_pickle(path, keys):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(keys))


@pytest.fixture
def cub(tmp_path):
    root = tmp_path / "birds"
    names = ["001.Black/Bird_1", "001.Black/Bird_2", "002.Red/Bird_3"]
    boxes = [(10, 5, 20, 30), (0, 0, 80, 60), (50, 40, 25, 15)]
    for i, name in enumerate(names):
        jpeg(root / "CUB_200_2011" / "images" / f"{name}.jpg", seed=i)
        (root / "text" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "text" / f"{name}.txt").write_text("\n".join(f"{name} caption {j}" for j in range(10)) + "\n")
    (root / "CUB_200_2011" / "images.txt").write_text("".join(f"{i + 1} {n}.jpg\n" for i, n in enumerate(names)))
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} {x} {y} {w} {h}\n" for i, (x, y, w, h) in enumerate(boxes)))
    write_pickle(root / "train" / "filenames.pickle", names[:2])
    write_pickle(root / "test" / "filenames.pickle", names[2:])
    (root / "npz").mkdir()
    np.savez(root / "npz" / "bird_val256_FIDK0.npz", mu=np.zeros(2), sigma=np.eye(2))
    return root, names, boxes


def test_cub_keys_captions_bbox_crops_and_splits(cub):
    root, names, boxes = cub
    cfg = DataConfig(kind="cub", root=str(root), size=SIZE)
    train, test = build_dataset(cfg, "train", train=False), build_dataset(cfg, "test", train=False)
    assert len(train) == 2 and len(test) == 1
    # side 1.5*max(w,h) around the centre, clipped: box 1 -> r=22, centre (20,20) -> (0,0,42,42)
    crops = [(0, 0, 42, 42), (0, 0, 80, 60), (44, 29, 80, 60)]
    for i, (ds, j) in enumerate([(train, 0), (train, 1), (test, 0)]):
        sample = ds[j]
        assert sample["key"] == names[i]
        assert sample["caption"] in [f"{names[i]} caption {k}" for k in range(10)]
        assert sample["image"].shape == (3, SIZE, SIZE) and -1 <= sample["image"].min() <= sample["image"].max() <= 1
        path = root / "CUB_200_2011" / "images" / f"{names[i]}.jpg"
        torch.testing.assert_close(sample["image"], expected(path, crops[i]))
    assert torch.equal(train[0]["tokens"], tokenize([train[0]["caption"]])[0])
    assert legacy_stats_path(cfg).endswith("bird_val256_FIDK0.npz")


def test_cub_fractional_box_is_truncated_to_int_before_the_crop_as_the_official_loader(tmp_path):
    """The official load_bbox reads bounding_boxes.txt with pandas `.astype(int)` (truncation toward zero), then
    get_imgs crops: r = int(max(w, h) * 0.75), centre int((2x + w) / 2), int((2y + h) / 2), clipped to the image."""
    root = tmp_path / "birds"
    name = "003.Blue/Bird_9"
    path = jpeg(root / "CUB_200_2011" / "images" / f"{name}.jpg", w=80, h=60, seed=7)
    (root / "text" / "003.Blue").mkdir(parents=True)
    (root / "text" / f"{name}.txt").write_text("a blue bird\n")
    (root / "CUB_200_2011" / "images.txt").write_text(f"1 {name}.jpg\n")
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("1 30.9 20.7 16.8 12.6\n")
    write_pickle(root / "test" / "filenames.pickle", [name])
    # by hand, from the int box (30, 20, 16, 12): r = int(16 * 0.75) = 12, centre (int(76 / 2), int(52 / 2)) =
    # (38, 26) -> (26, 14, 50, 38). The float box would give r = 12, centre (39, 27) -> (27, 15, 51, 39).
    official, from_floats = (26, 14, 50, 38), (27, 15, 51, 39)
    cfg = DataConfig(kind="cub", root=str(root), size=SIZE)
    ds = build_dataset(cfg, "test", train=False)
    assert ds.entries[0].bbox == (30, 20, 16, 12)
    torch.testing.assert_close(ds[0]["image"], expected(path, official))
    assert not torch.allclose(ds[0]["image"], expected(path, from_floats), atol=1e-3)  # the truncation matters
    # the on-device decode (a training-loader path) crops the same box
    plan = build_dataset(DataConfig(kind="cub", root=str(root), size=SIZE, decode="torchvision"), "test", True)[0]
    assert plan["plan"]["box"] == official


def test_caption_lines_are_read_as_the_official_get_caption(tmp_path):
    """get_caption: open(path, "r").read().split('\\n') in text mode (universal newlines), every line with
    len != 0 kept unstripped: spaces stay, a whitespace-only line is a caption, blank lines and the trailing
    newline are dropped; CRLF and a lone CR end lines."""
    from galip_bench.data.layouts import read_captions
    path = tmp_path / "caps.txt"
    path.write_bytes(b"  a bird with spaces around  \r\n\t\r\n   \r\n\r\nsecond caption\r\nthird\rfourth \n\n")
    assert read_captions(path) == ["  a bird with spaces around  ", "\t", "   ", "second caption", "third", "fourth "]
    path.write_bytes(b"   \n \n")  # whitespace only: non-empty lines, as officially
    assert read_captions(path) == ["   ", " "]
    for empty in (b"", b"\n\n", b"\r\n\r"):
        path.write_bytes(empty)
        with pytest.raises(UserError, match="is empty"):
            read_captions(path)
    with pytest.raises(UserError, match="not found"):
        read_captions(tmp_path / "missing.txt")


@pytest.mark.parametrize("nested", [False, True])
def test_coco_both_image_layouts(tmp_path, nested):
    root = tmp_path / "coco"
    keys = ["COCO_train2014_000000000009", "COCO_val2014_000000000042"]
    for i, key in enumerate(keys):
        folder = "train2014" if "train" in key else "val2014"
        path = root / "images" / folder / "jpg" / f"{key}.jpg" if nested else root / "images" / f"{key}.jpg"
        jpeg(path, seed=10 + i)
        (root / "text").mkdir(parents=True, exist_ok=True)
        (root / "text" / f"{key}.txt").write_text("".join(f"{key} says {j}\n" for j in range(5)))
    write_pickle(root / "train" / "filenames.pickle", keys[:1])
    write_pickle(root / "test" / "filenames.pickle", keys[1:])
    cfg = DataConfig(kind="coco", root=str(root), size=SIZE)
    test = build_dataset(cfg, "test", train=False)
    sample = test[0]
    assert sample["key"] == keys[1] and sample["caption"].startswith(keys[1])
    folder = root / "images" / ("val2014/jpg" if nested else "")
    torch.testing.assert_close(sample["image"], expected(folder / f"{keys[1]}.jpg"))
    assert test.caption_table() == [(keys[1], [f"{keys[1]} says {j}" for j in range(5)])]  # what plans draw from
    batches = list(reference_images(cfg, batch_size=4))
    assert len(batches) == 1 and batches[0].shape == (1, 3, SIZE, SIZE)


def test_captions_manifest_jsonl_csv_and_folder(tmp_path):
    for i in range(4):
        jpeg(tmp_path / "imgs" / f"im{i}.jpg", seed=20 + i)
    rows = [{"image": f"imgs/im{i}.jpg", "captions": [f"cap {i} a", f"cap {i} b"], "split": "test" if i == 3 else "train"}
            for i in range(4)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = build_dataset(DataConfig(kind="captions", manifest=str(tmp_path / "m.jsonl"), size=SIZE), "train", True)
    test = build_dataset(DataConfig(kind="captions", manifest=str(tmp_path / "m.jsonl"), size=SIZE), "test", False)
    assert [e.key for e in train.entries] == ["imgs/im0", "imgs/im1", "imgs/im2"] and len(test) == 1
    assert train[1]["caption"] in ("cap 1 a", "cap 1 b")
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "split"])
        w.writeheader()
        w.writerows({"image": r["image"], "caption": r["captions"][0], "split": r["split"]} for r in rows)
    test_csv = build_dataset(DataConfig(kind="captions", manifest=str(tmp_path / "m.csv"), size=SIZE), "test", False)
    assert test_csv[0]["caption"] == "cap 3 a"
    torch.testing.assert_close(test_csv[0]["image"], expected(tmp_path / "imgs" / "im3.jpg"))
    for i in range(4):
        (tmp_path / "imgs" / f"im{i}.txt").write_text(f"folder caption {i}\n")
    folder = DataConfig(kind="captions", root=str(tmp_path / "imgs"), size=SIZE)
    in_test = {f"im{i}" for i in range(4) if zlib.crc32(f"im{i}".encode()) % 10 == 0}  # the documented 90/10 rule
    train_keys = {e.key for e in build_dataset(folder, "train", False).entries}
    assert train_keys == {f"im{i}" for i in range(4)} - in_test
    assert build_dataset(folder, "train", False)[0]["caption"].startswith("folder caption")


def test_webdataset_shards_stream_keys_and_captions(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard}.tar", "w") as tar:
            for j in range(3):
                key = f"{shard}{j:04d}"
                tar.add(jpeg(tmp_path / "src" / f"{key}.jpg", seed=30 + j), arcname=f"{key}.jpg")
                txt = tmp_path / "src" / f"{key}.txt"
                txt.write_text(f"caption of {key}")
                tar.add(txt, arcname=f"{key}.txt")
    cfg = DataConfig(kind="webdataset", shards=str(tmp_path / "shard-{0..1}.tar"), size=SIZE)
    samples = list(build_dataset(cfg, "train", train=True))
    assert sorted(s["key"] for s in samples) == [f"{s}{j:04d}" for s in range(2) for j in range(3)]
    assert all(s["caption"] == f"caption of {s['key']}" and s["image"].shape == (3, SIZE, SIZE) for s in samples)
    with pytest.raises(UserError, match="shards of .* not found"):
        build_dataset(DataConfig(kind="webdataset", shards=str(tmp_path / "shard-{0..5}.tar"), size=SIZE), "train",
                      True)


SYNTH_HASH = ("import hashlib, torch; from galip_bench.config.schema import DataConfig; from galip_bench.data import build_dataset; "
              "ds = build_dataset(DataConfig(size=64, seed=3), 'test', False); "
              "print(hashlib.sha256(b''.join(ds[i]['image'].numpy().tobytes() + ds[i]['caption'].encode() "
              "for i in range(20))).hexdigest())")


def test_synthetic_is_deterministic_across_processes():
    # another interpreter (its own hash seed and RNG states) renders the same scenes as this one
    there = subprocess.run([sys.executable, "-c", SYNTH_HASH], capture_output=True, text=True, check=True).stdout
    ds = build_dataset(DataConfig(size=64, seed=3), "test", False)
    here = hashlib.sha256(b"".join(ds[i]["image"].numpy().tobytes() + ds[i]["caption"].encode()
                                   for i in range(20))).hexdigest()
    assert there.strip() == here
    other = build_dataset(DataConfig(size=64, seed=4), "test", False)
    assert not torch.equal(other[0]["image"], ds[0]["image"]) or other[0]["caption"] != ds[0]["caption"]
    captions = {ds[i]["caption"] for i in range(len(ds))}
    assert len(captions) > 0.6 * len(ds), "captions vary enough for the text conditioning to matter"


def test_synthetic_is_fast_on_one_core():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenize(["warm up"])
        ds = build_dataset(DataConfig(size=64, seed=11, num_train=3000), "train", True)
        rates = []
        for start in (0, 1000, 2000):  # fresh captions each round: no warm tokenizer cache
            t0 = time.perf_counter()
            for i in range(start, start + 300):
                ds[i]
            rates.append(300 / (time.perf_counter() - t0))
        print(f"synthetic 64x64 samples/s on one core: {max(rates):.0f}")
        assert max(rates) >= 500
    finally:
        torch.set_num_threads(threads)


def test_bad_input_gives_one_line_and_exit_2(tmp_path, cub, capsys):
    root, names, _ = cub
    (root / "CUB_200_2011" / "images" / f"{names[0]}.jpg").write_bytes(b"not a jpeg")
    config = tmp_path / "d.yaml"
    config.write_text(f"data: {{kind: cub, root: {root}, size: {SIZE}}}\n")
    assert main(["data", "check", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Bird_1.jpg does not decode" in err[0]
    assert main(["data", "check", str(config), "--set", "data.skip_corrupt=true", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "cub_samples.png").exists()
    assert "1 corrupt image(s) skipped" in capsys.readouterr().out
    (root / "text" / f"{names[0]}.txt").write_text("\n\n")
    assert main(["data", "check", str(config)]) == 2
    assert "is empty" in capsys.readouterr().err
    (root / "test" / "filenames.pickle").unlink()
    (root / "text" / f"{names[0]}.txt").write_text("a caption\n")
    jpeg(root / "CUB_200_2011" / "images" / f"{names[0]}.jpg")
    assert main(["data", "check", str(config)]) == 2
    assert "filenames.pickle not found" in capsys.readouterr().err
    config.write_text(f"data: {{kind: cub, root: {tmp_path / 'missing'}}}\n")
    assert main(["data", "check", str(config)]) == 2
    assert "missing not found" in capsys.readouterr().err


def test_skip_corrupt_counts_the_skipped_image(cub):
    root, names, _ = cub
    (root / "CUB_200_2011" / "images" / f"{names[0]}.jpg").write_bytes(b"\xff\xd8 broken")
    ds = build_dataset(DataConfig(kind="cub", root=str(root), size=SIZE, skip_corrupt=True), "train", False)
    assert ds[0]["key"] == names[1] and ds.skipped == [names[0]]


def test_embedding_cache_matches_the_text_tower_and_rebuilds_a_torn_file(tmp_path):
    from galip_bench.data.embedding_cache import EmbeddingCache, weights_hash
    from models.clip import FrozenCLIP
    torch.manual_seed(0)
    clip = FrozenCLIP.from_open_clip("tiny")
    captions = ["a small red circle on a white background", "a large blue square on a black background"] * 3
    encode = lambda t: clip.encode_text(t)[0]  # noqa: E731
    cache = EmbeddingCache(tmp_path, "synthetic:train:x", "train", weights_hash(clip)).build(captions, encode)
    with torch.no_grad():
        direct = clip.encode_text(tokenize(captions[:2]))[0]
    torch.testing.assert_close(cache.lookup(captions[:2]), direct, rtol=1e-5, atol=1e-6)
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[: len(data) // 3])  # a torn write is never trusted
    assert EmbeddingCache(tmp_path, "synthetic:train:x", "train", weights_hash(clip)).load() is None
    rebuilt = EmbeddingCache(tmp_path, "synthetic:train:x", "train", weights_hash(clip)).build(captions, encode)
    torch.testing.assert_close(rebuilt.lookup(captions[:2]), direct, rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    assert weights_hash(FrozenCLIP.from_open_clip("tiny")) != weights_hash(clip)
