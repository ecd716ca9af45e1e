"""Tiny ONNX graphs with the inputs and outputs of the real ones (names, dtypes, dynamic axes), so
that engine planning and runners are tested in milliseconds. Not the models' arithmetic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

N_VERTICES = 5


def _model(nodes, inputs, outputs, inits):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def value(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph(nodes, "tiny", [value(*i) for i in inputs], [value(*o) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _decoder_nodes(source: str) -> list:
    from onnx import helper

    return [helper.make_node("MatMul", [source, "w_params"], ["params"]),
            helper.make_node("MatMul", [source, "w_vertices"], ["flat"]),
            helper.make_node("Reshape", ["flat", "vertex_shape"], ["vertices"])]


def _decoder_inits(rng) -> dict:
    return {"w_params": rng.standard_normal((64, 51)).astype(np.float32),
            "w_vertices": rng.standard_normal((64, N_VERTICES * 3)).astype(np.float32),
            "vertex_shape": np.array([-1, N_VERTICES, 3], np.int64)}


def write_tiny_models(folder: Path, seed: int = 0) -> Path:
    """encoder.onnx, decoder_supervised.onnx, voice2mesh_supervised.onnx and models.json in ``folder``."""
    import onnx
    from onnx import helper

    from runtime.models_folder import file_record

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = _model([helper.make_node("ReduceMean", ["fbank", "time_axis"], ["embedding"], keepdims=0)],
                     [("fbank", ["batch", 64, "frames"])], [("embedding", ["batch", 64])],
                     {"time_axis": np.array([2], np.int64)})
    decoder = _model(_decoder_nodes("embedding"), [("embedding", ["batch", 64])],
                     [("params", ["batch", 51]), ("vertices", ["batch", N_VERTICES, 3])], _decoder_inits(rng))
    fused = _model([helper.make_node("ReduceMean", ["samples", "sample_axis"], ["level"], keepdims=1),
                    helper.make_node("Mul", ["level", "spread"], ["embedding"])] + _decoder_nodes("embedding"),
                   [("samples", ["batch", "num_samples"])],
                   [("embedding", ["batch", 64]), ("params", ["batch", 51]), ("vertices", ["batch", N_VERTICES, 3])],
                   {"sample_axis": np.array([1], np.int64), "spread": np.linspace(-1, 1, 64, dtype=np.float32)[None],
                    **_decoder_inits(rng)})
    names = {"encoder.onnx": encoder, "decoder_supervised.onnx": decoder, "voice2mesh_supervised.onnx": fused}
    for name, model in names.items():
        onnx.save(model, str(folder / name))
    manifest = {"format": 2, "pipelines": ["supervised"], "synthetic": True,
                "files": {name: file_record(folder / name) for name in names}}
    (folder / "models.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder
