"""CelebA from a tiny hand-made copy of torchvision's layout: 12 JPEGs and the two lists.

No network: torchvision's CelebA download is patched to fail in every test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from ganlab.config import CelebaDatasetConfig
from ganlab.data import build_dataset
from ganlab.errors import UserError

NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
MALE, SMILING = NAMES.index("Male"), NAMES.index("Smiling")
N = 12
PARTITION = [0, 0, 1, 0, 0, 2, 0, 0, 1, 0, 2, 0]  # of files 1..12: 0 train, 1 valid, 2 test
TRAIN, VALID, TEST = [1, 2, 4, 5, 7, 8, 10, 12], [3, 9], [6, 11]
WIDTH, HEIGHT, CROP = 178, 218, 148
LEFT, TOP = 15, 35  # where a centre 148 crop of 178x218 starts
RED, BLUE, DARK, BRIGHT = (220, 30, 30), (30, 30, 220), (20, 20, 20), (235, 235, 235)


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fail(self: datasets.CelebA) -> None:
        calls.append(type(self).__name__)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets.CelebA, "download", fail)
    return calls


def fname(i: int) -> str:
    return f"{i:06d}.jpg"


def colour(i: int) -> tuple[int, int, int]:
    """The solid colour of file i >= 3 (1 and 2 are patterned)."""
    return (20 * i, 250 - 15 * i, 60 + 11 * i)


def face(i: int) -> Image.Image:
    """File 1: a red centre 148 square on blue; 2: dark top half, bright bottom; else solid."""
    if i == 1:
        image = Image.new("RGB", (WIDTH, HEIGHT), BLUE)
        ImageDraw.Draw(image).rectangle((LEFT, TOP, LEFT + CROP - 1, TOP + CROP - 1), fill=RED)
    elif i == 2:
        image = Image.new("RGB", (WIDTH, HEIGHT), BRIGHT)
        ImageDraw.Draw(image).rectangle((0, 0, WIDTH - 1, HEIGHT // 2 - 1), fill=DARK)
    else:
        image = Image.new("RGB", (WIDTH, HEIGHT), colour(i))
    return image


def fake_celeba(data_dir: Path) -> torch.Tensor:
    """The layout torchvision's CelebA uses; returns the ±1 attributes (N, 40) written."""
    root = data_dir / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for i in range(1, N + 1):  # 4:4:4 so the colour edges stay where they are drawn
        face(i).save(root / "img_align_celeba" / fname(i), quality=95, subsampling=0)
    attrs = torch.randint(0, 2, (N, len(NAMES)), generator=torch.Generator().manual_seed(0))
    attrs = attrs * 2 - 1
    attrs[0, MALE], attrs[0, SMILING], attrs[1, MALE], attrs[1, SMILING] = 1, -1, -1, 1
    # as in the real file: a count, the names (trailing space), values padded to width 2
    lines = [str(N), " ".join(NAMES) + " "]
    lines += [f"{fname(i + 1)} " + " ".join(f"{v:2d}" for v in row)
              for i, row in enumerate(attrs.tolist())]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [f"{fname(i + 1)} {p}" for i, p in enumerate(PARTITION)]
    (root / "list_eval_partition.txt").write_text("\n".join(reversed(parts)) + "\n")  # any order
    return attrs


def celeba_cfg(**kw):
    return OmegaConf.structured(CelebaDatasetConfig(**kw))


def as_01(attrs: torch.Tensor, files: list[int]) -> torch.Tensor:
    return (attrs[[i - 1 for i in files]] + 1) // 2


def assert_solid(images: torch.Tensor, files: list[int]) -> None:
    """Each solid file's image is its colour (up to JPEG noise), in file order."""
    for image, i in zip(images, files, strict=True):
        if i >= 3:
            mean = image.float().mean(dim=(1, 2))
            assert torch.allclose(mean, torch.tensor(colour(i), dtype=torch.float), atol=4), i


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "celeba" / "cache"


def test_train_split(tmp_path: Path, no_download: list[str]) -> None:
    attrs = fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(), tmp_path, seed=0)
    assert data.x.shape == (8, 3, 64, 64) and data.x.dtype == torch.uint8
    assert data.y.shape == (8, 40) and data.y.dtype == torch.int64
    assert data.spec.name == "celeba" and data.spec.kind == "image"
    assert data.spec.shape == (3, 64, 64) and data.spec.num_classes == 0
    assert data.spec.attributes == tuple(NAMES)
    assert data.spec == data.spec.from_dict(data.spec.to_dict())
    assert_solid(data.x, TRAIN)
    assert torch.equal(data.y, as_01(attrs, TRAIN))
    assert set(data.y.unique().tolist()) == {0, 1}
    folder = tmp_path / "celeba" / "img_align_celeba"
    assert data.source.startswith("celeba: 8 aligned faces, split train, 64 px (centre crop 148)")
    assert str(folder) in data.source and "cache " in data.source
    assert no_download == []  # files there: no download attempted


def test_attributes_of_specific_files(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(), tmp_path, seed=0)
    assert data.y[0, MALE] == 1 and data.y[0, SMILING] == 0  # 000001.jpg: Male 1, Smiling -1
    assert data.y[1, MALE] == 0 and data.y[1, SMILING] == 1  # 000002.jpg: the reverse


def test_32_px(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(image_size=32), tmp_path, seed=0)
    assert data.x.shape == (8, 3, 32, 32) and data.spec.shape == (3, 32, 32)
    assert_solid(data.x, TRAIN)
    red = torch.tensor(RED, dtype=torch.int16).view(3, 1, 1)
    assert (data.x[0].short() - red).abs().max() <= 12


def test_centre_crop_then_resize(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(), tmp_path, seed=0)
    red = torch.tensor(RED, dtype=torch.int16).view(3, 1, 1)
    diff = (data.x[0].short() - red).abs()
    assert diff.max() <= 12 and diff.float().mean() < 2  # the crop is exactly the red square
    # a wider crop reaches the blue border: the check above would see it
    wide = build_dataset(celeba_cfg(crop=178, cache=False), tmp_path, seed=0)
    assert wide.x[0, 2, :, 0].float().mean() > 100 and wide.x[0, 0, :, 0].float().mean() < 150


def test_orientation(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    image = build_dataset(celeba_cfg(), tmp_path, seed=0).x[1].float()  # dark top, bright bottom
    assert image[:, :28].max() < 60 and image[:, 36:].min() > 190
    assert (image[:, :, :32].mean(dim=2) - image[:, :, 32:].mean(dim=2)).abs().max() < 3


def test_crop_larger_than_the_image_takes_its_smaller_side(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    big = build_dataset(celeba_cfg(crop=500, cache=False), tmp_path, seed=0)
    side = build_dataset(celeba_cfg(crop=178, cache=False), tmp_path, seed=0)
    assert torch.equal(big.x, side.x)


@pytest.mark.parametrize("split, files", [("valid", VALID), ("test", TEST),
                                          ("all", list(range(1, N + 1)))])
def test_splits(tmp_path: Path, split: str, files: list[int]) -> None:
    attrs = fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(split=split), tmp_path, seed=0)
    assert len(data) == len(files) and f"split {split}" in data.source
    assert_solid(data.x, files)
    assert torch.equal(data.y, as_01(attrs, files))


def test_max_images_takes_the_first_of_the_split(tmp_path: Path) -> None:
    attrs = fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(max_images=3), tmp_path, seed=0)
    assert len(data) == 3 and torch.equal(data.y, as_01(attrs, [1, 2, 4]))
    assert_solid(data.x, [1, 2, 4])
    assert "(first 3)" in data.source
    assert (cache_dir(tmp_path) / "train_64px_crop148_first3.pt").is_file()


def test_heldout_is_the_test_partition(tmp_path: Path) -> None:
    attrs = fake_celeba(tmp_path)
    data = build_dataset(celeba_cfg(), tmp_path, seed=0, heldout=True)
    assert len(data) == 8 and data.heldout is not None and len(data.heldout) == 2
    assert_solid(data.heldout.x, TEST)
    assert torch.equal(data.heldout.y, as_01(attrs, TEST))
    assert "split test" in data.heldout.source


def test_heldout_of_split_all_is_a_slice(tmp_path: Path) -> None:
    fake_celeba(tmp_path)  # the test partition is in the training data: hold out a slice instead
    data = build_dataset(celeba_cfg(split="all"), tmp_path, seed=0, heldout=True)
    assert len(data) + len(data.heldout) == N and "held out" in data.source


def test_plain_folder_without_attributes(tmp_path: Path, no_download: list[str]) -> None:
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(3, 12):
        face(i).save(folder / fname(i), quality=95)
    face(12).save(folder / "zz_last.png")
    (folder / "notes.txt").write_text("not an image")
    cfg = celeba_cfg(attributes=False, split="test")  # the split is ignored
    data = build_dataset(cfg, tmp_path, seed=0)
    assert data.x.shape == (10, 3, 64, 64) and data.y is None
    assert data.spec.attributes is None and data.spec.num_classes == 0
    assert_solid(data.x, list(range(3, 13)))
    assert "split ignored" in data.source and "attributes=false" in data.source
    assert (cache_dir(tmp_path) / "all_64px_crop148_noattr.pt").is_file()
    held = build_dataset(cfg, tmp_path, seed=0, heldout=True)  # no partition: a slice
    assert len(held) == 9 and len(held.heldout) == 1 and held.heldout.y is None
    assert no_download == []


def test_missing_files_name_what_to_place(tmp_path: Path, no_download: list[str]) -> None:
    with pytest.raises(UserError) as err:
        build_dataset(celeba_cfg(), tmp_path, seed=0)
    message = str(err.value)
    for fragment in (str(tmp_path / "celeba" / "img_align_celeba"), "img_align_celeba.zip",
                     str(tmp_path / "celeba" / "list_attr_celeba.txt"),
                     str(tmp_path / "celeba" / "list_eval_partition.txt"),
                     "dataset.attributes=false"):
        assert fragment in message, fragment
    assert "\n" not in message
    assert no_download == ["CelebA"]  # it did try to download, once


def test_missing_partition_file(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match=r"missing: list_eval_partition\.txt\)"):
        build_dataset(celeba_cfg(), tmp_path, seed=0)


def test_plain_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing: img_align_celeba/"):
        build_dataset(celeba_cfg(attributes=False), tmp_path, seed=0)


def spy_on_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = Image.open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return opened


def test_cache_is_written_once_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_celeba(tmp_path)
    first = build_dataset(celeba_cfg(), tmp_path, seed=0)
    cache = cache_dir(tmp_path) / "train_64px_crop148.pt"
    assert [p.name for p in cache_dir(tmp_path).iterdir()] == [cache.name]  # no temp file left
    blob = torch.load(cache, weights_only=True)
    assert torch.equal(blob["x"], first.x) and torch.equal(blob["y"], first.y)
    assert blob["attributes"] == NAMES and blob["files"] == N and blob["skipped"] == 0

    opened = spy_on_open(monkeypatch)
    second = build_dataset(celeba_cfg(), tmp_path, seed=0)
    assert opened == []  # no JPEG decoded
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert first.spec == second.spec and first.source == second.source


def test_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_celeba(tmp_path)
    build_dataset(celeba_cfg(cache=False), tmp_path, seed=0)
    opened = spy_on_open(monkeypatch)
    data = build_dataset(celeba_cfg(cache=False), tmp_path, seed=0)
    assert len(opened) == 8 and not cache_dir(tmp_path).exists()
    assert "no cache" in data.source


def test_cache_is_rebuilt_when_the_folder_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_celeba(tmp_path)
    build_dataset(celeba_cfg(), tmp_path, seed=0)
    face(13).save(tmp_path / "celeba" / "img_align_celeba" / fname(13))
    opened = spy_on_open(monkeypatch)
    assert len(build_dataset(celeba_cfg(), tmp_path, seed=0)) == 8
    assert len(opened) == 8
    opened.clear()
    build_dataset(celeba_cfg(), tmp_path, seed=0)
    assert opened == []  # the rebuilt cache is current again


@pytest.mark.parametrize("garbage", [b"", b"not a torch file", b"PK\x03\x04truncated zip"])
def test_corrupt_cache_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    fake_celeba(tmp_path)
    first = build_dataset(celeba_cfg(), tmp_path, seed=0)
    cache = cache_dir(tmp_path) / "train_64px_crop148.pt"
    cache.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        again = build_dataset(celeba_cfg(), tmp_path, seed=0)
    assert torch.equal(first.x, again.x)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "could not be read" in warnings[0]
    assert torch.equal(torch.load(cache, weights_only=True)["x"], first.x)  # written anew


def test_cache_of_the_wrong_shape_is_rebuilt(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    first = build_dataset(celeba_cfg(), tmp_path, seed=0)
    cache = cache_dir(tmp_path) / "train_64px_crop148.pt"
    torch.save({"x": torch.zeros(8, 3, 32, 32, dtype=torch.uint8), "y": None, "attributes": [],
                "files": N, "skipped": 0}, cache)
    assert torch.equal(build_dataset(celeba_cfg(), tmp_path, seed=0).x, first.x)


def test_unreadable_images_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    attrs = fake_celeba(tmp_path)
    folder = tmp_path / "celeba" / "img_align_celeba"
    (folder / fname(4)).write_bytes(b"not a jpeg")
    truncated = (folder / fname(7)).read_bytes()
    (folder / fname(7)).write_bytes(truncated[: len(truncated) // 2])
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(celeba_cfg(), tmp_path, seed=0)
    kept = [1, 2, 5, 8, 10, 12]
    assert len(data) == 6 and torch.equal(data.y, as_01(attrs, kept))  # rows stay aligned
    assert_solid(data.x, kept)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 of 8" in warnings[0] and fname(4) in warnings[0]
    assert "2 unreadable skipped" in data.source
    assert "2 unreadable skipped" in build_dataset(celeba_cfg(), tmp_path, seed=0).source


def test_nothing_readable_is_a_user_error(tmp_path: Path) -> None:
    fake_celeba(tmp_path)
    for i in VALID:
        (tmp_path / "celeba" / "img_align_celeba" / fname(i)).write_bytes(b"junk")
    with pytest.raises(UserError, match="none of the 2 images"):
        build_dataset(celeba_cfg(split="valid"), tmp_path, seed=0)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"split": "val"}, "train, valid, test, all"),
        ({"channels": 1}, "3-channel"),
        ({"image_size": 0}, "image_size"),
        ({"crop": 0}, "crop"),
        ({"max_images": 0}, "max_images"),
    ],
)
def test_bad_configs(tmp_path: Path, kw: dict, match: str) -> None:
    fake_celeba(tmp_path)
    with pytest.raises(UserError, match=match):
        build_dataset(celeba_cfg(**kw), tmp_path, seed=0)


@pytest.mark.parametrize(
    "file, old, new",
    [
        ("list_attr_celeba.txt", "000002.jpg", "000002.jpg  0"),  # one value too many
        ("list_attr_celeba.txt", "000002.jpg", "000099.jpg"),  # a train file without a row
        ("list_eval_partition.txt", "000002.jpg 0", "000002.jpg 7"),
    ],
)
def test_malformed_lists_are_user_errors(tmp_path: Path, file: str, old: str, new: str) -> None:
    fake_celeba(tmp_path)
    path = tmp_path / "celeba" / file
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(UserError, match=file.replace(".", r"\.")):
        build_dataset(celeba_cfg(), tmp_path, seed=0)


def test_torchvision_rejects_the_hand_made_layout(tmp_path: Path) -> None:
    """torchvision's CelebA checks MD5s, so it cannot read anything but the original files."""
    fake_celeba(tmp_path)
    root = tmp_path / "celeba"
    for name in ("identity_CelebA.txt", "list_bbox_celeba.txt",
                 "list_landmarks_align_celeba.txt"):
        (root / name).write_text("placeholder\n")
    assert all(check_integrity(str(root / f)) for _, _, f in datasets.CelebA.file_list
               if not f.endswith(".zip"))  # every file torchvision wants is there...
    with pytest.raises(RuntimeError, match="not found or corrupted"):  # ...but the MD5s differ
        datasets.CelebA(str(tmp_path), split="train", download=False)
    assert len(build_dataset(celeba_cfg(), tmp_path, seed=0)) == 8  # our reader takes it
