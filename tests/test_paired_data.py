"""Paired data for pix2pix: the aligned and two-folder layouts, their jitter and cache, bad
input, dataset=facades offline, and the colorize task's luma."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, train_refused_in_process
from omegaconf import OmegaConf
from PIL import Image

from ganlab.data import build_dataset, is_paired
from ganlab.data.paired import PairedDatasetConfig, luma
from ganlab.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def picture(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth random RGB picture (resizing keeps its halves told apart)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def write_aligned(folder, n: int, size: int = 32, seed: int = 0) -> None:
    """n A|B images: A a picture, B its negative, side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = picture(seed + i, size, size)
        Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(folder / f"{i:02d}.png")


def write_two_folders(root, names_a, names_b, size: int = 32) -> None:
    (root / "trainA").mkdir(parents=True, exist_ok=True)
    (root / "trainB").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names_a):
        Image.fromarray(picture(i, size, size)).save(root / "trainA" / name)
    for i, name in enumerate(names_b):
        Image.fromarray(255 - picture(i, size, size)).save(root / "trainB" / name)


def paired_cfg(name: str = "tiny", **kw):
    cfg = OmegaConf.structured(PairedDatasetConfig)
    cfg.name = name
    cfg.image_size = 32
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_an_aligned_folder_splits_each_image_into_A_and_B(tmp_path):
    write_aligned(tmp_path / "tiny" / "train", 6)
    write_aligned(tmp_path / "tiny" / "test", 3, seed=50)
    data = build_dataset(paired_cfg(), tmp_path, seed=0, heldout=True)
    assert is_paired(paired_cfg()) and data.spec.kind == "paired"
    assert data.spec.shape == (3, 32, 32)
    # train at the load size (286/256 x 32 = 36) for random crops; test at 32
    assert data.a.shape == (6, 3, 36, 36) and data.b.shape == (6, 3, 36, 36)
    assert data.heldout.a.shape == (3, 3, 32, 32) and "tiny/test/" in data.heldout.source
    # B is A's negative: the halves were cut at the middle (up to resampling)
    assert (data.heldout.b.int() - (255 - data.heldout.a.int())).abs().float().mean() < 3
    swapped = build_dataset(paired_cfg(direction="BtoA"), tmp_path, seed=0, heldout=True)
    assert torch.equal(swapped.a, data.b) and torch.equal(swapped.heldout.b, data.heldout.a)


def test_the_cache_is_used_and_rebuilt_when_a_file_changes(tmp_path):
    write_aligned(tmp_path / "tiny" / "train", 5)
    first = build_dataset(paired_cfg(), tmp_path, seed=0, heldout=True)
    caches = list((tmp_path / "tiny" / "cache").glob("*.pt"))
    assert len(caches) == 1
    assert torch.equal(build_dataset(paired_cfg(), tmp_path, seed=0).a, first.a)
    write_aligned(tmp_path / "tiny" / "train", 6)  # one more pair: rebuilt
    assert len(build_dataset(paired_cfg(), tmp_path, seed=0).a) == 6 - 1  # 10% held out
    caches[0].write_bytes(b"truncated")  # unreadable: rebuilt, not a crash
    assert len(build_dataset(paired_cfg(), tmp_path, seed=0).a) == 5


def test_two_folders_pair_up_by_name_whatever_the_extension(tmp_path):
    names = [f"{i:02d}" for i in range(10)]
    write_two_folders(tmp_path / "tiny", [f"{n}.png" for n in names],
                      [f"{n}.jpg" if int(n) % 2 else f"{n}.png" for n in names])
    data = build_dataset(paired_cfg(cache=False), tmp_path, seed=0, heldout=True)
    assert (len(data.a), len(data.heldout.a)) == (9, 1)  # a fixed 10% held out
    assert "10%" in data.heldout.source and "trainA/ and trainB/" in data.source
    assert data.a.shape == (9, 3, 36, 36)
    # each B is the negative of the A it is paired with (JPEG: roughly)
    assert (data.b.int() - (255 - data.a.int())).abs().float().mean() < 8


def test_unreadable_images_drop_their_pair_and_are_counted(tmp_path):
    write_aligned(tmp_path / "tiny" / "train", 6)
    (tmp_path / "tiny" / "train" / "zz.png").write_bytes(b"\x89PNG not really")
    data = build_dataset(paired_cfg(cache=False), tmp_path, seed=0, heldout=True)
    assert len(data.a) + len(data.heldout.a) == 6 and "1 unreadable skipped" in data.source


@pytest.mark.parametrize("setup, fragments", [
    ("misshapen", ("2 of 4 images", "width must be twice the height", "00.png (40x32)",
                   "01.png (40x32)")),
    ("unmatched", ("do not pair up by file name", "2 only in trainA/ (x1.png, x2.png)",
                   "1 only in trainB/ (y.png)")),
    ("one_folder", ("trainB/ is missing or empty",)),
    ("missing", ("is not a paired dataset", "train/ holding A|B pairs side by side",
                 "trainA/ and", "trainB/ holding images paired by file name")),
    ("both_layouts", ("holds both train/", "keep one layout")),
])
def test_bad_folders_are_one_line_errors(tmp_path, setup, fragments):
    root = tmp_path / "tiny"
    if setup == "misshapen":
        write_aligned(root / "train", 4)
        for name in ("00.png", "01.png"):
            Image.fromarray(picture(0, 40, 32)).save(root / "train" / name)
    elif setup == "unmatched":
        write_two_folders(root, ["a.png", "x1.png", "x2.png"], ["a.png", "y.png"])
    elif setup == "one_folder":
        write_two_folders(root, ["a.png"], [])
    elif setup == "both_layouts":
        write_aligned(root / "train", 2)
        write_two_folders(root, ["a.png"], ["a.png"])
    with pytest.raises(UserError) as e:
        build_dataset(paired_cfg(cache=False), tmp_path, seed=0)
    assert "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_batches_crop_and_flip_both_sides_alike_and_resume_exactly(tmp_path):
    write_aligned(tmp_path / "tiny" / "train", 6)
    data = build_dataset(paired_cfg(cache=False), tmp_path, seed=0)
    batches = data.batches(batch_size=2, seed=3)
    flipped = set()
    for _ in range(6):
        a, b = next(batches)
        assert a.shape == b.shape == (2, 3, 32, 32) and a.dtype == torch.uint8
        for crop_a, crop_b in zip(a, b, strict=True):
            # the same window (and flip) of some training pair on both sides
            found = [(t, s, f) for i in range(len(data)) for t in range(5) for s in range(5)
                     for f in (False, True)
                     if torch.equal(data.a[i][:, t:t + 32, s:s + 32].flip(-1) if f
                                    else data.a[i][:, t:t + 32, s:s + 32], crop_a)
                     and torch.equal(data.b[i][:, t:t + 32, s:s + 32].flip(-1) if f
                                     else data.b[i][:, t:t + 32, s:s + 32], crop_b)]
            assert found
            flipped.add(found[0][2])
    assert flipped == {False, True}
    state = batches.state_dict()
    ahead = [next(batches) for _ in range(4)]  # crosses an epoch end (2 batches per epoch)
    resumed = data.batches(batch_size=2, seed=99)
    resumed.load_state_dict(state)
    for x, y in zip(ahead, [next(resumed) for _ in range(4)], strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_luma_is_pil_gray_to_one_level():
    rgb = torch.from_numpy(picture(7, 16, 16)).permute(2, 0, 1)[None]
    gray = np.array(Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).convert("L"))
    ours = luma(rgb)
    assert ours.shape == (1, 1, 16, 16) and ours.dtype == torch.uint8
    assert (ours[0, 0].int() - torch.from_numpy(gray).int()).abs().max() <= 1


@pytest.mark.parametrize("name", ["facades", "maps"])
def test_pix2pix_sets_offline_say_where_to_put_them(name, tmp_path, capsys):
    result = train_refused_in_process(["model=pix2pix", f"dataset={name}", "device=cpu",
                                       "hydra.run.dir=run"], tmp_path, capsys)
    assert_bad_input(result, f"{name} is not in", "efrosgans.eecs.berkeley.edu/pix2pix/datasets/"
                     f"{name}.tar.gz", "no checksum", f"{name}/train/ exists")
    assert not (tmp_path / "run" / "checkpoints").exists()
