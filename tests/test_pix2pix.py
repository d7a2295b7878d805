"""pix2pix: its networks at each size, training end to end on tiny paired and colour data with
the TensorBoard images read back, test-time behaviour, resume, `translate`, bad configs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_states_equal, read_events, train_in_process
from omegaconf import OmegaConf
from PIL import Image
from test_paired_data import picture, write_aligned

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.pix2pix import Pix2pixConfig
from ganlab.models.cyclegan import UnetBlock, build_pix2pix, patch_output_size

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model=pix2pix", "model.g_features=4", "model.d_features=4", "device=cpu",
         "log.progress=false"]
STEPS = 6
RUN = [f"trainer.max_steps={STEPS}", "log.every=1", f"log.sample_every={STEPS // 2}",
       f"eval.every={STEPS // 2}", f"trainer.ckpt_every={STEPS // 2}"]


def networks(size: int, channels: int = 3, task: str = "paired", **settings):
    c = OmegaConf.structured(Pix2pixConfig(**settings))
    c.task = task
    kind = "paired" if task == "paired" else "image"
    return build_pix2pix(c, DataSpec("x", kind, (channels, size, size)))


def dropout_levels(G) -> int:
    return sum(isinstance(m, UnetBlock) and any(isinstance(x, torch.nn.Dropout)
                                                for x in m.model.children())
               for m in G.modules())


# --- networks --------------------------------------------------------------------------------


def test_unet_256_and_the_conditional_patchgan_match_the_reference():
    nets = networks(256)
    assert nets.depth == 8  # unet_256: a 1x1 bottleneck
    # the totals the reference prints for pix2pix (RGB -> RGB, batch norm): 54.414 M, 2.769 M
    assert round(sum(p.numel() for p in nets.G.parameters()) / 1e6, 3) == 54.414
    assert round(sum(p.numel() for p in nets.D.parameters()) / 1e6, 3) == 2.769
    assert nets.D[0].in_channels == 6  # input and output, concatenated
    assert dropout_levels(nets.G) == 3  # the reference's three 512-wide levels


@pytest.mark.parametrize("size, depth, dropout", [(16, 4, 1), (32, 5, 1), (64, 6, 1),
                                                   (128, 7, 2)])
def test_smaller_sizes_have_fewer_downsamplings_and_keep_some_dropout(size, depth, dropout):
    nets = networks(size, g_features=4, d_features=4, d_layers=2 if size == 16 else 3)
    assert nets.depth == depth and dropout_levels(nets.G) == dropout
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = nets.G(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    side = patch_output_size(size, 2 if size == 16 else 3)
    assert nets.D(torch.cat([x, y], 1)).shape == (2, 1, side, side)


def test_colorize_networks_take_one_channel_and_give_three():
    nets = networks(32, task="colorize", g_features=4, d_features=4)
    assert nets.G(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    assert nets.D[0].in_channels == 4


@pytest.mark.parametrize("size, d_layers, fragment", [
    (48, 3, "power of two"), (8, 1, "power of two"), (16, 3, "model.d_layers=3")])
def test_sizes_the_networks_cannot_take_are_refused(size, d_layers, fragment):
    with pytest.raises(UserError, match=fragment):
        networks(size, d_layers=d_layers)


# --- training end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pix2pix trained 6 steps on 8 aligned 32-px pairs (4 of them test pairs)."""
    root = tmp_path_factory.mktemp("pix2pix")
    write_aligned(root / "data" / "tiny" / "train", 8)
    write_aligned(root / "data" / "tiny" / "test", 4, seed=40)
    run = root / "run"
    train_in_process([*SMALL, *RUN, "dataset=paired", "dataset.name=tiny",
                      "dataset.image_size=32", f"hydra.run.dir={run}"], root)
    return root, run


def test_training_logs_the_losses_the_lr_the_metrics_and_the_translations(trained):
    root, run = trained
    acc = read_events(run / "tb")
    for name in ("G_GAN", "G_L1", "D_real", "D_fake"):
        values = [e.value for e in acc.Scalars(f"loss/{name}")]
        assert len(values) == STEPS and all(np.isfinite(values)), name
    lrs = [e.value for e in acc.Scalars("lr")]
    assert lrs == pytest.approx([2e-4] * 4 + [2e-4 * 2 / 3, 2e-4 / 3], rel=1e-5)
    for name in ("l1", "psnr", "ssim"):
        assert len(acc.Scalars(f"eval/{name}")) == 2, name  # steps 3 and 6
    assert "translation" in acc.Tags()["images"]
    # 4 test pairs, a row each: input | output | target, 32 px with 2-px borders
    image = Image.open(run / "samples" / f"step_{STEPS}_translation.png")
    assert image.size == (3 * 34 + 2, 4 * 34 + 2)
    grid = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    from ganlab import load_checkpoint

    family = load_checkpoint(run)
    # the target column holds the test pairs' B sides; the metrics by hand: the final G on
    # the test pairs, its outputs as translate writes them
    from ganlab.data import build_dataset
    from ganlab.data.paired import PairedDatasetConfig

    cfg = OmegaConf.structured(PairedDatasetConfig(name="tiny", image_size=32))
    heldout = build_dataset(cfg, root / "data", seed=0, heldout=True).heldout
    assert torch.equal(grid[:, 2:34, 2 + 2 * 34 : 34 + 2 * 34], heldout.b[0])
    metrics = json.loads((run / "metrics.json").read_text())
    expected = family.quality(family.translate(heldout.a, "AtoB"), heldout.b)
    for name in ("l1", "psnr", "ssim"):
        assert metrics[name] == pytest.approx(expected[name], rel=1e-5), name
    assert "tiny/test/" in metrics["heldout_data"]


def test_test_time_keeps_dropout_leaves_running_stats_and_the_rng_alone(trained):
    from ganlab import load_checkpoint

    _, run = trained
    family = load_checkpoint(run)
    x = torch.from_numpy(picture(3, 32, 32)).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)
    buffers = [b.clone() for b in family.G.buffers()]
    rng = torch.get_rng_state()
    first = family.translate(x, "AtoB")
    assert torch.equal(first, family.translate(x, "AtoB"))  # the same masks every time
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(buffers, family.G.buffers(), strict=True))
    assert not family.G.training
    # the same image three times, each with its own dropout mask: the paper's noise
    assert not (torch.equal(first[0], first[1]) and torch.equal(first[1], first[2]))
    family.test_mode = type(family.test_mode).eval
    family.test_batch = 16
    deterministic = family.translate(x, "AtoB")
    assert torch.equal(deterministic[0], deterministic[1])


def test_translate_writes_a_folder_and_refuses_btoa(trained, capsys):
    from ganlab import load_checkpoint, translate
    from ganlab.data.imagefiles import decode

    root, run = trained
    source = root / "inputs"
    source.mkdir()
    for i in range(3):
        Image.fromarray(picture(60 + i, 40, 40)).save(source / f"in{i}.png")
    out, sheet = root / "outputs", root / "sheet.png"
    translate.main([f"ckpt={run}", f"input={source}", f"out={out}", f"sheet={sheet}"])
    assert "wrote 3 AtoB translation(s) at 32 px" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["in0.png", "in1.png", "in2.png"]
    assert Image.open(sheet).size == (6 * 34 + 2, 34 + 2)
    family = load_checkpoint(run)
    x = torch.from_numpy(decode(source / "in0.png", 32, resample=Image.BICUBIC)).permute(2, 0, 1)
    batch = torch.stack([x] + [torch.from_numpy(decode(source / f"in{i}.png", 32,
                                                       resample=Image.BICUBIC)).permute(2, 0, 1)
                               for i in (1, 2)])
    written = torch.from_numpy(np.array(Image.open(out / "in0.png"))).permute(2, 0, 1)
    assert torch.equal(written, family.translate(batch, "AtoB")[0])
    with pytest.raises(UserError, match="translates AtoB only"):
        translate.main([f"ckpt={run}", f"input={source}", f"out={root / 'x'}",
                        "direction=BtoA"])
    with pytest.raises(UserError, match="multiples of 32"):
        translate.main([f"ckpt={run}", f"input={source}", f"out={root / 'x'}", "size=48"])


def test_resume_is_bit_exact(trained, tmp_path):
    """The trained run stopped at its halfway checkpoint and resumed ends as it did: the same
    weights, batch-norm statistics, optimizers, lr schedule, data order and RNGs (dropout
    draws from the global one)."""
    root, straight = trained
    split = tmp_path / "split"
    shutil.copytree(straight, split)
    saves = split / "checkpoints"
    (saves / f"step_{STEPS}.pt").unlink()
    (saves / f"step_{STEPS // 2}.pt").replace(saves / "last.pt")
    train_in_process([f"resume={split}"], root)
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert b["step"] == STEPS and a["family"]["updates"] == b["family"]["updates"] == STEPS
    assert a.pop("config") == {**b.pop("config"), "resume": None}
    assert_states_equal(a, b)
    assert json.loads((straight / "metrics.json").read_text())["l1"] == pytest.approx(
        json.loads((split / "metrics.json").read_text())["l1"], abs=0)


def test_colorize_trains_on_rgb_images_beside_the_gray_baseline(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(picture(i, 16, 16)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    train_in_process([*SMALL, *RUN, "model.task=colorize", "model.d_layers=2",
                      "dataset=folder", f"dataset.path={folder}", "dataset.image_size=16",
                      f"hydra.run.dir={run}"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("l1", "psnr", "ssim", "baseline_l1", "baseline_psnr", "baseline_ssim"):
        assert np.isfinite(metrics[name]), name
    image = Image.open(run / "samples" / f"step_{STEPS}_translation.png")
    grid = np.array(image)
    assert image.size == (3 * 18 + 2, 18 + 2)  # one held-out image (10%)
    gray = grid[2:18, 2:18]  # the input column is the luma, shown as RGB
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # `translate` reads a colorize model's inputs as gray
    from ganlab import translate

    translate.main([f"ckpt={run}", f"input={folder / '0.png'}", f"out={tmp_path / 'out'}"])
    assert np.array(Image.open(tmp_path / "out" / "0.png")).shape == (16, 16, 3)


def test_lambda_gan_0_trains_g_on_l1_alone_and_leaves_d_untouched():
    """The paper's "L1 alone" row: no adversarial term, D neither trained nor consulted."""
    from conftest import build_family

    spec = DataSpec("pairs", "paired", (3, 16, 16))
    settings = {"model.d_layers": 2, "trainer.batch_size": 4}
    l1_only = build_family(Pix2pixConfig(g_features=4, d_features=4, lambda_gan=0.0, lr=2e-3), spec,
                           **settings)
    both = build_family(Pix2pixConfig(g_features=4, d_features=4), spec, **settings)
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    b = 255 - a  # a target G can learn: the negative
    d_before = [p.clone() for p in l1_only.D.parameters()]
    first = l1_only.train_step((a, b))
    for _ in range(40):
        last = l1_only.train_step((a, b))
    assert set(first) == {"loss/G_L1", "lr"}
    assert last["loss/G_L1"] < 0.85 * first["loss/G_L1"]
    for before, after in zip(d_before, l1_only.D.parameters(), strict=True):
        assert torch.equal(before, after)
    assert {"loss/G_GAN", "loss/D_real", "loss/D_fake", "loss/G_L1"} <= set(both.train_step((a, b)))


@pytest.mark.parametrize("args, fragments", [
    (["model.task=colorize", "dataset=mnist"], ("needs an RGB dataset", "dataset=mnist has 1")),
    (["dataset=mnist"], ("dataset=mnist is not paired", "model.task=colorize")),
    (["dataset=paired", "dataset.name=x", "dataset.image_size=48"], ("power of two",)),
    (["model.task=colorize", "dataset=paired", "dataset.name=x"], ("holds pairs already",)),
    (["model=dcgan", "dataset=facades"], ("dataset=facades holds (input, target) image pairs",)),
    (["model=cyclegan", "dataset=facades"], ("does not train on pairs",)),
    (["dataset=facades", "model.lambda_gan=0", "model.lambda_l1=0"], ("nothing to learn",)),
    (["dataset=red2blue"], ("two unpaired image domains",)),
])
def test_impossible_configs_are_refused_before_any_data_is_read(args, fragments):
    from ganlab.preflight import check_overrides

    with pytest.raises(UserError) as e:
        check_overrides(["model=pix2pix", *args])
    for fragment in fragments:
        assert fragment in str(e.value)
