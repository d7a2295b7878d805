"""Super-resolution (srgan, srresnet) and the image tasks pix2pix shares with it: the networks
at scale 2 and 4, the low-resolution inputs, the inpainting holes, training end to end with
the TensorBoard images read back, `translate` on a folder, and the configs refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_states_equal, read_events, train_in_process
from omegaconf import OmegaConf
from PIL import Image

from ganlab.data.base import DataSpec
from ganlab.data.paired import (
    MASK_FILL,
    downsample,
    square_masks,
    task_inputs,
    upsample,
    with_holes,
)
from ganlab.errors import UserError
from ganlab.families.srgan import SrganConfig, SrresnetConfig
from ganlab.metrics import primary_metric
from ganlab.models.srgan import build_srgan

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.blocks=1", "model.g_features=4", "model.d_features=4", "device=cpu",
        "log.progress=false", "dataset=synthetic", "dataset.image_size=16",
        "dataset.n_samples=40", "trainer.batch_size=4"]
STEPS = 4
RUN = [f"trainer.max_steps={STEPS}", "log.every=1", f"log.sample_every={STEPS // 2}",
       f"eval.every={STEPS // 2}", f"trainer.ckpt_every={STEPS // 2}", "eval.n_samples=8"]


def digits(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 1, size, size) smooth blobs: images with structure at every scale."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=size, mode="bilinear") * 255).round(
    ).to(torch.uint8)


# --- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_the_generator_upscales_by_pixel_shuffle_and_the_discriminator_takes_any_size(scale):
    c = OmegaConf.structured(SrganConfig(scale=scale, blocks=2, g_features=8, d_features=4))
    nets = build_srgan(c, DataSpec("x", "image", (3, 32, 32)))
    shuffles = [m for m in nets.G.modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert len(shuffles) == {2: 1, 4: 2}[scale]
    assert len(nets.G.blocks) == 2
    assert nets.G.head[0].kernel_size == (9, 9) and nets.G.tail.kernel_size == (9, 9)
    x = torch.rand(2, 3, 32 // scale, 32 // scale) * 2 - 1
    y = nets.G(x)
    assert y.shape == (2, 3, 32, 32) and y.abs().max() <= 1
    for side in (7, 28, 32):  # 7-px and 28-px digits too: the map is pooled before the dense
        assert nets.D(torch.rand(2, 3, side, side)).shape == (2,)
    strided = [m for m in nets.D.features if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 4  # the paper's four halvings


def test_the_paper_sizes_and_srresnet_without_a_discriminator():
    spec = DataSpec("x", "image", (3, 96, 96))
    paper = build_srgan(OmegaConf.structured(SrganConfig()), spec)
    assert len(paper.G.blocks) == 16 and paper.G.head[0].out_channels == 64
    widths = [m.out_channels for m in paper.D.features if isinstance(m, torch.nn.Conv2d)]
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512]
    assert paper.D.head[0].out_features == 1024
    mse_only = build_srgan(OmegaConf.structured(SrresnetConfig()), spec)
    assert mse_only.D is None


# --- the tasks' inputs -----------------------------------------------------------------------


def test_low_resolution_inputs_are_an_antialiased_bicubic_downsample():
    images = digits(3, 28)
    small = downsample(images, 4)
    assert small.shape == (3, 1, 7, 7) and small.dtype == torch.uint8
    # PIL's bicubic resize widens its kernel by the scale (antialiasing), as torch's does
    for image, lr in zip(images, small, strict=True):
        pil = np.array(Image.fromarray(image[0].numpy()).resize((7, 7), Image.BICUBIC))
        assert np.abs(pil.astype(int) - lr[0].numpy().astype(int)).max() <= 2
    # not plain decimation: a checkerboard's fine detail averages out to gray
    board = ((torch.arange(28)[:, None] + torch.arange(28)[None]) % 2 * 255).to(torch.uint8)
    assert (downsample(board[None, None], 4).float() - 127.5).abs().max() < 8
    assert upsample(small, 4).shape == images.shape
    c = OmegaConf.create({"scale": 4})
    assert torch.equal(task_inputs("super_resolution", images, c), upsample(small, 4))


def test_inpaint_holes_are_squares_random_in_training_fixed_at_test_time():
    torch.manual_seed(0)
    masks = square_masks(64, 16, 0.25, "random", torch.device("cpu"))
    assert masks.shape == (64, 1, 16, 16) and (masks.sum(dim=(1, 2, 3)) == 16).all()  # 4x4
    rows = masks.any(dim=3).squeeze(1).float().argmax(dim=1)
    assert len(set(rows.tolist())) > 5  # drawn anew per image
    again = square_masks(64, 16, 0.25, "random", torch.device("cpu"))
    assert not torch.equal(masks, again)  # and per step
    fixed = [square_masks(8, 16, 0.25, "random", torch.device("cpu"),
                          torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*fixed)  # from a fixed seed: the same holes every time
    centre = square_masks(2, 16, 0.5, "center", torch.device("cpu"))
    assert centre[0, 0, 4:12, 4:12].all() and centre.sum() == 2 * 64
    images = digits(2, 16)
    holed = with_holes(images, centre)
    assert (holed[centre] == MASK_FILL).all() and torch.equal(holed[~centre], images[~centre])


# --- training end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny LeNet run on the synthetic images: srgan's content network (eval.classifier)."""
    root = tmp_path_factory.mktemp("lenet")
    run = root / "lenet"
    train_in_process(["model=lenet", "model.channels=[4,4]", "model.hidden=[8]",
                      "dataset=synthetic", "dataset.image_size=16", "dataset.n_samples=40",
                      "trainer.batch_size=4", "trainer.max_steps=2", "device=cpu",
                      "log.progress=false", "eval.every=0", f"hydra.run.dir={run}"], root)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, classifier):
    root = tmp_path_factory.mktemp("srgan")
    run = root / "run"
    train_in_process(["model=srgan", *TINY, *RUN, f"eval.classifier={classifier}",
                      f"hydra.run.dir={run}"], root)
    return root, run


def test_srgan_logs_its_losses_metrics_baseline_and_pictures(trained):
    root, run = trained
    acc = read_events(run / "tb")
    for name in ("G_content", "G_GAN", "D_real", "D_fake"):
        values = [e.value for e in acc.Scalars(f"loss/{name}")]
        assert len(values) == STEPS and all(np.isfinite(values)), name
    assert "loss/G_MSE" not in acc.Tags()["scalars"]  # the paper's SRGAN: no pixel loss
    for name in ("psnr", "ssim", "l1", "sharpness", "baseline_psnr", "baseline_sharpness"):
        assert len(acc.Scalars(f"eval/{name}")) == 2, name
    assert "super_resolution" in acc.Tags()["images"]
    # 4 columns (LR enlarged, bicubic, output, HR) of 16-px images, a row per held-out image
    image = Image.open(run / "samples" / f"step_{STEPS}_super_resolution.png")
    assert image.size == (4 * 18 + 2, 4 * 18 + 2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "classifier checkpoint" in metrics["content_network"]
    assert metrics["ranked_by"] == "psnr" and "best_psnr" in metrics
    assert primary_metric(metrics) == ("psnr", "max")
    from ganlab import load_checkpoint
    from ganlab.data import build_dataset

    family = load_checkpoint(run)
    # the metrics are G's on the held-out images' downsample, beside bicubic's
    data = build_dataset(family.config.dataset, root / "data",
                         seed=family.config.trainer.seed, heldout=True).heldout
    hr = data.x[:8]
    expected = family.quality(family.translate(downsample(hr, 4), "AtoB"), hr)
    assert metrics["psnr"] == pytest.approx(expected["psnr"], rel=1e-5)
    bicubic = family.quality(upsample(downsample(hr, 4), 4), hr)
    assert metrics["baseline_psnr"] == pytest.approx(bicubic["psnr"], rel=1e-5)
    log = (run / "train.log").read_text()
    assert "content loss on the features of classifier checkpoint" in log


def test_translate_upscales_a_folder_of_low_resolution_images(trained, tmp_path):
    from ganlab import translate

    _, run = trained
    folder = tmp_path / "small"
    folder.mkdir()
    for i, image in enumerate(digits(3, 4)):
        Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    translate.main([f"ckpt={run}", f"input={folder}", f"out={tmp_path / 'out'}",
                    f"sheet={tmp_path / 'sheet.png'}"])
    for i in range(3):
        assert np.array(Image.open(tmp_path / "out" / f"{i}.png")).shape == (16, 16)
    assert Image.open(tmp_path / "sheet.png").size == (6 * 18 + 2, 18 + 2)
    with pytest.raises(UserError, match="not a multiple of this model's scale"):
        translate.main([f"ckpt={run}", f"input={folder}", f"out={tmp_path / 'o2'}", "size=18"])


def test_srresnet_trains_on_the_pixel_mse_alone(tmp_path):
    run = tmp_path / "run"
    train_in_process(["model=srresnet", *TINY, *RUN, "model.scale=2", f"hydra.run.dir={run}"],
                     tmp_path)
    tags = read_events(run / "tb").Tags()["scalars"]
    assert "loss/G_MSE" in tags and not {"loss/G_GAN", "loss/D_real"} & set(tags)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["content_network"].startswith("none")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert "D" not in state["family"] and "opt_D" not in state["family"]
    # the paper's SRGAN starts from a trained SRResNet: model.init=RUN (the same scale)
    from ganlab.families.srgan import Srgan

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.model.init, cfg.model.name = str(run), "srgan"
    cfg.model.adversarial_weight = 1e-3
    started = Srgan(cfg, DataSpec("synthetic", "image", (1, 16, 16)), torch.device("cpu"))
    assert_states_equal(started.G.state_dict(), state["family"]["G"])
    assert started.D is not None
    cfg.model.scale = 4
    with pytest.raises(UserError, match="not an srgan or srresnet run at scale 4"):
        Srgan(cfg, DataSpec("synthetic", "image", (1, 16, 16)), torch.device("cpu"))


@pytest.mark.parametrize("task", ["super_resolution", "inpaint"])
def test_pix2pix_trains_on_the_image_tasks_beside_their_baseline(task, tmp_path):
    run = tmp_path / "run"
    train_in_process(["model=pix2pix", "model.g_features=4", "model.d_features=4",
                      "model.d_layers=2", f"model.task={task}", "device=cpu",
                      "log.progress=false", "dataset=synthetic", "dataset.image_size=16",
                      "dataset.n_samples=20", *RUN, f"hydra.run.dir={run}"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("l1", "psnr", "ssim", "baseline_l1", "baseline_psnr", "baseline_ssim"):
        assert np.isfinite(metrics[name]), name
    grid = np.array(Image.open(run / "samples" / f"step_{STEPS}_translation.png"))
    inputs = grid[2:18, 2:18]
    if task == "inpaint":  # the default hole: half the side, somewhere in the image
        assert (inputs == MASK_FILL).all(axis=-1).sum() >= 64
    else:  # the bicubic enlargement of a 4-px image: smooth
        assert np.abs(np.diff(inputs[..., 0].astype(int), axis=0)).mean() < 40


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["model=srgan", "dataset=synthetic", "dataset.image_size=30", "model.content_weight=0"],
     ("model.scale=4 does not divide dataset.image_size=30",)),
    (["model=srresnet", "model.scale=3"], ("power of two",)),
    (["model=pix2pix", "model.task=super_resolution", "dataset=synthetic",
      "dataset.image_size=32", "model.scale=3"], ("model.scale=3 does not divide",)),
    (["model=pix2pix", "model.task=inpaint", "dataset=paired", "dataset.name=x"],
     ("holds pairs already",)),
    (["model=srgan", "dataset=facades"], ("holds (input, target) image pairs",)),
])
def test_impossible_configs_are_refused_before_any_data_is_read(args, fragments):
    from ganlab.preflight import check_overrides

    with pytest.raises(UserError) as e:
        check_overrides(args)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_without_any_content_network_srgan_is_refused_in_one_line(tmp_path, monkeypatch,
                                                                  capsys):
    from conftest import assert_bad_input, train_refused_in_process

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no VGG19 there
    result = train_refused_in_process(["model=srgan", *TINY, f"hydra.run.dir={tmp_path / 'r'}"],
                                      tmp_path, capsys)
    assert_bad_input(result, "no content network", "VGG19", "dataset=synthetic")
    result = train_refused_in_process(["model=srgan", *TINY, "model.content_network=vgg19",
                                       f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, capsys)
    assert_bad_input(result, "no content network", "model.vgg_weights")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_vgg19_features_up_to_relu5_4_are_the_content_network_when_on_disk(tmp_path,
                                                                            monkeypatch):
    """VGG19's 548 MB of weights stand in for a small network of the same shape of list:
    the content network is its features[:36], on gray images repeated to RGB, normalised."""
    from conftest import compose_cfg

    from ganlab import pretrained
    from ganlab.families.srgan import VGG_RESCALE, Srgan

    weights = tmp_path / "vgg19.pth"
    weights.write_bytes(b"")
    layers = [torch.nn.Conv2d(3, 2, 3, padding=1)] + [torch.nn.Identity()] * 35
    fake = pretrained.Normalised(torch.nn.Module(), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    fake.network.features = torch.nn.Sequential(*layers, torch.nn.MaxPool2d(2))
    monkeypatch.setattr(pretrained, "torchvision_network",
                        lambda name, file, who: (fake, 3, 224))
    cfg = compose_cfg("model=srgan", *[a for a in TINY if a.startswith("model.")],
                      "dataset=synthetic", "dataset.image_size=16",
                      f"model.vgg_weights={weights}")
    family = Srgan(cfg, DataSpec("synthetic", "image", (1, 16, 16)), torch.device("cpu"))
    phi = family.content()
    assert phi.description.startswith("VGG19 relu5_4") and len(phi.body) == 36
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    expected = layers[0]((((x + 1) / 2).expand(-1, 3, -1, -1) - 0.5) / 0.25) * VGG_RESCALE
    assert torch.allclose(phi(x), expected, atol=1e-6)  # no pooling: relu5_4's resolution
    losses = family.train_step((digits(4, 16), None))
    assert {"loss/G_content", "loss/G_GAN", "loss/D_real"} <= set(losses)
