"""The FP16 pass (calibration.fp16): conversion, islands, bars, files and models.json."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration import graph as G
from calibration import inputs as I
from calibration.fp16 import (FP16_MAX, HAZARD_3DMM, convert, emulate, fp16_graph, hazard_islands, precision_of,
                              range_islands, write_fp16)
from calibration.quality import Verdict, min_cosine, relative_error
from tests.helpers.data import DATA, FBANKS, WAVS, requires
from tests.helpers.folders import supervised_folder

ROOT = Path(__file__).resolve().parents[1]


def _model(nodes, inits, inputs=("x",), outputs=("y",), shape=(2, 4)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(i, TensorProto.FLOAT, list(shape)) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(shape)) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _types(model: onnx.ModelProto) -> dict[str, int]:
    return G.tensor_types(model)


def test_convert_types_casts_and_outputs():
    # y = relu(x @ w) * big ; "big" (> FP16 max) keeps its Mul in FP32; h is also an output.
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                    helper.make_node("Relu", ["h"], ["r"], name="relu"),
                    helper.make_node("Mul", ["r", "big"], ["y"], name="mul")],
                   {"w": np.eye(4) * 0.5, "big": np.full(4, 1e5)}, outputs=("y", "h"))
    islands = range_islands(model, {}, _types(model))
    assert islands == {"mul": "weight big reaches 1e+05 (> FP16 max 65504)"}
    m16 = convert(model, islands)
    onnx.checker.check_model(m16, full_check=True)
    types = _types(m16)
    weights = {t.name: t.data_type for t in m16.graph.initializer}
    assert weights == {"w__fp16": TensorProto.FLOAT16, "big": TensorProto.FLOAT}  # FP32 copy of w dropped
    assert types["r"] == TensorProto.FLOAT16 and types["h_fp16"] == TensorProto.FLOAT16
    # Graph I/O stay FP32: a drop-in for the FP32 model.
    assert [(v.name, v.type.tensor_type.elem_type) for v in m16.graph.input] == [("x", TensorProto.FLOAT)]
    assert {(v.name, v.type.tensor_type.elem_type) for v in m16.graph.output} == {
        ("y", TensorProto.FLOAT), ("h", TensorProto.FLOAT)}
    casts = [(n.input[0], n.output[0], n.attribute[0].i) for n in m16.graph.node if n.op_type == "Cast"]
    assert ("x", "x__fp16", TensorProto.FLOAT16) in casts          # into the FP16 region
    assert ("h_fp16", "h", TensorProto.FLOAT) in casts             # FP16 output back to FP32
    assert ("r", "r__fp32", TensorProto.FLOAT) in casts            # into the FP32 island
    assert precision_of(m16) == {"fp16": 2, "fp32": 1}
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    y16, h16 = G.session(m16).run(["y", "h"], {"x": x})
    y32, h32 = G.session(model).run(["y", "h"], {"x": x})
    assert y16.dtype == np.float32 and h16.dtype == np.float32
    # FP16 storage rounding: relative error within FP16's 2**-11 per rounding (2 roundings here).
    assert relative_error(y16, y32) <= 2 * 2.0 ** -11 and relative_error(h16, h32) <= 2 * 2.0 ** -11


def test_range_islands_overflow_and_subnormal():
    model = _model([helper.make_node("Mul", ["x", "s"], ["a"], name="scale"),
                    helper.make_node("Mul", ["a", "tiny"], ["y"], name="shrink")],
                   {"s": np.full(4, 3000.0), "tiny": np.full(4, 1e-6)})
    ranges = G.measure_ranges(model, [{"x": np.ones((2, 4), np.float32)}])
    assert ranges["a"].amax == pytest.approx(3000.0) and ranges["y"].amax == pytest.approx(3e-3)
    islands = range_islands(model, ranges, _types(model), data_max=2048)
    assert islands["scale"] == "a reaches 3e+03 (> 2048)"
    assert islands["shrink"].startswith("a reaches 3e+03")  # its input overflows the limit as well
    islands = range_islands(model, ranges, _types(model), data_max=FP16_MAX)
    assert islands == {"shrink": "weight tiny is at most 1e-06 (subnormal in FP16)"}


def test_hazard_islands_are_everything_after_the_heads():
    model = _model([helper.make_node("Gemm", ["x", "w", "b"], ["params"], name="head", transB=1),
                    helper.make_node("Mul", ["params", "std"], ["p"], name="dewhiten"),
                    helper.make_node("MatMul", ["p", "basis"], ["vertices"], name="recon")],
                   {"w": np.eye(4), "b": np.zeros(4), "std": np.ones(4), "basis": np.eye(4)},
                   outputs=("params", "vertices"))
    assert hazard_islands(model) == {"dewhiten": HAZARD_3DMM, "recon": HAZARD_3DMM}
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    renamed.graph.output[1].name = renamed.graph.node[2].output[0] = "mesh"
    assert hazard_islands(renamed) == {}  # not a decoder: no 3DMM tail


def test_bisection_keeps_the_node_that_breaks_the_bar_in_fp32():
    # (x + 1000) - 1000 loses x's precision in FP16 (spacing 0.5 at 1000); the rest is harmless.
    model = _model([helper.make_node("Add", ["x", "k"], ["a"], name="add"),
                    helper.make_node("Sub", ["a", "k"], ["b"], name="sub"),
                    helper.make_node("Mul", ["b", "two"], ["c"], name="mul"),
                    helper.make_node("Relu", ["c"], ["y"], name="relu")],
                   {"k": np.full(4, 1000.0), "two": np.full(4, 2.0)})
    feeds = [{"x": np.linspace(0.1, 1.0, 8, dtype=np.float32).reshape(2, 4)}]
    want = G.session(model).run(None, feeds[0])[0]

    def verdict(m16):
        return Verdict("toy", "params", relative_error(G.session(m16).run(None, feeds[0])[0], want), 1e-3, "toy")

    messages = []
    result = fp16_graph("toy", model, feeds, verdict, progress=messages.append)
    assert result.verdict.ok and result.verdict.value <= 1e-3
    assert set(result.islands) == {"add", "sub"}
    assert result.islands["add"] == "measured: FP16 breaks the bar; FP16 kept for the last 2 nodes"
    assert precision_of(result.model) == {"fp16": 2, "fp32": 2}
    assert any("FAILS the bar" in m for m in messages)  # the all-FP16 attempt was measured and failed


def test_emulation_shows_the_rounding_onnxruntime_cpu_hides():
    model = _model([helper.make_node("Add", ["x", "k"], ["a"], name="add"),
                    helper.make_node("Sub", ["a", "k"], ["y"], name="sub")], {"k": np.full(4, 1000.0)})
    x = np.full((2, 4), 0.3, np.float32)
    m16 = convert(model, set())
    # ORT's CPU provider computes both FP16 nodes in FP32 and drops the casts between them ...
    assert G.session(m16).run(None, {"x": x})[0] == pytest.approx(x, abs=1e-3)
    # ... FP16 storage of a (1000.3 -> 1000.5, spacing 0.5 there) leaves 0.5, as a GPU computes it.
    emulated = emulate(m16)
    assert all(t.data_type == TensorProto.FLOAT for t in emulated.graph.initializer)
    assert np.array_equal(G.session(emulated).run(None, {"x": x})[0], np.full((2, 4), 0.5, np.float32))


def test_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import calibration.cli, calibration.fp16, calibration.graph, calibration.inputs, "
            "calibration.quality, calibration.int8, calibration.report, calibration.stats, "
            "runtime.frontend_graph\n"
            "import onnxruntime.quantization.qdq_quantizer\n"
            "assert 'torch' not in {m for m in sys.modules if sys.modules[m] is not None}\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_missing_models_folder(tmp_path, capsys):
    from calibration.cli import main

    assert main(["--models", str(tmp_path / "nope"), "--fbanks", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"python -m calibration: error: {tmp_path}: no .npy files found\n"
    # The same command under its CLI name
    from runtime.cli import main as cmp_face

    assert cmp_face(["calibrate", "--models", str(tmp_path / "nope"), "--fbanks", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"cmp-face calibrate: error: {tmp_path}: no .npy files found\n"
    (tmp_path / "a.npy").write_bytes(b"")
    np.save(tmp_path / "a.npy", np.zeros((10, 64), np.float32))
    assert main(["--models", str(tmp_path / "nope"), "--fbanks", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"python -m calibration: error: {tmp_path / 'nope'}: models folder not found\n"


def test_select_is_deterministic_and_spread():
    utts = [I.Utterance(f"u{i}", np.full((100 + 10 * i, 64), i, np.float32)) for i in range(9)]
    picked = I.select(I.InputSet("toy", utts), 3)
    assert [u.name for u in picked.utterances] == ["u0", "u4", "u8"]  # shortest, middle, longest
    shuffled = I.InputSet("toy", utts[::-1])
    assert [u.name for u in I.select(shuffled, 3).utterances] == ["u0", "u4", "u8"]


@requires(FBANKS, "fbank_preprocessed")
@requires(WAVS, "voxceleb_wav")
def test_fp16_models_meet_the_bars_on_held_out_speech(models_dir, tmp_path):
    folder = supervised_folder(models_dir, tmp_path)
    chosen = I.select(I.from_fbanks(DATA / "fbank_preprocessed"), 4)
    log: list[str] = []
    entry = write_fp16(folder, chosen, progress=log.append)

    # Files: checker, CPU provider, FP32 I/O, FP16 weights where the manifest says FP16.
    manifest = json.loads((folder / "models.json").read_text())
    assert manifest["precisions"]["fp16"] == json.loads(json.dumps(entry))
    for graph in ("encoder", "decoder_supervised", "voice2mesh_supervised"):
        path = folder / f"{graph}_fp16.onnx"
        assert f"{graph}_fp16.onnx" in manifest["files"]
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in list(model.graph.input)
                   + list(model.graph.output))
    encoder = onnx.load(str(folder / "encoder_fp16.onnx"))
    conv_weights = {n.input[1] for n in encoder.graph.node if n.op_type == "Conv"}
    assert conv_weights and all(t.data_type == TensorProto.FLOAT16 for t in encoder.graph.initializer
                                if t.name in conv_weights)
    dec = entry["graphs"]["decoder_supervised"]
    assert all(reason == HAZARD_3DMM for reason in dec["islands"].values())
    decoder = onnx.load(str(folder / "decoder_supervised_fp16.onnx"))
    types = G.tensor_types(decoder)
    for node in decoder.graph.node:  # nodes in the islands compute in FP32, the heads in FP16
        kinds = {types[x] for x in list(node.input) + list(node.output) if x}
        if node.name in dec["islands"]:
            assert kinds <= {TensorProto.FLOAT, TensorProto.INT64}, node.name
        elif node.op_type == "Gemm":
            assert kinds == {TensorProto.FLOAT16}, node.name
    assert entry["ranges_from"] == chosen.source
    assert entry["graphs"]["encoder"]["ranges"]["embedding"][1] <= 1.0
    assert entry["graphs"]["frontend"]["islands"] == "all"
    assert any(line.startswith("    spec_sq") for line in log)  # ranges printed in the log

    # The bars on speech never used to choose the islands: the real recordings, with the FP16
    # files' rounding emulated (ORT's CPU provider alone would hide part of it).
    held_out = I.from_audio(DATA / "voxceleb_wav")
    e32 = G.session(onnx.load(str(folder / "encoder.onnx")))
    e16 = G.session(emulate(onnx.load(str(folder / "encoder_fp16.onnx"))))
    emb32 = np.concatenate([e32.run(None, u.encoder_feed())[0] for u in held_out.utterances])
    emb16 = np.concatenate([e16.run(None, u.encoder_feed())[0] for u in held_out.utterances])
    assert min_cosine(emb16, emb32) >= 0.9999
    d32 = G.session(onnx.load(str(folder / "decoder_supervised.onnx")))
    d16 = G.session(emulate(onnx.load(str(folder / "decoder_supervised_fp16.onnx"))))
    p32, v32 = d32.run(["params", "vertices"], {"embedding": emb32})
    p16, v16 = d16.run(["params", "vertices"], {"embedding": emb32})
    assert relative_error(p16, p32) <= 1e-3
    assert relative_error(v16, v32) <= 1e-3  # vertices follow: the 3DMM arithmetic is FP32


def test_audio_folder_without_speech(tmp_path):
    import wave

    from runtime.errors import InputError, NoSpeechError

    rng = np.random.default_rng(0)
    for name, x in (("zeros.wav", np.zeros(16000, np.int16)), ("hiss.wav", (rng.standard_normal(16000) * 3).astype(np.int16))):
        with wave.open(str(tmp_path / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(x.tobytes())
    notes = []
    with pytest.raises(NoSpeechError, match=f"^{tmp_path}: none of its 2 audio files contains speech$"):
        I.from_audio(tmp_path, notes.append)
    assert notes == ["  skipped hiss.wav: no speech found", "  skipped zeros.wav: no speech found"]
    with pytest.raises(InputError, match="^the selection needs at least 1 utterance, got 0$"):
        I.select(I.InputSet("toy", []), 0)
    with pytest.raises(InputError, match="^give --audio or --fbanks, not both$"):
        I.load(tmp_path, tmp_path)


def test_export_precision_fp16_writes_the_fp16_models_after_the_export(tmp_path, monkeypatch, capsys):
    """'cmp-face export ... --precision fp32,fp16' = the export, then the FP16 pass on its output
    (the pass itself is tested above; here: the wiring, and what the option accepts)."""
    pytest.importorskip("torch")
    from calibration import fp16
    from export import to_onnx
    from runtime.cli.shell import command_parser

    parser = command_parser(to_onnx.COMMAND, "cmp-face export")
    calls = []
    monkeypatch.setattr(to_onnx, "_export", lambda args: {"files": {}, "exported_to": str(args.output)})
    monkeypatch.setattr(fp16, "write_fp16", lambda models, data: calls.append((models, data.source)) or {"graphs": {}})
    args = parser.parse_args(["--synthetic", "-o", str(tmp_path), "--precision", "fp32,fp16",
                              "--fp16-audio", str(tmp_path)])
    from runtime.errors import InputError

    with pytest.raises(InputError, match=f"^{tmp_path}: no .wav/.flac/.ogg files found$"):
        to_onnx.run(args)  # an empty folder: no speech to measure the ranges on
    args.fp16_audio = None
    manifest = to_onnx.run(args)
    assert calls == [(tmp_path, "built-in synthetic voices (4 x 6 s, not real speech)")]
    assert manifest["precisions"] == {"fp16": {"graphs": {}}}
    assert to_onnx.run(parser.parse_args(["--synthetic", "-o", str(tmp_path)])) == {
        "files": {}, "exported_to": str(tmp_path)}
    assert len(calls) == 1  # fp32 alone: no FP16 pass
    with pytest.raises(SystemExit):
        parser.parse_args(["--synthetic", "-o", str(tmp_path), "--precision", "fp16"])
    assert "expected fp32 or fp32,fp16, got 'fp16' (INT8: cmp-face calibrate)" in capsys.readouterr().err
