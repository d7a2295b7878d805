"""SPADE (GauGAN): its normalisation, its networks at two sizes, the procedural label maps of
dataset=masks, label-map folders, training end to end with the TensorBoard images read back,
`translate` from label-map files, resume, bad configs."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import (
    assert_bad_input,
    assert_states_equal,
    read_events,
    train_in_process,
    train_refused_in_process,
)
from omegaconf import OmegaConf
from PIL import Image
from test_paired_data import picture

from ganlab.data.base import DataSpec
from ganlab.data.masks import (
    CLASS_NAMES,
    MasksDatasetConfig,
    colourize,
    draw_label_maps,
    make_pairs,
    one_hot,
    palette_png,
)
from ganlab.errors import UserError
from ganlab.families.spade import SpadeConfig
from ganlab.models.spade import Spade, SpadeResBlock, build_spade

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model=spade", "model.g_features=2", "model.d_features=4", "model.spade_hidden=4",
         "device=cpu", "log.progress=false", "trainer.batch_size=2"]
MASKS = ["dataset=masks", "dataset.image_size=32", "dataset.n_samples=8", "dataset.n_test=4"]
STEPS = 6
RUN = [f"trainer.max_steps={STEPS}", "log.every=1", f"log.sample_every={STEPS // 2}",
       f"eval.every={STEPS // 2}", f"trainer.ckpt_every={STEPS // 2}"]


def networks(size: int, classes: int = 4, **settings):
    c = OmegaConf.structured(SpadeConfig(**settings))
    return build_spade(c, DataSpec("x", "paired", (3, size, size), num_classes=classes))


def maps(n: int, size: int, seed: int = 0, max_shapes: int = 4) -> torch.Tensor:
    return draw_label_maps(n, size, max_shapes, torch.Generator().manual_seed(seed))


# --- SPADE normalisation ---------------------------------------------------------------------


def test_spade_modulation_follows_the_label_map():
    torch.manual_seed(0)
    norm = Spade(channels=6, classes=4, hidden=8)
    for p in norm.parameters():  # away from the near-zero init, so every class tells
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 6, 16, 16)
    a, b = one_hot(maps(2, 16, seed=1), 4), one_hot(maps(2, 16, seed=2), 4)
    out_a, out_b = norm(x, a), norm(x, b)
    assert not torch.allclose(out_a, out_b)  # another map, another output
    # where the two maps agree (away from each conv's 1-px reach), modulation is the same
    same = (a == b).all(1, keepdim=True).float()
    same = -torch.nn.functional.max_pool2d(-same, 5, stride=1, padding=2)  # eroded by 2 px
    assert same.sum() > 0
    assert torch.allclose(out_a * same, out_b * same, atol=1e-5)
    # a constant map: the same gamma and beta at every pixel (inside the zero-padded border
    # of its two 3x3 convs), so the output is the normalised input scaled and shifted per
    # channel only
    constant = one_hot(torch.full((2, 1, 16, 16), 2, dtype=torch.uint8), 4)
    gamma, beta = norm.modulation(x, constant)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    for t in (gamma, beta):
        assert torch.allclose(t[inner], t[inner][:, :, :1, :1].expand_as(t[inner]), atol=1e-6)
        assert t.std() > 0  # and not trivially zero
    # the map is resized to the features (nearest): a 32-px map for 8-px features
    big = one_hot(maps(2, 32, seed=3), 4)
    small = torch.nn.functional.interpolate(big, size=(8, 8), mode="nearest")
    x8 = torch.randn(2, 6, 8, 8)
    assert torch.equal(norm(x8, big), norm(x8, small))


# --- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_generator_and_multiscale_discriminator_shapes(size):
    torch.manual_seed(0)
    nets = networks(size, g_features=2, d_features=4, spade_hidden=4)
    segmap = one_hot(maps(2, size), 4)
    image = nets.G(segmap)
    assert image.shape == (2, 3, size, size) and image.abs().max() <= 1
    blocks = [m for m in nets.G.modules() if isinstance(m, SpadeResBlock)]
    # the reference's 7 blocks, 16 16 16 8 4 2 1 x ngf; a learnt shortcut where width changes
    assert [b.conv_1.out_channels for b in blocks] == [32, 32, 32, 16, 8, 4, 2]
    assert [b.learned_shortcut for b in blocks] == [False] * 3 + [True] * 4
    assert nets.G.fc.in_channels == 4  # the start: the label map downsampled 32x, a conv
    scores = nets.D(torch.cat([segmap, image], 1))
    assert len(scores) == 2  # 2 scales
    for scale, features in enumerate(scores):
        assert len(features) == 5  # 4 conv layers and the score map
        side = size // 2**scale
        for _ in range(3):  # stride 2, 2, 2 (pad 2): s -> s // 2 + 1
            side = side // 2 + 1
        side += 1  # stride 1, pad 2, 4x4: +1
        assert features[-1].shape == (2, 1, side + 1, side + 1)
        assert features[0].shape[1] == 4 and features[3].shape[1] == 32
    # spectral norm on G's and D's convs, as the reference's norm_G and norm_D
    assert hasattr(blocks[0].conv_0, "weight_orig")
    assert hasattr(nets.D.scales[0].groups[1][0], "weight_orig")


@pytest.mark.parametrize("size", [48, 16])
def test_sizes_the_generator_cannot_take_are_refused(size):
    with pytest.raises(UserError, match="multiple of 32"):
        networks(size)


# --- the procedural label maps ---------------------------------------------------------------


def test_masks_are_deterministic_and_hold_every_class_at_any_size():
    a1, b1 = make_pairs(16, 32, 4, torch.Generator().manual_seed(5))
    a2, b2 = make_pairs(16, 32, 4, torch.Generator().manual_seed(5))
    a3, _ = make_pairs(16, 32, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    assert a1.shape == (16, 1, 32, 32) and a1.dtype == torch.uint8 and b1.shape == (16, 3, 32, 32)
    assert set(a1.unique().tolist()) == {0, 1, 2, 3}
    for size in (8, 48, 100):
        labels, images = make_pairs(4, size, 4, torch.Generator().manual_seed(0))
        assert labels.shape == (4, 1, size, size) and images.shape == (4, 3, size, size)


def test_one_shape_per_map_has_the_stated_area_and_colour():
    size, n = 64, 200
    labels, images = make_pairs(n, size, 1, torch.Generator().manual_seed(0))
    for labels_i in labels:
        assert len(labels_i.unique()) == 2  # background and one shape
    area = (labels > 0).flatten(1).sum(1).float()
    # radius 10-30% of the side: at most a whole circle of 0.3 x 64 px (plus edge pixels);
    # at least a corner of the smallest triangle
    assert area.max() <= math.pi * (0.3 * size) ** 2 * 1.1
    assert area.min() >= 1
    assert 0.05 < float(area.mean()) / size**2 < 0.3
    # each class its own colour: circles red, squares blue, triangles green, background light
    rgb = images.float()
    for k, channel in ((1, 0), (2, 2), (3, 1)):
        inside = (labels == k).expand_as(rgb)
        means = torch.stack([rgb[:, c][inside[:, c]].mean() for c in range(3)])
        assert int(means.argmax()) == channel, (CLASS_NAMES[k], means)
    background = rgb[(labels == 0).expand_as(rgb)].mean()
    assert background > 150
    # textured and jittered: the same class is not one flat colour
    assert rgb[:, 2][(labels == 2)[:, 0]].std() > 15


def test_overlapping_shapes_cover_the_earlier_ones():
    labels = maps(300, 32, max_shapes=4)
    shapes = torch.tensor([len(m.unique()) - int((m == 0).any()) for m in labels])
    assert shapes.max() == 3 and shapes.min() >= 1  # up to three shape classes per map
    assert float((labels > 0).float().mean()) < 0.8  # background remains


def test_the_masks_dataset_and_its_spec():
    from ganlab.data import build_dataset

    cfg = OmegaConf.structured(MasksDatasetConfig(image_size=16, n_samples=10, n_test=3))
    data = build_dataset(cfg, "unused", seed=3, heldout=True)
    assert data.spec.kind == "paired" and data.spec.num_classes == 4
    assert data.spec.class_names == CLASS_NAMES and data.spec.shape == (3, 16, 16)
    assert data.a.shape == (10, 1, 16, 16) and data.heldout.a.shape == (3, 1, 16, 16)
    again = build_dataset(cfg, "unused", seed=3, heldout=True)
    assert torch.equal(data.b, again.b) and torch.equal(data.heldout.b, again.heldout.b)
    assert not torch.equal(data.a[:3], data.heldout.a)


# --- label-map folders -----------------------------------------------------------------------


def label_picture(seed: int, size: int, classes: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (4, 4), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((size, size), Image.NEAREST))


def write_label_folders(root, n: int, size: int = 32, classes: int = 3) -> None:
    (root / "trainA").mkdir(parents=True)
    (root / "trainB").mkdir(parents=True)
    for i in range(n):
        labels = torch.from_numpy(label_picture(i, size, classes))[None]
        palette_png(labels, root / "trainA" / f"{i}.png")
        Image.fromarray(picture(i, size, size)).save(root / "trainB" / f"{i}.jpg")


def paired_cfg(name: str, **settings):
    from ganlab.data.paired import PairedDatasetConfig

    return OmegaConf.structured(PairedDatasetConfig(name=name, **settings))


def test_label_map_folders_are_read_as_class_indices(tmp_path):
    from ganlab.data import build_dataset

    write_label_folders(tmp_path / "labels", 10)
    cfg = paired_cfg("labels", image_size=16, load_size=16, label_classes=3, cache=False)
    data = build_dataset(cfg, tmp_path, seed=0, heldout=True)
    assert data.spec.num_classes == 3 and data.a.shape[1] == 1 and data.b.shape[1] == 3
    assert set(data.a.unique().tolist()) <= {0, 1, 2}
    # the held-out map (a fixed 10%) is the file's indices resized with nearest neighbours
    held = data.heldout.a
    assert held.shape == (1, 1, 16, 16)
    originals = [torch.from_numpy(label_picture(i, 32, 3))[None, None] for i in range(10)]
    expected = [torch.nn.functional.interpolate(o.float(), size=(16, 16)).to(torch.uint8)
                for o in originals]
    assert any(torch.equal(held, e) for e in expected)
    # aligned A|B: a gray label map on the left (R = G = B) beside the picture
    aligned = tmp_path / "aligned" / "train"
    aligned.mkdir(parents=True)
    for i in range(10):
        gray = np.repeat(label_picture(i, 32, 3)[:, :, None], 3, axis=2)
        Image.fromarray(np.concatenate([gray, picture(i, 32, 32)], 1)).save(aligned / f"{i}.png")
    data = build_dataset(paired_cfg("aligned", image_size=32, load_size=32, label_classes=3,
                                    cache=False), tmp_path, seed=0, heldout=True)
    assert data.a.shape == (9, 1, 32, 32) and data.b.shape == (9, 3, 32, 32)
    assert any(torch.equal(data.heldout.a, o) for o in originals)
    # BtoA: the label maps are the right halves
    for i in range(10):
        gray = label_picture(i, 32, 3)
        Image.fromarray(np.concatenate([picture(i, 32, 32)[:, :, 0], gray], 1)).save(
            aligned / f"{i}.png")
    data = build_dataset(paired_cfg("aligned", image_size=32, load_size=32, label_classes=3,
                                    direction="BtoA", channels=1, cache=False),
                         tmp_path, seed=0, heldout=True)
    assert any(torch.equal(data.heldout.a, o) for o in originals)


def test_bad_label_maps_are_refused(tmp_path):
    from ganlab.data import build_dataset

    write_label_folders(tmp_path / "k", 6, classes=3)
    with pytest.raises(UserError, match=r"6 label map\(s\) .* >= dataset.label_classes=2"):
        build_dataset(paired_cfg("k", image_size=16, label_classes=2, cache=False), tmp_path, 0)
    colour = tmp_path / "colour"
    write_label_folders(colour, 6)
    Image.fromarray(picture(9, 32, 32)).save(colour / "trainA" / "0.png")
    with pytest.raises(UserError, match="is a colour image; label maps"):
        build_dataset(paired_cfg("colour", image_size=16, label_classes=3, cache=False),
                      tmp_path, 0)


def test_colour_coded_maps_are_read_through_their_colour_table(tmp_path):
    from ganlab.data import build_dataset

    colours = [[0, 0, 0], [230, 30, 30], [30, 30, 230]]
    root = tmp_path / "coded"
    (root / "trainA").mkdir(parents=True)
    (root / "trainB").mkdir(parents=True)
    for i in range(10):
        labels = label_picture(i, 32, 3)
        rgb = np.array(colours, dtype=np.uint8)[labels]
        Image.fromarray(rgb).save(root / "trainA" / f"{i}.jpg", quality=85)  # JPEG noise
        Image.fromarray(picture(i, 32, 32)).save(root / "trainB" / f"{i}.png")
    cfg = paired_cfg("coded", image_size=32, load_size=32, label_classes=3, cache=False)
    cfg.label_colors = colours
    data = build_dataset(cfg, tmp_path, seed=0, heldout=True)
    originals = [torch.from_numpy(label_picture(i, 32, 3))[None, None] for i in range(10)]
    # the nearest colour undoes the JPEG noise, except maybe at a few block edges
    agree = max(float((data.heldout.a == o).float().mean()) for o in originals)
    assert agree > 0.99
    for table, fragment in (([[0, 0, 0], [1, 2, 3]], "has 2 colours and dataset.label_classes=3"),
                            ([[0, 0, 0], [0, 0, 0], [1, 1, 1]], "repeats a colour"),
                            ([[0, 0], [1, 1], [2, 2]], "one [R, G, B]")):
        cfg.label_colors = table
        with pytest.raises(UserError, match=re.escape(fragment)):
            build_dataset(cfg, tmp_path, seed=0)


# --- training end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SPADE trained 6 steps on 8 procedural 32-px maps (4 held out), with no VGG
    weights on disk (an empty torch hub dir)."""
    root = tmp_path_factory.mktemp("spade")
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch"))
        train_in_process([*SMALL, *MASKS, *RUN, f"hydra.run.dir={run}"], root)
    return root, run


def test_training_logs_the_losses_the_metrics_and_the_synthesis(trained):
    root, run = trained
    acc = read_events(run / "tb")
    for name in ("G_GAN", "G_feat", "D_real", "D_fake"):
        values = [e.value for e in acc.Scalars(f"loss/{name}")]
        assert len(values) == STEPS and all(np.isfinite(values)), name
    assert "loss/G_VGG" not in acc.Tags()["scalars"]
    for name in ("l1", "psnr", "ssim"):
        assert len(acc.Scalars(f"eval/{name}")) == 2, name
    assert "synthesis" in acc.Tags()["images"]
    # 4 held-out maps, a row each: map (in colour) | output | real image, 32 px
    image = Image.open(run / "samples" / f"step_{STEPS}_synthesis.png")
    assert image.size == (3 * 34 + 2, 4 * 34 + 2)
    grid = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    from ganlab import load_checkpoint
    from ganlab.data import build_dataset

    family = load_checkpoint(run)
    cfg = OmegaConf.structured(MasksDatasetConfig(image_size=32, n_samples=8, n_test=4))
    heldout = build_dataset(cfg, root, seed=0, heldout=True).heldout
    assert torch.equal(grid[:, 2:34, 2:34], colourize(heldout.a[:1])[0])
    assert torch.equal(grid[:, 2:34, 2 + 2 * 34 : 34 + 2 * 34], heldout.b[0])
    assert torch.equal(grid[:, 2:34, 2 + 34 : 34 + 34], family.translate(heldout.a, "AtoB")[0])
    metrics = json.loads((run / "metrics.json").read_text())
    expected = family.quality(family.translate(heldout.a, "AtoB"), heldout.b)
    for name in ("l1", "psnr", "ssim"):
        assert metrics[name] == pytest.approx(expected[name], rel=1e-5), name
    assert metrics["vgg_loss"].startswith("off (no VGG19 weights at")
    # the map decides the output: another map, another image
    other = heldout.a.flip(-1)
    assert not torch.equal(family.translate(other, "AtoB"), family.translate(heldout.a, "AtoB"))


def test_translate_reads_label_map_files(trained, capsys):
    from ganlab import load_checkpoint, translate

    root, run = trained
    source = root / "maps"
    source.mkdir()
    labels = maps(3, 32, seed=11)
    for i in range(3):
        palette_png(labels[i], source / f"m{i}.png")
    out, sheet = root / "synth", root / "sheet.png"
    translate.main([f"ckpt={run}", f"input={source}", f"out={out}", f"sheet={sheet}"])
    assert "wrote 3 AtoB translation(s) at 32 px" in capsys.readouterr().out
    family = load_checkpoint(run)
    written = torch.from_numpy(np.array(Image.open(out / "m0.png"))).permute(2, 0, 1)
    assert torch.equal(written, family.translate(labels, "AtoB")[0])
    shown = torch.from_numpy(np.array(Image.open(sheet))).permute(2, 0, 1)
    assert torch.equal(shown[:, 2:34, 2:34], colourize(labels[:1])[0])  # the map in colour
    with pytest.raises(UserError, match="AtoB only"):
        translate.main([f"ckpt={run}", f"input={source}", f"out={root / 'x'}",
                        "direction=BtoA"])
    with pytest.raises(UserError, match="multiple of 32"):
        translate.main([f"ckpt={run}", f"input={source}", f"out={root / 'x'}", "size=48"])
    with pytest.raises(UserError, match="knows 4 classes"):
        family.translate(torch.full((1, 1, 32, 32), 7, dtype=torch.uint8), "AtoB")


def test_resume_is_bit_exact(trained, tmp_path):
    root, straight = trained
    split = tmp_path / "split"
    shutil.copytree(straight, split)
    saves = split / "checkpoints"
    (saves / f"step_{STEPS}.pt").unlink()
    (saves / f"step_{STEPS // 2}.pt").replace(saves / "last.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch"))
        train_in_process([f"resume={split}"], root)
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert b["step"] == STEPS
    assert a.pop("config") == {**b.pop("config"), "resume": None}
    assert_states_equal(a, b)  # weights, spectral norm's vectors, BN statistics, optimizers
    assert json.loads((straight / "metrics.json").read_text())["l1"] == pytest.approx(
        json.loads((split / "metrics.json").read_text())["l1"], abs=0)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["dataset=mnist"], ("dataset=mnist has none", "dataset=masks", "dataset.label_classes")),
    (["dataset=paired", "dataset.name=x"], ("dataset=x has none",)),
    (["dataset.image_size=48"], ("multiple of 32",)),
    (["model=pix2pix", "dataset=masks"], ("holds label maps", "model=spade")),
    (["model=pix2pix", "dataset=paired", "dataset.name=x", "dataset.label_classes=3"],
     ("holds label maps",)),
    (["dataset=paired", "dataset.name=x", "dataset.label_colors=[[0,0,0]]"],
     ("dataset.label_colors is set without dataset.label_classes",)),
    (["dataset=paired", "dataset.name=x", "dataset.label_classes=2",
      "dataset.label_colors=[[0,0,0]]"], ("has 1 colours and dataset.label_classes=2",)),
])
def test_impossible_configs_are_refused_before_any_data_is_read(args, fragments):
    from ganlab.preflight import check_overrides

    with pytest.raises(UserError) as e:
        check_overrides(["model=spade", *args])
    for fragment in fragments:
        assert fragment in str(e.value)


def test_spade_without_a_label_map_exits_2_in_one_line(tmp_path, capsys):
    result = train_refused_in_process([*SMALL, "dataset=mnist", "trainer.max_steps=1",
                                       f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, capsys)
    assert_bad_input(result, "model=spade synthesises images from label maps")


def test_vgg_on_without_its_weights_is_refused(tmp_path, monkeypatch):
    from conftest import build_family

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = DataSpec("masks", "paired", (3, 32, 32), num_classes=4)
    with pytest.raises(UserError, match=r"model\.vgg=on: torchvision's VGG19 weights are not on"):
        build_family(SpadeConfig(g_features=2, d_features=4, spade_hidden=4, vgg="on"), spec,
                     MasksDatasetConfig(image_size=32))
    family = build_family(SpadeConfig(g_features=2, d_features=4, spade_hidden=4, vgg="off"),
                          spec, MasksDatasetConfig(image_size=32))
    assert family.vgg is None and family.vgg_note == "off (model.vgg=off)"


def test_the_vgg_loss_is_the_weighted_l1_of_five_relu_outputs_when_weights_are_on_disk(
        tmp_path, monkeypatch):
    """VGG19's 548 MB of weights stand in for a small network with VGG19's layer indices:
    the loss is lambda_vgg x sum_k w_k L1(phi_k(fake), phi_k(real)), the images normalised
    from [-1, 1] with ImageNet's statistics; G's step reports it as loss/G_VGG."""
    from conftest import build_family

    from ganlab import pretrained
    from ganlab.families.spade import VggLoss

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = pretrained.hub_weights_file("vgg19")
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 3, 3, padding=1) if i in (0, 5, 10, 19, 28)
              else torch.nn.Identity() for i in range(37)]
    fake_vgg = pretrained.Normalised(torch.nn.Module(), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    fake_vgg.network.features = torch.nn.Sequential(*layers)
    monkeypatch.setattr(pretrained, "torchvision_network",
                        lambda name, file, who: (fake_vgg, 3, 224))
    spec = DataSpec("masks", "paired", (3, 32, 32), num_classes=4)
    family = build_family(SpadeConfig(g_features=2, d_features=4, spade_hidden=4, vgg="on"),
                          spec, MasksDatasetConfig(image_size=32))
    assert family.vgg_note.startswith("on (VGG19 from ") and isinstance(family.vgg, VggLoss)

    fake, real = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    expected = 0.0
    f = ((fake + 1) / 2 - fake_vgg.mean) / fake_vgg.std
    r = ((real + 1) / 2 - fake_vgg.mean) / fake_vgg.std
    for (start, cut), w in zip([(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)],
                               [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0], strict=True):
        f, r = layers_apply(layers, start, cut, f), layers_apply(layers, start, cut, r)
        expected += w * (f - r).abs().mean()
    assert torch.allclose(family.vgg(fake, real), expected, atol=1e-6)
    labels = maps(2, 32)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert family.train_step((labels, images))["loss/G_VGG"] > 0


def layers_apply(layers, start, cut, x):
    for layer in layers[start:cut]:
        x = layer(x)
    return x
