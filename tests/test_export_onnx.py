"""The exported ONNX files: structure, metadata, and parity with PyTorch measured here (not with
the exporter's own metric), the verifier's refusals, and what a build prints."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import logging.handlers
import re
import sys

import numpy as np
import pytest

from tests.helpers.data import FBANKS

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
import onnxruntime as ort  # noqa: E402

from export.checkpoints import load_release  # noqa: E402
from runtime.models_folder import PIPELINES  # noqa: E402
from export.onnx_export import VerificationError, Verifier, export_steps  # noqa: E402
from export.progress import StepBar  # noqa: E402
from export.synthetic import PACK_STEPS  # noqa: E402
from tests.helpers.build_log import BUILD_LOG  # noqa: E402


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_files_checker_opset_and_dynamic_axes(models_dir):
    expected_io = {
        "encoder.onnx": ({"fbank": ["batch", 64, "frames"]}, {"embedding": ["batch", 64]}),
        "decoder_supervised.onnx": ({"embedding": ["batch", 64]},
                                    {"params": ["batch", 51], "vertices": ["batch", 53215, 3]}),
        "decoder_unsupervised.onnx": ({"embedding": ["batch", 64]}, {
            "image": ["batch", 3, 120, 120], "params": ["batch", 102], "pose_R": ["batch", 3, 3],
            "pose_offset": ["batch", 3], "vertices": ["batch", 53215, 3], "vertices_frontal": ["batch", 53215, 3]}),
    }
    for name, (inputs, outputs) in expected_io.items():
        model = onnx.load(str(models_dir / name))
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert {i.name: dims(i) for i in model.graph.input} == inputs
        assert {o.name: dims(o) for o in model.graph.output} == outputs
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["source"] == "synthetic" and meta["untrained"] == "true"
        assert meta["n_vertices"] == "53215"
        assert all(len(h) == 64 for h in json.loads(meta["source_files"]).values())


def test_fused_graph_io(models_dir):
    for pipeline, outputs in (("supervised", 3), ("unsupervised", 7)):
        model = onnx.load(str(models_dir / f"voice2mesh_{pipeline}.onnx"), load_external_data=False)
        assert {i.name: dims(i) for i in model.graph.input} == {"samples": ["batch", "num_samples"]}
        assert {"embedding", "params", "vertices"} <= {o.name for o in model.graph.output}
        assert len(model.graph.output) == outputs
        assert not {n.op_type for n in model.graph.node} & {"If", "Loop", "Scan"}
    triangles = np.load(models_dir / "triangles.npy")
    assert triangles.dtype == np.int32 and triangles.shape[1] == 3
    assert np.unique(triangles).size == 53215


def test_manifest_records_sources_and_verification(models_dir):
    manifest = json.loads((models_dir / "models.json").read_text())
    assert manifest["synthetic"] is True and "UNTRAINED" in manifest["warning"]
    assert manifest["pipelines"] == ["supervised", "unsupervised"]
    graphs = {"encoder.onnx", "decoder_supervised.onnx", "decoder_unsupervised.onnx", "frontend.onnx",
              "voice2mesh_supervised.onnx", "voice2mesh_unsupervised.onnx"}
    assert set(manifest["files"]) == graphs | {"triangles.npy"}
    assert manifest["format"] == 2
    for name, record in manifest["files"].items():
        data = (models_dir / name).read_bytes()
        assert record == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "mtime_ns": (models_dir / name).stat().st_mtime_ns}, name
    checks = manifest["verification"]["checks"]
    assert {c["model"] for c in checks} == graphs
    for c in checks:
        assert c["max_rel"] <= 1e-4 or c["max_rel"] <= 2 * c["float32_floor"], c


def max_rel(got: np.ndarray, want: np.ndarray) -> float:
    """The largest error relative to the reference's largest magnitude, in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def agreement(session, module, x: torch.Tensor, names: tuple[str, ...]) -> list[tuple[str, float, float]]:
    """(output, ONNX Runtime vs PyTorch float32, PyTorch float32 vs PyTorch float64) per output."""
    got = session.run(list(names), {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = module(x)
        exact = copy.deepcopy(module).double()(x.double())
    want = want if isinstance(want, tuple) else (want,)
    exact = exact if isinstance(exact, tuple) else (exact,)
    return [(n, max_rel(a, b.numpy()), max_rel(b.numpy(), c.numpy())) for n, a, b, c in zip(names, got, want, exact)]


@pytest.mark.slow
def test_onnx_reproduces_pytorch(models_dir, pack_dir):
    """ONNX Runtime and PyTorch run the same float32 operations in different orders, so each is
    about PyTorch's own float32 error (its "floor", measured here against float64) from the exact
    result and they differ by up to about twice that. Encoder and supervised decoder: floors of
    1e-7..4e-7 (README), so 1e-5 leaves a wide margin while any wrong operation (an epsilon, a
    padding, a constant) costs 1e-3 or more. Unsupervised decoder: its untrained MobileNets
    amplify rounding, floors up to ~6e-5 on params and pose_R, so 1e-4 or twice the floor."""
    loaded = {p: load_release(pack_dir, p) for p in PIPELINES}
    cpu = ["CPUExecutionProvider"]
    encoder = ort.InferenceSession(str(models_dir / "encoder.onnx"), providers=cpu)
    g = torch.Generator().manual_seed(123)
    fbanks = [torch.randn(2, 64, 1000, generator=g), torch.randn(1, 64, 317, generator=g)]
    fbanks += [torch.from_numpy(np.load(p).T[None].astype(np.float32)) for p in FBANKS]
    for x in fbanks:
        [(_, err, floor)] = agreement(encoder, loaded["supervised"].encoder, x, ("embedding",))
        assert err <= 1e-5, (x.shape, err, floor)
    with torch.no_grad():
        embeddings = torch.cat([loaded["supervised"].encoder(x) for x in fbanks])
    random_unit = torch.nn.functional.normalize(torch.randn(4, 64, generator=g), dim=1)
    names = {"supervised": ("params", "vertices"),
             "unsupervised": ("image", "params", "pose_R", "pose_offset", "vertices", "vertices_frontal")}
    for pipeline in PIPELINES:
        session = ort.InferenceSession(str(models_dir / f"decoder_{pipeline}.onnx"), providers=cpu)
        for x in (random_unit, embeddings):
            for name, err, floor in agreement(session, loaded[pipeline].decoder, x, names[pipeline]):
                tolerance = 1e-5 if pipeline == "supervised" else max(1e-4, 2 * floor)
                assert err <= tolerance, (pipeline, name, err, floor)


def test_verifier_refuses_what_is_off_and_says_which_rule_passed():
    verifier = Verifier(1e-4, lambda message: None)
    want = np.linspace(-2, 2, 101, dtype=np.float32)
    verifier.record("m.onnx", "case", "out", want.copy(), want)
    with pytest.raises(VerificationError) as err:
        verifier.record("m.onnx", "case", "out", want + np.float32(1e-3), want)
    assert str(err.value) == ("m.onnx:out differs from the reference on case: max relative error 5.000e-04 > "
                              "tolerance 1e-04")
    with pytest.raises(VerificationError):  # twice the float32 floor is the limit
        verifier.record("m.onnx", "case", "out", want + np.float32(1e-3), want, floor=2.4e-4)
    verifier.record("m.onnx", "other", "out", want + np.float32(1e-3), want, floor=2.6e-4)
    with pytest.raises(VerificationError) as err:
        verifier.record("m.onnx", "case", "out", want[:50], want)
    assert str(err.value) == "m.onnx:out on case: shape (50,) vs reference (101,)"
    assert [c.passed_by for c in verifier.checks] == ["tolerance", "float32 floor"]
    assert verifier.summary() == (
        "verified 2 outputs against their references: 1 within the tolerance 1e-04 (largest error 0.00e+00), "
        "1 within twice PyTorch's own float32 error (largest 5.00e-04 against a float32 floor of 2.60e-04, "
        "m.onnx out)")


def test_build_messages(models_dir):
    if not BUILD_LOG:
        pytest.skip("the models were not built in this session")
    assert not [m for m in BUILD_LOG if ".partial-" in m]
    assert BUILD_LOG[0] == f"building the synthetic (UNTRAINED) models once into {models_dir.parent}"
    assert BUILD_LOG[-2:] == [f"wrote {models_dir}", f"models cached in {models_dir}"]
    assert re.fullmatch(r"verified \d+ outputs against their references: \d+ within the tolerance 1e-04 "
                        r"\(largest error \d\.\d\de-\d\d\)(, \d+ within twice PyTorch's own float32 error "
                        r"\(largest \S+ against a float32 floor of \S+, \S+ \S+\))?", BUILD_LOG[-3])
    # The progress bar's total is the number of steps the build announces.
    assert len(BUILD_LOG.steps) == PACK_STEPS + export_steps(PIPELINES)


def test_export_prints_no_torchvision_notes(tmp_path):
    """torch.onnx logs "torchvision is not installed. Skipping torchvision::nms" (and 3 more) per
    export through its own handler; a handler on the same logger sees what passes its filters."""
    from export.onnx_export import _export

    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    seen = logging.handlers.BufferingHandler(1000)
    logger.addHandler(seen)
    try:
        _export(torch.nn.Linear(3, 2).eval(), torch.randn(2, 3), tmp_path / "linear.onnx", "x", ("y",),
                {0: torch.export.Dim("batch", min=1, max=8)}, {})
    finally:
        logger.removeHandler(seen)
    assert (tmp_path / "linear.onnx").is_file()
    assert not [r for r in seen.buffer if "torchvision" in r.getMessage()]


def test_step_bar_draws_on_a_terminal_and_keeps_the_messages(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    messages: list[str] = []
    with StepBar(3, messages.append, rewrite=lambda m: m.replace("/tmp/x.partial-1", "/tmp/x")) as bar:
        bar.step("one /tmp/x.partial-1")
        bar("detail")
        bar.step("two")
        bar.step("three")
    assert messages == ["one /tmp/x", "detail", "two", "three"]
    assert "2/3 steps" in terminal.getvalue()


def test_export_help_names_the_command(capsys):
    from runtime.cli import main

    with pytest.raises(SystemExit) as done:
        main(["export", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cmp-face export [-h] [--debug] (--release DIR | --synthetic) -o MODELS")
    assert "to_onnx" not in out


@pytest.mark.slow
def test_ctrl_c_inside_torch_onnx_ends_as_interrupted_and_leaves_the_folder_as_it_was(tmp_path, monkeypatch, capsys):
    """torch.onnx wraps what stops it in its own error (a Ctrl-C once arrived as the AttributeError of a
    half-imported module, with colour codes): a SIGINT during the export still ends as 'interrupted',
    exit 130, and the output folder is as it was (not made when new; its files untouched)."""
    import os
    import signal
    import time

    from runtime.cli import main

    def interrupted_export(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("\x1b[31mFailed to export\x1b[0m: module 'torch._dynamo' has no attribute 'exc'") \
                from AttributeError("torch._dynamo")
        raise AssertionError("no SIGINT arrived")

    monkeypatch.setattr(torch.onnx, "export", interrupted_export)
    out = tmp_path / "models"
    assert main(["export", "--synthetic", "-o", str(out)]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "cmp-face: interrupted"
    assert not out.exists()
    out.mkdir()
    (out / "models.json").write_text("an earlier export's manifest")
    assert main(["export", "--synthetic", "-o", str(out)]) == 130
    assert [p.name for p in out.iterdir()] == ["models.json"]
    assert (out / "models.json").read_text() == "an earlier export's manifest"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back
