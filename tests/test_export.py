"""`python -m ganlab export`: one network of a trained run as an ONNX file or a torch.export
program, with a dynamic batch. The tiny checkpoints of tests/fixtures/old_runs are exported
in-process, loaded back (onnxruntime, torch.export.load), run at another batch size than the
one traced, and compared with the family's own output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, run_in_process

from ganlab import export
from ganlab.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

OLD_RUNS = Path(__file__).parent / "fixtures" / "old_runs"
BATCH = 5  # run at this batch size; export traces EXAMPLE_BATCH
TOLERANCE = 1e-4

# (run, net= or None for the default, the net that is exported)
CASES = [
    ("dcgan_tools", None, "G"),  # with model.ema: G is the moving average
    ("cgan", None, "G"),
    ("vae", None, "decoder"),
    ("vae", "encoder", "encoder"),
    ("lenet_fgsm", None, "model"),
    ("cyclegan", None, "G_AB"),
    ("cyclegan", "G_BA", "G_BA"),
]


def inputs_and_reference(family, net: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs of BATCH examples by name, and what the family itself computes from them."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, *family.spec.shape, generator=g)
    with torch.no_grad():
        if net == "G":
            z = torch.randn(BATCH, family.latent_dim, generator=g)
            if getattr(family, "num_classes", 0):
                labels = torch.arange(BATCH) % family.num_classes
                return {"z": z, "labels": labels}, family.generate(z, labels)
            return {"z": z}, family.generate(z)
        if net == "decoder":
            z = torch.randn(BATCH, family.latent_dim, generator=g)
            return {"z": z}, family.decode(z)
        if net == "encoder":
            return {"images": images}, family.encode(images)
        if net == "model":
            return {"images": images}, family.model(images)
        images = images * 2 - 1  # CycleGAN's generators take [-1, 1]
        return {"images": images}, getattr(family, net)(images)


def run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    assert all(isinstance(i.shape[0], str) for i in session.get_inputs())  # a symbolic batch
    (out,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    return torch.from_numpy(np.asarray(out))


def run_pt2(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    program = torch.export.load(path)
    with torch.no_grad():
        return program.module()(*inputs.values())


@pytest.mark.parametrize(("run", "net", "exported", "fmt"), [
    (*case, fmt) for case in CASES for fmt in ("onnx", "torch_export")
    if case[2] != "G_BA" or fmt == "torch_export"])  # G_BA: G_AB's code (ONNX: ~3 s)
def test_a_network_exports_and_runs_at_another_batch_size(run, net, exported, fmt, tmp_path,
                                                          capsys):
    out = tmp_path / f"{run}.{'onnx' if fmt == 'onnx' else 'pt2'}"
    args = [f"ckpt={OLD_RUNS / run}", f"format={fmt}", f"out={out}"]
    export.main(args + ([f"net={net}"] if net else []))
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {exported} of ") and str(out) in printed, printed
    assert fmt in printed and "[N, " in printed
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left

    family = load_checkpoint(OLD_RUNS / run)
    inputs, expected = inputs_and_reference(family, exported)
    got = run_onnx(out, inputs) if fmt == "onnx" else run_pt2(out, inputs)
    assert got.shape == expected.shape and got.shape[0] == BATCH != export.EXAMPLE_BATCH
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_progan_exports_its_generator_at_the_current_stage_and_fade_in(tmp_path, capsys,
                                                                       monkeypatch):
    import ganlab.checkpoint

    family = load_checkpoint(OLD_RUNS / "progan")
    # as if saved halfway through the fade-in of the 8 px stage (updates 5 of 8: stage 1
    # runs from update 4, fading in over half of its 4 updates)
    family.load_extra_state({**family.extra_state(), "updates": 5, "run_length": 8})
    assert (family.stage, family.alpha) == (1, 0.5)
    monkeypatch.setattr(ganlab.checkpoint, "load_checkpoint", lambda *a, **k: family)
    out = tmp_path / "g.onnx"
    export.main([f"ckpt={OLD_RUNS / 'progan'}", f"out={out}"])  # format from the extension
    assert "at 8 px (stage 1, alpha 0.5)" in capsys.readouterr().out
    inputs, expected = inputs_and_reference(family, "G")
    got = run_onnx(out, inputs)
    assert got.shape == (BATCH, 1, 8, 8)
    assert (got - expected).abs().max().item() <= TOLERANCE
    family.G.set_progress(1, 1.0)  # the faded-in network computes something else
    with torch.no_grad():
        assert (family.G(inputs["z"]) - got).abs().max().item() > 1e-3


def test_each_family_has_its_networks():
    names = {run: list(export.exportable(load_checkpoint(OLD_RUNS / run)))
             for run in ("dcgan_wgan_gp", "progan", "vae", "lenet_fgsm", "cyclegan")}
    assert names == {"dcgan_wgan_gp": ["G"], "progan": ["G"], "vae": ["decoder", "encoder"],
                     "lenet_fgsm": ["model"], "cyclegan": ["G_AB", "G_BA"]}


def test_the_families_without_an_old_run_trace_with_a_dynamic_batch():
    """mlp_gan (images and 2-D points), softmax and mlp classifiers (their standardisation
    inside), a plain autoencoder: traced as export traces them, run at batch 1 and 3."""
    from conftest import build_family, gan_family

    from ganlab.data.base import DataSpec
    from ganlab.families.autoencoder import AutoencoderConfig
    from ganlab.families.classifier import MlpClassifierConfig, SoftmaxConfig

    ring = DataSpec("ring", "points", (2,), modes=[(0.0, 1.0)], mode_std=0.1)
    families = {"mlp_gan": gan_family(g_hidden=[8], d_hidden=[8]),
                "mlp_gan_points": gan_family(spec=ring, g_hidden=[8], d_hidden=[8]),
                "softmax": build_family(SoftmaxConfig(input_mean=0.1307, input_std=0.3081)),
                "mlp": build_family(MlpClassifierConfig(hidden=[8])),
                "ae": build_family(AutoencoderConfig(hidden=[8]))}
    expected = {"mlp_gan": {"G": "in [0, 1] (sigmoid)"}, "mlp_gan_points": {"G": ""},
                "softmax": {"model": "over 10 classes (unnormalised)"},
                "mlp": {"model": "over 10 classes (unnormalised)"},
                "ae": {"decoder": "in [0, 1] (sigmoid of the decoder's logits)",
                       "encoder": "the code"}}
    for name, family in families.items():
        family.eval()
        nets = export.exportable(family)
        assert {k: v.values for k, v in nets.items()} == expected[name]
        for net in nets.values():
            program = export.trace(net).module()
            for n in (1, 3):
                x = [i.example(n) for i in net.inputs]
                with torch.no_grad():
                    difference = (program(*x) - net.module(*x)).abs().max().item()
                assert difference <= TOLERANCE, (name, n)


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
def test_one_way_translators_export_g_with_the_input_it_takes(fmt, tmp_path):
    """pix2pix (the task's input), SRGAN (the low-resolution image), SPADE (the one-hot
    label map): G written in evaluation mode, the file computing what G computes."""
    from conftest import build_family

    from ganlab.config import SyntheticDatasetConfig
    from ganlab.data.base import DataSpec
    from ganlab.data.masks import MasksDatasetConfig
    from ganlab.families.pix2pix import Pix2pixConfig
    from ganlab.families.spade import SpadeConfig
    from ganlab.families.srgan import SrganConfig

    families = {
        "pix2pix": build_family(Pix2pixConfig(task="inpaint", g_features=4, d_features=4,
                                              d_layers=2),
                                DataSpec("digits", "image", (1, 16, 16))),
        "srgan": build_family(SrganConfig(blocks=1, g_features=4, d_features=4, scale=2),
                              DataSpec("digits", "image", (1, 16, 16)),
                              SyntheticDatasetConfig(image_size=16)),
        "spade": build_family(SpadeConfig(g_features=2, d_features=4, spade_hidden=4,
                                          vgg="off"),
                              DataSpec("masks", "paired", (3, 32, 32), num_classes=4),
                              MasksDatasetConfig(image_size=32)),
    }
    shapes = {"pix2pix": (1, 16, 16), "srgan": (1, 8, 8), "spade": (4, 32, 32)}
    for name, family in families.items():
        family.eval()
        nets = export.exportable(family)
        assert list(nets) == ["G"], name
        (given,) = nets["G"].inputs
        assert given.shape == shapes[name], name
        x = given.example(BATCH) * 2 - 1
        if name == "spade":  # one-hot maps
            x = torch.nn.functional.one_hot(torch.randint(0, 4, (BATCH, 32, 32)), 4)
            x = x.permute(0, 3, 1, 2).float()
        path = tmp_path / f"{name}{export.FORMATS[fmt]}"
        export.write(nets["G"], export.trace(nets["G"]), fmt, path)
        got = (run_onnx if fmt == "onnx" else run_pt2)(path, {"inputs": x})
        with torch.no_grad():
            expected = family.G.eval()(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= TOLERANCE, name


# --- bad input: one error line, exit code 2, an existing `out` untouched ---------------------

PRECIOUS = b"an earlier export"


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    out = tmp_path / "model.onnx"
    out.write_bytes(PRECIOUS)
    return out


def assert_untouched(out: Path) -> None:
    assert out.read_bytes() == PRECIOUS
    assert [p.name for p in out.parent.iterdir() if p.name != "bad.pt"] == [out.name]


@pytest.mark.parametrize(("args", "fragments"), [
    (["format=tflite"], ["format=tflite is not one of: onnx, torch_export"]),
    (["net=D"], ["net=D is not a network of this dcgan (gan) checkpoint",
                 "choose one of: G"]),
    (["colour=red"], ["Key 'colour' not in", "(keys: ckpt, out, format, net)"]),
    (["ckpt=/no/such/run"], ["/no/such/run does not exist"]),
    (["ckpt=BAD"], ["bad.pt is not a ganlab checkpoint"]),
    (["format=torch_export", "net=G_AB"], ["choose one of: G"]),
])
def test_bad_input_is_one_line_and_leaves_out_as_it_was(args, fragments, existing, capsys):
    bad = existing.parent / "bad.pt"
    bad.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    given = {a.split("=", 1)[0]: a for a in args}
    if given.get("ckpt") == "ckpt=BAD":
        given["ckpt"] = f"ckpt={bad}"
    base = {"ckpt": f"ckpt={OLD_RUNS / 'dcgan_tools'}", "out": f"out={existing}"}
    result = run_in_process(["export", *{**base, **given}.values()], capsys)
    assert_bad_input(result, *fragments)
    assert_untouched(existing)


def test_a_vae_names_its_networks(existing, capsys):
    result = run_in_process(["export", f"ckpt={OLD_RUNS / 'vae'}", "net=G",
                             f"out={existing}"], capsys)
    assert_bad_input(result, "vae (vae) checkpoint", "choose one of: decoder, encoder")
    assert_untouched(existing)


def test_out_needs_a_format(tmp_path, capsys):
    result = run_in_process(["export", f"ckpt={OLD_RUNS / 'vae'}",
                             f"out={tmp_path / 'model.bin'}"], capsys)
    assert_bad_input(result, "give format=onnx or format=torch_export")
    assert not list(tmp_path.iterdir())
    result = run_in_process(["export", f"ckpt={OLD_RUNS / 'vae'}", f"out={tmp_path}"], capsys)
    assert_bad_input(result, "is a folder; give a file name")


def test_a_failed_export_leaves_out_and_no_temporary_file(existing, monkeypatch):
    def crash(net, program, fmt, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("the exporter crashed")

    monkeypatch.setattr(export, "write", crash)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export.main([f"ckpt={OLD_RUNS / 'lenet_fgsm'}", f"out={existing}"])
    assert_untouched(existing)


def test_export_is_a_command(capsys):
    from ganlab.__main__ import COMMANDS, main

    main(["--help"])
    assert "export" in COMMANDS and "  export " in capsys.readouterr().out
