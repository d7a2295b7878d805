"""CycleGAN: unpaired data, the image pool, the lr schedule, the family, `translate`, bad input."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_bad_input,
    assert_states_equal,
    log_shows,
    read_events,
    run_cli,
    signal_training,
)
from omegaconf import OmegaConf
from PIL import Image

from ganlab.config import Red2BlueDatasetConfig, UnpairedDatasetConfig
from ganlab.data import build_dataset
from ganlab.data import unpaired as unpaired_module
from ganlab.data.download import Archive, DownloadError
from ganlab.data.shapes import COLOURS, draw_shapes
from ganlab.errors import UserError
from ganlab.families.pool import ImagePool
from ganlab.schedules import linear_decay

# a small CycleGAN at 32 px: resnet_6 (auto below 256 px) 8 wide, a 3-layer PatchGAN 8 wide
SMALL = ["model=cyclegan", "model.g_features=8", "model.d_features=8", "device=cpu",
         "log.progress=false"]


def write_domain(folder: Path, n: int, colour, seed: int, size: int = 40,
                 suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = draw_shapes(n, size, colour, torch.Generator().manual_seed(seed))
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}{suffix}")


def make_unpaired(root: Path, n_a: int = 12, n_b: int = 9, test: bool = True) -> Path:
    write_domain(root / "trainA", n_a, COLOURS["A"], 1)
    write_domain(root / "trainB", n_b, COLOURS["B"], 2)
    if test:
        write_domain(root / "testA", 3, COLOURS["A"], 3)
        write_domain(root / "testB", 4, COLOURS["B"], 4)
    return root


def unpaired_cfg(name: str = "tiny", **kw):
    cfg = OmegaConf.structured(UnpairedDatasetConfig)
    cfg.name = name
    cfg.image_size = 32
    for k, v in kw.items():
        cfg[k] = v
    return cfg


# --- data ------------------------------------------------------------------------------------


def test_unpaired_folder_loads_both_domains_and_the_test_split(tmp_path):
    make_unpaired(tmp_path / "tiny")
    data = build_dataset(unpaired_cfg(), tmp_path, seed=0, heldout=True)
    assert data.spec.kind == "unpaired" and data.spec.shape == (3, 32, 32)
    # train at the load size (1.12 x 32 = 36) for random crops; test resized to 32
    assert data.a.shape == (12, 3, 36, 36) and data.b.shape == (9, 3, 36, 36)
    assert data.heldout.a.shape == (3, 3, 32, 32) and data.heldout.b.shape == (4, 3, 32, 32)
    assert data.a.dtype == torch.uint8 and len(data) == 12  # an epoch: the larger domain
    # red in A, blue in B survive decoding
    assert data.a[:, 0].float().mean() > data.a[:, 2].float().mean() + 20
    assert data.b[:, 2].float().mean() > data.b[:, 0].float().mean() + 20
    assert "testA" in data.heldout.source


def test_a_folder_without_test_split_holds_out_a_tenth_of_each_domain(tmp_path):
    make_unpaired(tmp_path / "tiny", n_a=20, n_b=10, test=False)
    data = build_dataset(unpaired_cfg(cache=False), tmp_path, seed=0, heldout=True)
    assert (len(data.a), len(data.heldout.a)) == (18, 2)
    assert (len(data.b), len(data.heldout.b)) == (9, 1)
    assert data.heldout.a.shape[-1] == 32 and data.a.shape[-1] == 36
    assert "10%" in data.heldout.source


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    root = make_unpaired(tmp_path / "tiny")
    (root / "trainA" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "trainB" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(unpaired_cfg(cache=False), tmp_path, seed=0)
    assert len(data.a) == 12 and len(data.b) == 9
    assert "2 unreadable skipped" in data.source
    assert any("skipped 1 of 13 images" in r.message for r in caplog.records)


def test_a_domain_of_only_corrupt_images_is_an_error(tmp_path):
    root = make_unpaired(tmp_path / "tiny")
    for f in (root / "trainB").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="none of the 9 images"):
        build_dataset(unpaired_cfg(cache=False), tmp_path, seed=0)


def test_the_cache_is_used_and_rebuilt_when_the_folder_changes(tmp_path):
    root = make_unpaired(tmp_path / "tiny")
    first = build_dataset(unpaired_cfg(), tmp_path, seed=0)
    cache = root / "cache" / "36px_3ch.pt"
    assert cache.is_file()
    # the cache is read: replacing a file's pixels (same names) does not change the data
    write_domain(root / "trainA", 12, COLOURS["B"], 9)
    assert torch.equal(build_dataset(unpaired_cfg(), tmp_path, seed=0).a, first.a)
    write_domain(root / "trainA", 13, COLOURS["B"], 9)  # one more file: rebuilt
    again = build_dataset(unpaired_cfg(), tmp_path, seed=0)
    assert len(again.a) == 13
    cache.write_bytes(b"truncated")  # unreadable: rebuilt, not a crash
    assert len(build_dataset(unpaired_cfg(), tmp_path, seed=0).a) == 13


def test_batches_are_crops_and_flips_in_independent_orders_and_resume_exactly(tmp_path):
    make_unpaired(tmp_path / "tiny")
    data = build_dataset(unpaired_cfg(), tmp_path, seed=0)
    batches = data.batches(batch_size=3, seed=5)
    a, b = next(batches)
    assert a.shape == (3, 3, 32, 32) and b.shape == (3, 3, 32, 32) and a.dtype == torch.uint8
    # each crop is a 32-px window of some training image, possibly mirrored
    for crop in a:
        found = any(torch.equal(img[:, t:t + 32, s:s + 32], c)
                    for img in data.a for t in range(5) for s in range(5)
                    for c in (crop, crop.flip(-1)))
        assert found
    state = batches.state_dict()
    ahead = [next(batches) for _ in range(7)]  # crosses both domains' epoch ends
    resumed = data.batches(batch_size=3, seed=99)
    resumed.load_state_dict(state)
    for (a1, b1), (a2, b2) in zip(ahead, [next(resumed) for _ in range(7)], strict=True):
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
    # the same seed gives the same stream; another seed another one
    x = next(data.batches(3, seed=5))[0]
    assert torch.equal(x, a) and not torch.equal(next(data.batches(3, seed=6))[0], a)


def test_flips_and_crops_vary_and_flip_false_never_mirrors():
    image = torch.arange(3 * 36 * 36, dtype=torch.int64).reshape(1, 3, 36, 36) % 251
    image = image.to(torch.uint8)
    spec = unpaired_module.DataSpec("t", kind="unpaired", shape=(3, 32, 32))
    seen_flip, corners = False, set()
    for flip in (True, False):
        data = unpaired_module.UnpairedDataset(spec, image, image.clone(), flip=flip)
        batches = data.batches(1, seed=0)
        for _ in range(40):
            crop = next(batches)[0][0]
            match = [(t, s, f) for t in range(5) for s in range(5) for f in (False, True)
                     if torch.equal(image[0, :, t:t + 32, s:s + 32].flip(-1) if f else
                                    image[0, :, t:t + 32, s:s + 32], crop)]
            assert len(match) == 1
            t, s, f = match[0]
            corners.add((t, s))
            assert flip or not f
            seen_flip |= f
    assert seen_flip and len(corners) > 10


def test_batch_larger_than_a_domain_is_an_error(tmp_path):
    make_unpaired(tmp_path / "tiny")
    data = build_dataset(unpaired_cfg(), tmp_path, seed=0)
    with pytest.raises(UserError, match="smaller domain"):
        data.batches(batch_size=10, seed=0)


def test_red2blue_domains_are_red_and_blue_and_unpaired():
    cfg = OmegaConf.structured(Red2BlueDatasetConfig)
    cfg.n_samples, cfg.n_test = 50, 10
    data = build_dataset(cfg, "unused", seed=0, heldout=True)
    assert data.a.shape == (50, 3, 36, 36) and data.heldout.b.shape == (10, 3, 32, 32)
    fg_a = (data.a.int() - 235).abs().amax(1) > 80
    fg_b = (data.b.int() - 235).abs().amax(1) > 80
    red_a = data.a[:, 0][fg_a].float().mean() - data.a[:, 2][fg_a].float().mean()
    assert red_a > 150
    assert data.b[:, 2][fg_b].float().mean() - data.b[:, 0][fg_b].float().mean() > 150
    # independent draws: the shapes of A and B do not coincide
    assert (fg_a != fg_b).flatten(1).any(1).all()
    # the margin keeps every shape inside every possible crop
    assert not fg_a[:, :2].any() and not fg_a[:, -2:].any()


# --- known archives: download, extraction, offline ---------------------------------------------


def zip_of(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, Path("horse2zebra") / path.relative_to(root))
    return buffer.getvalue()


def test_a_missing_known_dataset_is_downloaded_extracted_and_the_zip_removed(tmp_path,
                                                                               monkeypatch):
    payload = zip_of(make_unpaired(tmp_path / "made"))
    calls = []

    def fake_fetch(archive, folder, **kw):
        calls.append(archive.name)
        path = Path(folder) / archive.name
        path.write_bytes(payload)
        return path

    monkeypatch.setattr(unpaired_module, "fetch", fake_fetch)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = build_dataset(unpaired_cfg("horse2zebra"), data_dir, seed=0, heldout=True)
    assert calls == ["horse2zebra.zip"] and len(data.a) == 12 and len(data.heldout.b) == 4
    assert not (data_dir / "horse2zebra.zip").exists()
    build_dataset(unpaired_cfg("horse2zebra"), data_dir, seed=0)  # already there: no download
    assert calls == ["horse2zebra.zip"]


def test_offline_known_dataset_says_what_to_place_where(tmp_path, monkeypatch):
    dead = Archive("horse2zebra.zip", ("http://127.0.0.1:9/a.zip", "http://127.0.0.1:9/b.zip"),
                   sha256="0" * 64, size=123)
    monkeypatch.setitem(unpaired_module.ARCHIVES, "horse2zebra", dead)
    with pytest.raises(UserError) as e:
        build_dataset(unpaired_cfg("horse2zebra"), tmp_path, seed=0)
    message = str(e.value)
    assert "\n" not in message and "missing: trainA/, trainB/" in message
    assert "127.0.0.1:9/a.zip" in message and "127.0.0.1:9/b.zip" in message  # both reasons
    assert f"unzip it in {tmp_path}" in message and "sha256 " + "0" * 64 in message
    with pytest.raises(UserError, match=r"dataset\.download=false"):
        build_dataset(unpaired_cfg("horse2zebra", download=False), tmp_path, seed=0)


def test_download_errors_reach_the_message(tmp_path, monkeypatch):
    def failing(archive, folder, **kw):
        raise DownloadError("http://x/h.zip: checksum mismatch (got 1a2b3c4d5e6f...)")

    monkeypatch.setattr(unpaired_module, "fetch", failing)
    with pytest.raises(UserError, match="checksum mismatch"):
        build_dataset(unpaired_cfg("horse2zebra"), tmp_path, seed=0)


# --- pool and schedule -----------------------------------------------------------------------


def test_image_pool_fills_then_swaps_old_fakes_in_half_the_cases():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).reshape(4, 1)
    assert torch.equal(pool.query(first), first)  # filling: shown as they come
    assert pool.count == 4 and torch.equal(pool.images, first)
    shown_old, total = 0, 0
    for step in range(200):
        new = torch.full((2, 1), 100.0 + step)
        stored_before = pool.images.clone()
        out = pool.query(new)
        for i in range(2):
            total += 1
            if out[i].item() == new[i].item():
                continue
            shown_old += 1
            assert out[i].item() in stored_before.flatten().tolist()  # an old fake ...
            assert new[i].item() in pool.images.flatten().tolist()  # ... replaced by the new
    assert 0.4 < shown_old / total < 0.6
    assert len(set(pool.images.flatten().tolist())) == 4


def test_image_pool_of_size_zero_passes_through_and_state_round_trips():
    x = torch.randn(3, 2)
    assert ImagePool(0).query(x) is x
    pool = ImagePool(5)
    pool.query(torch.randn(3, 2))
    copy = ImagePool(5)
    copy.load_state_dict(pool.state_dict())
    torch.manual_seed(1)
    a = pool.query(torch.ones(4, 2))
    torch.manual_seed(1)
    b = copy.query(torch.ones(4, 2))
    assert torch.equal(a, b) and torch.equal(pool.images, copy.images)
    with pytest.raises(ValueError, match="size 5"):
        ImagePool(6).load_state_dict(pool.state_dict())


def test_linear_decay_is_constant_for_the_first_half_then_falls_to_zero():
    assert linear_decay(0, 100, 0.5) == 1.0
    assert linear_decay(49, 100, 0.5) == 1.0
    assert linear_decay(50, 100, 0.5) == 1.0
    assert linear_decay(75, 100, 0.5) == pytest.approx(0.5)
    assert linear_decay(99, 100, 0.5) == pytest.approx(0.02)
    assert linear_decay(100, 100, 0.5) == 0.0
    assert linear_decay(0, 100, 0.0) == 1.0 and linear_decay(50, 100, 0.0) == 0.5


# --- the family, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A tiny CycleGAN trained 6 steps on a tiny folder at 32 px, through the real CLI."""
    root = tmp_path_factory.mktemp("cyclegan")
    make_unpaired(root / "data" / "tiny")
    run = root / "run"
    result = run_cli(["train", *SMALL, "dataset=unpaired", "dataset.name=tiny",
                      "dataset.image_size=32", "trainer.max_steps=6", "log.every=1",
                      "log.sample_every=3", "eval.every=3", "trainer.ckpt_every=3",
                      f"hydra.run.dir={run}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, run


def test_training_logs_every_loss_the_lr_and_translation_grids(trained):
    root, run = trained
    acc = read_events(run / "tb")
    tags = acc.Tags()
    for name in ("G_A", "G_B", "D_A", "D_B", "cycle_A", "cycle_B", "idt_A", "idt_B"):
        values = [e.value for e in acc.Scalars(f"loss/{name}")]
        assert len(values) == 6 and all(np.isfinite(values)), name
    lrs = [e.value for e in acc.Scalars("lr")]
    # constant for the first half (steps 0-2), then linear to 0: 2e-4 * (6 - t) / 3
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3], rel=1e-5)
    assert {"translation_A", "translation_B"} <= set(tags["images"])
    grid = (run / "samples" / "step_6_translation_A.png")
    # 3 test images (fewer than 8) in rows of real | translated | reconstructed | identity
    width, height = Image.open(grid).size
    assert (width, height) == (4 * 34 + 2, 3 * 34 + 2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "testA" in metrics["heldout_data"]
    # the cycle L1 of the last evaluation (step 6), by hand: the final generators on the test
    # split, mean |G_BA(G_AB(a)) - a| over the images in [-1, 1] units, and B's mirror image
    from ganlab import load_checkpoint
    from ganlab.images import SYMMETRIC, to_float

    family = load_checkpoint(run)
    heldout = build_dataset(unpaired_cfg(), root / "data", seed=0, heldout=True).heldout
    for name, images, forward, back in (("A", heldout.a, family.G_AB, family.G_BA),
                                        ("B", heldout.b, family.G_BA, family.G_AB)):
        real = to_float(images, SYMMETRIC)
        with torch.no_grad():
            expected = (back(forward(real)) - real).abs().mean(dim=(1, 2, 3)).mean().item()
        assert metrics[f"cycle_l1_{name}"] == pytest.approx(expected, rel=1e-5), name


def test_the_python_api_exposes_both_generators_and_critics(trained):
    from ganlab import load_checkpoint

    _, run = trained
    family = load_checkpoint(run)
    assert family.generator_name == "resnet_6"
    x = torch.zeros(2, 3, 32, 32)
    assert family.G_AB(x).shape == x.shape and family.G_BA(x).shape == x.shape
    assert family.D_A(x).shape == (2, 1, 2, 2)  # a 70x70 PatchGAN's score map at 32 px
    assert not family.G_AB.training


def test_resume_after_an_interruption_gives_the_same_weights_and_pools(tmp_path, one_thread):
    """SIGINT mid-run (during the lr decay, pool full), then resume: identical to no stop."""
    make_unpaired(tmp_path / "data" / "tiny")
    common = [*SMALL, "dataset=unpaired", "dataset.name=tiny", "dataset.image_size=32",
              "model.pool_size=3", "model.decay_start=0.2", "log.sample_every=0",
              "eval.every=0", "log.every=1", "trainer.max_steps=24"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(["train", *common, f"hydra.run.dir={straight}"], tmp_path).returncode == 0
    code, err = signal_training([*common, f"hydra.run.dir={split}"], tmp_path,
                                log_shows(split / "train.log", "step 8/"))
    assert code == 130, err[-2000:]
    stopped = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert 8 <= stopped["step"] < 24 and stopped["family"]["pool_A"]["images"].shape[0] == 3
    resumed = run_cli(["train", f"resume={split}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert a["family"]["updates"] == b["family"]["updates"] == 24
    del a["config"], b["config"]  # the resumed run's says resume=<its checkpoint>
    assert_states_equal(a, b)  # networks, optimizers, pools, data order, RNGs


def test_translate_writes_a_folder_with_the_same_names_and_a_sheet(trained):
    root, run = trained
    source = root / "data" / "tiny" / "testB"
    out, sheet = root / "zebras_to_horses", root / "sheet.png"
    result = run_cli(["translate", f"ckpt={run}", f"input={source}", "direction=BtoA",
                      f"out={out}", f"sheet={sheet}"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert Image.open(out / names[0]).size == (32, 32)
    assert Image.open(sheet).size == (8 * 34 + 2, 34 + 2)  # 4 pairs on one row
    # the written images are the generator's output for the resized inputs
    from ganlab import load_checkpoint
    from ganlab.data.imagefiles import decode

    family = load_checkpoint(run)
    x = torch.from_numpy(decode(source / names[0], 32, resample=Image.BICUBIC)).permute(2, 0, 1)
    expected = family.translate(x[None], "BtoA")[0]
    written = torch.from_numpy(np.array(Image.open(out / names[0]))).permute(2, 0, 1)
    assert torch.equal(written, expected)
    # one file, another size the generator takes
    single = run_cli(["translate", f"ckpt={run}", f"input={source / names[1]}", "size=48",
                      f"out={root / 'one'}"], root)
    assert single.returncode == 0, single.stderr[-2000:]
    assert Image.open(root / "one" / names[1]).size == (48, 48)


def test_translate_bad_input(trained):
    from ganlab import translate

    root, run = trained
    source = root / "data" / "tiny" / "testA"
    # through the CLI once: one `error:` line, exit 2
    assert_bad_input(run_cli(["translate", f"ckpt={run}", f"input={source}",
                              f"out={source}"], root), "is the input folder")
    for args, fragment in (
        (["direction=AtoC"], "direction=AtoC"),
        (["size=30"], "multiples of 4"),
        ([f"input={root / 'nope'}"], "does not exist"),
        (["sheet=x.jpg"], "sheet must end in .png"),
    ):
        given = {a.split("=", 1)[0]: a for a in
                 [f"ckpt={run}", f"input={source}", f"out={root / 'x'}", *args]}
        with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
            translate.main(list(given.values()))
    assert len(list(source.iterdir())) == 3  # nothing replaced


@pytest.mark.parametrize("args, fragments", [
    (["dataset=unpaired", "dataset.name=tiny", "dataset.image_size=30"],
     ("dataset.image_size=30", "divisible by 4")),
    (["dataset=unpaired", "dataset.name=tiny", "dataset.image_size=48",
      "model.generator=unet"], ("model.generator=unet", "power of two")),
    (["dataset=unpaired", "dataset.name=tiny", "dataset.image_size=16"],
     ("model.d_layers=3",)),
    (["dataset=mnist"], ("model=cyclegan translates between two unpaired image domains",)),
    (["dataset=unpaired"], ("dataset.name must be given",)),
    (["model=dcgan", "dataset=red2blue"], ("dataset=red2blue holds two unpaired image domains",)),
    (["model=dcgan", "model.lambda_a=5"], ("model.lambda_a is not a setting of model=dcgan",)),
    (["cyclegan.lambda_a=5"], ("cyclegan.lambda_a is now model.lambda_a",)),
])
def test_impossible_configs_are_refused_before_any_data_is_read(args, fragments):
    from ganlab.preflight import check_overrides

    with pytest.raises(UserError) as e:
        check_overrides(["model=cyclegan", *args])
    for fragment in fragments:
        assert fragment in str(e.value)


def test_a_folder_without_trainB_exits_2_and_writes_no_checkpoint(tmp_path):
    write_domain(tmp_path / "data" / "nobtrain" / "trainA", 3, COLOURS["A"], 1)
    result = run_cli(["train", *SMALL, "dataset=unpaired", "dataset.name=nobtrain",
                      "dataset.image_size=32", "hydra.run.dir=run"], tmp_path)
    assert_bad_input(result, "missing: trainB/", "nobtrain/trainB/ (testA/ and testB/ optional)")
    assert not (tmp_path / "run" / "checkpoints").exists()
