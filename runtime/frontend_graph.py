"""The release's voice frontend as an ONNX graph, and the fused voice -> mesh model.

:func:`build_frontend` writes ``normalise(log_mel(samples))`` of :mod:`runtime.fbank`
(transposed to the encoder's ``(B, 64, T)`` layout) with plain, GPU/TensorRT-friendly
operators: no ``If``/``Loop``, float32 throughout, every shape computed in-graph.

How the release's framing quirks become static-shape operators:

* frame ``k`` (``T = S // 160 + 1`` frames) covers samples ``[160k, 160k + L_k)`` with
  ``L_k = clamp(S - 160k, 0, 400)``; the cyclic fill of a short frame is sample
  ``160k + (j mod L_k)`` at position ``j``, which is also right for full frames
  (``j mod 400 = j``). The samples get one zero appended (``Pad``), so an empty frame
  (``L_k = 0``, only the last frame when ``S % 160 == 0``) gathers index ``S`` = 0 for
  every position. One ``Gather`` with in-graph ``(T, 400)`` indices (``Range``, ``Mod``,
  ``Min``/``Max``) builds every frame, tail frames included.
* pre-emphasis is stateful: frame ``k``'s first sample is pre-emphasised against the last
  sample of frame ``k-1`` *after its fill* (0 for frame 0). That sample's index is column
  399 of the previous row of the index matrix (the pad zero for row 0), so each row of
  the gather gets it as a leading 401st column.
* pre-emphasis, the Hamming window and the n=1024 real DFT (cos and sin parts, 513 bins
  each) are all linear in those 401 values: one constant ``(401, 1026)`` ``MatMul``;
  squaring and one ``(1026, 64)`` ``MatMul`` with the filterbank stacked twice gives
  ``re^2 + im^2`` projected on the mel filters.
* ``Log(Max(x, 1e-5))``, per-filter mean / population std over time (``ReduceMean``),
  ``+ eps``, then ``Tile`` + ``Slice`` to ``max(T, 1000)`` frames.

This module needs numpy, and onnx only where it builds or fuses a graph (imported there): it sits
below calibration and export, which both use it, and importing it costs nothing at run time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runtime import fbank as fb

if TYPE_CHECKING:
    import onnx

__all__ = ["build_frontend", "frontend_matrices", "fuse_voice2mesh", "FRONTEND_INPUT", "FRONTEND_OUTPUT"]

FRONTEND_INPUT = "samples"
FRONTEND_OUTPUT = "fbank"


def frontend_matrices() -> tuple[np.ndarray, np.ndarray]:
    """The two constant matrices of the graph, in float64.

    ``A`` (401, 1026): row 0 = the pre-emphasis prior, rows 1..400 = the frame's samples;
    columns 0..512 = real parts, 513..1025 = imaginary parts of the windowed, pre-emphasised
    frame's 1024-point DFT. ``F2`` (1026, 64): the mel filterbank stacked twice, so that
    ``(z * z) @ F2 = (re^2 + im^2) @ filterbank``.
    """
    n = np.arange(fb.WIN)
    k = np.arange(fb.N_BINS)
    ang = 2.0 * np.pi * ((np.outer(n, k) % fb.N_FFT) / fb.N_FFT)  # exact phase reduction
    w = np.hamming(fb.WIN)[:, None]
    dft = np.concatenate([w * np.cos(ang), -w * np.sin(ang)], axis=1)  # (400, 1026): y -> z
    a = np.zeros((fb.WIN + 1, 2 * fb.N_BINS))
    a[1:] += dft  # y[i] = x[i] - 0.97 * x[i-1], with x[-1] = the prior (row 0)
    a[:-1] -= fb.PRE_EMPHASIS * dft
    fbm = fb.mel_filterbank()
    return a, np.concatenate([fbm, fbm], axis=0)


def _const(name: str, value, dtype=None) -> "onnx.TensorProto":
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def build_frontend(opset: int = 17) -> onnx.ModelProto:
    """ONNX model: ``samples`` float32 ``(B, S)`` (int16 values, 16 kHz, after VAD) ->
    ``fbank`` float32 ``(B, 64, max(S // 160 + 1, 1000))``, normalised and tiled exactly like
    :func:`runtime.fbank.normalise` of :func:`runtime.fbank.log_mel`. B and S are dynamic;
    the rows of a batch share S (pad nothing: the padding would change the features).
    """
    import onnx
    from onnx import TensorProto, helper

    if opset < 13:
        raise ValueError(f"opset {opset} is too old: the frontend needs opset 13 or newer")
    a, f2 = frontend_matrices()
    hop, win = fb.HOP, fb.WIN
    inits = [
        _const("A_dft", a, np.float32),
        _const("F2_mel", f2, np.float32),
        _const("c_hop", [hop], np.int64),
        _const("c_zero", [0], np.int64),
        _const("c_one", [1], np.int64),
        _const("c_minus1", [-1], np.int64),
        _const("c_399", [win - 1], np.int64),
        _const("c_400", [win], np.int64),
        _const("c_two", [2], np.int64),
        _const("c_zero_s", 0, np.int64),
        _const("c_one_s", 1, np.int64),
        _const("c_j", np.arange(win)[None, :], np.int64),  # (1, 400)
        _const("c_pad", [0, 0, 0, 1], np.int64),  # one zero after the last sample
        _const("c_floor", fb.LOG_FLOOR, np.float32),
        _const("c_eps", fb.EPS32, np.float32),
        _const("c_min_frames", [fb.MIN_FRAMES], np.int64),
        _const("c_min_frames_m1", [fb.MIN_FRAMES - 1], np.int64),
    ]
    nodes = []

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{len(nodes)}", **attrs))
        return outputs[0]

    # Shapes: S (1,), T = S // 160 + 1 (1,), frame index k (T, 1).
    node("Shape", [FRONTEND_INPUT], ["shape_x"])
    node("Slice", ["shape_x", "c_one", "c_two"], ["S"])  # shape[1:2]
    node("Div", ["S", "c_hop"], ["S_div_hop"])
    node("Add", ["S_div_hop", "c_one"], ["T"])
    node("Squeeze", ["T", "c_zero"], ["T_scalar"])
    node("Range", ["c_zero_s", "T_scalar", "c_one_s"], ["k"])
    node("Unsqueeze", ["k", "c_one"], ["k_col"])  # (T, 1)
    # Frame start, valid length L = clamp(S - 160k, 0, 400), gather index 160k + j mod max(L, 1).
    node("Mul", ["k_col", "c_hop"], ["start"])
    node("Sub", ["S", "start"], ["remaining"])
    node("Min", ["remaining", "c_400"], ["L"])  # remaining >= 0 always
    node("Max", ["L", "c_one"], ["L_pos"])
    node("Mod", ["c_j", "L_pos"], ["j_mod"])  # (T, 400); integer Mod, fmod=0
    node("Add", ["start", "j_mod"], ["idx"])  # L == 0: 160k == S, the appended zero
    # Prior of frame k: the last (filled) sample of frame k-1; frame 0: the zero at S.
    node("Slice", ["idx", "c_399", "c_400", "c_one"], ["last_col"])  # (T, 1)
    node("Slice", ["last_col", "c_zero", "c_minus1", "c_zero"], ["last_prev"])  # (T-1, 1)
    node("Unsqueeze", ["S", "c_zero"], ["S_2d"])  # (1, 1)
    node("Concat", ["S_2d", "last_prev"], ["prior_idx"], axis=0)  # (T, 1)
    node("Concat", ["prior_idx", "idx"], ["full_idx"], axis=1)  # (T, 401)
    # Gather the frames (B, T, 401), pre-emphasis + window + DFT in one MatMul, power, mel.
    node("Pad", [FRONTEND_INPUT, "c_pad"], ["x_pad"], mode="constant")
    node("Gather", ["x_pad", "full_idx"], ["frames"], axis=1)
    node("MatMul", ["frames", "A_dft"], ["spec"])  # (B, T, 1026)
    node("Mul", ["spec", "spec"], ["spec_sq"])
    node("MatMul", ["spec_sq", "F2_mel"], ["mel"])  # (B, T, 64)
    node("Max", ["mel", "c_floor"], ["mel_floored"])
    node("Log", ["mel_floored"], ["logmel"])
    # Per-filter mean / population std over time (axis 1), + float32 eps.
    if opset >= 18:
        node("ReduceMean", ["logmel", "c_one"], ["mean"], keepdims=1)
    else:
        node("ReduceMean", ["logmel"], ["mean"], axes=[1], keepdims=1)
    node("Sub", ["logmel", "mean"], ["centred"])
    node("Mul", ["centred", "centred"], ["centred_sq"])
    if opset >= 18:
        node("ReduceMean", ["centred_sq", "c_one"], ["var"], keepdims=1)
    else:
        node("ReduceMean", ["centred_sq"], ["var"], axes=[1], keepdims=1)
    node("Sqrt", ["var"], ["std"])
    node("Add", ["std", "c_eps"], ["std_eps"])
    node("Div", ["centred", "std_eps"], ["normed"])
    # Repeat along time to at least 1000 frames, keep max(T, 1000):
    # repeats = ceil(1000 / T) = (T + 999) // T (1 when T >= 1000).
    node("Add", ["T", "c_min_frames_m1"], ["T_plus"])
    node("Div", ["T_plus", "T"], ["reps"])
    node("Concat", ["c_one", "reps", "c_one"], ["tile_reps"], axis=0)
    node("Tile", ["normed", "tile_reps"], ["tiled"])
    node("Max", ["T", "c_min_frames"], ["T_out"])
    node("Slice", ["tiled", "c_zero", "T_out", "c_one"], ["kept"])
    node("Transpose", ["kept"], [FRONTEND_OUTPUT], perm=[0, 2, 1])

    graph = helper.make_graph(
        nodes, "cmp_voice_frontend",
        [helper.make_tensor_value_info(FRONTEND_INPUT, TensorProto.FLOAT, ["batch", "num_samples"])],
        [helper.make_tensor_value_info(FRONTEND_OUTPUT, TensorProto.FLOAT, ["batch", 64, "frames"])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="cmp-deploy")
    # The oldest IR version that carries this opset: loadable by older runtimes / parsers.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    model.doc_string = (
        "Cross-Modal Perceptionist voice frontend: int16-valued 16 kHz samples (after silence "
        "removal) -> normalised 64-filter Sphinx log-mel, (batch, 64, max(S//160+1, 1000)).")
    helper.set_model_props(model, {
        "cmp.frontend": "sphinx-logmel-64",
        "cmp.frontend.sample_rate": "16000",
        "cmp.frontend.input_scale": "int16 values (not [-1, 1])",
        "cmp.frontend.min_frames": str(fb.MIN_FRAMES),
    })
    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------- fusion

def _default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    raise ValueError(f"model {model.graph.name!r} imports no default-domain opset")


def _rename_everywhere(graph: "onnx.GraphProto", mapping: dict[str, str]) -> None:
    """Rename tensors (node inputs/outputs, graph I/O, value_info, initializers), recursively."""
    import onnx

    for n in graph.node:
        n.input[:] = [mapping.get(s, s) for s in n.input]
        n.output[:] = [mapping.get(s, s) for s in n.output]
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_everywhere(attr.g, mapping)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_everywhere(g, mapping)
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            vi.name = mapping.get(vi.name, vi.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)


def fuse_voice2mesh(frontend: onnx.ModelProto, encoder: onnx.ModelProto,
                    decoder: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: ``samples`` -> frontend -> ``fbank`` -> encoder -> ``embedding`` -> decoder,
    with outputs ``embedding`` and the decoder's outputs.

    The encoder takes ``fbank`` (B, 64, T) and gives ``embedding`` (B, 64); the decoder takes
    ``embedding``. Internal names get the prefixes ``frontend/``, ``encoder/``, ``decoder/``;
    the graph input stays ``samples`` and the decoder's outputs keep their names
    (``params``, ``vertices``, ...). The fused model carries the decoder's metadata_props.
    A frontend built for another opset than the networks is converted to theirs.
    """
    import onnx
    from onnx import compose, version_converter

    for m, what, need_in, need_out in ((frontend, "frontend", FRONTEND_INPUT, FRONTEND_OUTPUT),
                                       (encoder, "encoder", "fbank", "embedding"),
                                       (decoder, "decoder", "embedding", None)):
        ins = [i.name for i in m.graph.input if i.name not in {x.name for x in m.graph.initializer}]
        outs = [o.name for o in m.graph.output]
        if need_in not in ins:
            raise ValueError(f"the {what} has no input named {need_in!r} (inputs: {ins})")
        if need_out is not None and need_out not in outs:
            raise ValueError(f"the {what} has no output named {need_out!r} (outputs: {outs})")
    nets_opset = {_default_opset(encoder), _default_opset(decoder)}
    if len(nets_opset) != 1:
        raise ValueError(f"encoder and decoder use different opsets: {sorted(nets_opset)}")
    target = nets_opset.pop()
    if _default_opset(frontend) != target:
        frontend = version_converter.convert_version(frontend, target)

    ir = max(frontend.ir_version, encoder.ir_version, decoder.ir_version)
    parts = []
    for m, prefix in ((frontend, "frontend/"), (encoder, "encoder/"), (decoder, "decoder/")):
        c = onnx.ModelProto()
        c.CopyFrom(m)
        c.ir_version = ir
        del c.metadata_props[:]
        parts.append(compose.add_prefix(c, prefix))
    fe, enc, dec = parts

    fused = compose.merge_models(fe, enc, io_map=[(f"frontend/{FRONTEND_OUTPUT}", "encoder/fbank")])
    fused = compose.merge_models(fused, dec, io_map=[("encoder/embedding", "decoder/embedding")])

    # Keep the embedding as an output too: callers report it beside the mesh.
    embedding = next(o for o in enc.graph.output if o.name == "encoder/embedding")
    fused.graph.output.insert(0, embedding)
    out_names = [o.name for o in decoder.graph.output]
    mapping = {f"frontend/{FRONTEND_INPUT}": FRONTEND_INPUT, "encoder/embedding": "embedding"}
    mapping.update({f"decoder/{n}": n for n in out_names})
    _rename_everywhere(fused.graph, mapping)
    fused.graph.name = "cmp_voice2mesh"
    del fused.metadata_props[:]
    for p in decoder.metadata_props:
        fused.metadata_props.add(key=p.key, value=p.value)
    fused.producer_name = decoder.producer_name or "cmp-deploy"
    onnx.checker.check_model(fused, full_check=True)
    return fused
