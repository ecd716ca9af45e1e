"""INT8 models with explicit Q/DQ, laid out the way TensorRT consumes them.

ONNX Runtime's ``QDQQuantizer`` (the engine behind ``quantize_static``) writes the Q/DQ with
the settings NVIDIA ModelOpt passes it: symmetric INT8 activations (zero point 0, per tensor)
and per-channel symmetric INT8 weights stored as int8 initializers behind
``DequantizeLinear``; biases stay float; only the inputs of Conv/MatMul/Gemm are quantized
(their outputs are not), so Conv/MatMul + bias + activation fuse. The clipping thresholds come
from our own cached statistics (:mod:`calibration.stats`), not from ORT's calibrators, so a
method change does not re-run the model.

Kept out of INT8 always: the 3DMM arithmetic after the parameter heads (so no Q/DQ touches
``vertices``) and every ConvTranspose (TensorRT's INT8 ConvTranspose has a record of wrong
results and silent fallbacks; ORT's CPU has no INT8 kernel for it). Further nodes stay FP32
when the quality bar fails on the calibration inputs: the bisection of :mod:`calibration.fp16`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from calibration import graph as G
from calibration import stats as S
from calibration.fp16 import (PARAM_OUTPUTS, DecoderCheck, bisect_islands, encoder_check, fused_graphs,
                              hazard_islands, voice_inputs)
from calibration.inputs import InputSet
from runtime.models_folder import ModelsFolder, sha256
from calibration.quality import BARS, Verdict, selection_bars

OP_TYPES = ("Conv", "MatMul", "Gemm")
#: flavour -> (file suffix, models.json section, activation type). "tensorrt": symmetric s8
#: activations (what TensorRT takes); "cpu": asymmetric u8 activations, which ONNX Runtime's
#: CPU kernels (VNNI/AMX u8 x s8) run best; TensorRT rejects non-zero zero points.
FLAVOURS = {"tensorrt": ("_int8", "int8", "int8 symmetric per tensor"),
            "cpu": ("_int8u8", "int8u8", "uint8 asymmetric per tensor (CPU only; TensorRT rejects it)")}
#: "auto": per graph, each method of :data:`calibration.stats.METHODS` is tried on the cached
#: statistics and the one that keeps the most weights INT8 within the selection bar wins, the
#: most accurate among equals (on few calibration files the choice is indicative: NOTES.md).
AUTO = "auto"
CHOICES = (AUTO, *S.METHODS)
DEFAULT_METHOD = AUTO
NEVER_INT8 = ("ConvTranspose",)
EXTRA_OPTIONS = {
    "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
    "QDQDisableWeightAdjustForInt32Bias": True,  # without it ORT crashes on our decoders
    "DedicatedQDQPair": False, "OpTypesToExcludeOutputQuantization": list(OP_TYPES),
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
}


def fixed_islands(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes never quantized: the 3DMM tail, ConvTranspose, and a MatMul whose *first* operand
    is the constant (the generator's upsampling ``matrix @ x``): its per-channel weight axis
    would be the reduced one, which TensorRT cannot fold into the product."""
    islands = hazard_islands(model)
    weights = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in NEVER_INT8:
            islands[node.name] = "ConvTranspose stays out of INT8 (TensorRT INT8 record; no ORT CPU kernel)"
        elif node.op_type == "MatMul" and node.input[0] in weights and node.name not in islands:
            islands[node.name] = "MatMul with a constant left operand (per-channel axis would be the reduced one)"
    return islands


def activation_inputs(model: onnx.ModelProto, islands: Mapping[str, str]) -> list[str]:
    """The tensors that get an activation Q/DQ: non-constant float inputs of quantizable nodes."""
    weights = {t.name for t in model.graph.initializer}
    types = G.tensor_types(model)
    names = []
    for node in model.graph.node:
        if node.op_type in OP_TYPES and node.name not in islands:
            for x in node.input:
                if x and x not in weights and types.get(x) == G.FLOAT and x not in names:
                    names.append(x)
    return names


def quantize(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], exclude: set[str],
             unsigned: bool = False) -> onnx.ModelProto:
    """Q/DQ ``model`` (nodes in ``exclude`` untouched) with the activation ``ranges`` (low, high):
    symmetric s8 (``low = -high``) or, ``unsigned``, asymmetric u8."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    data = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()})
    options = dict(EXTRA_OPTIONS, ActivationSymmetric=not unsigned)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy = onnx.shape_inference.infer_shapes(copy)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint per call
    try:
        quantizer = QDQQuantizer(copy, True, False, QuantType.QInt8, QuantType.QUInt8 if unsigned else QuantType.QInt8,
                                 data, None, sorted(exclude), list(OP_TYPES), options)
        quantizer.quantize_model()
    finally:
        logging.getLogger().setLevel(level)
    quantizer.model.topological_sort()
    out = quantizer.model.model
    onnx.checker.check_model(out)
    return out


@dataclass
class Int8Result:
    graph: str
    model: onnx.ModelProto
    islands: dict[str, str]
    verdict: Verdict
    cache: Path
    cache_hit: bool
    method: str = ""
    candidates: dict | None = None  # method -> {int8_weights, measure, value, ok} when chosen by "auto"

    def summary(self) -> dict:
        """What ``auto`` compares (and ``models.json`` records): INT8 weights kept and the verdict."""
        return {"int8_weights": qdq_summary(self.model)["int8_weights"], **self.verdict.as_dict()}


def choose_method(candidates: dict[str, dict]) -> str:
    """``auto``'s choice among ``{method: summary}`` (in :data:`calibration.stats.METHODS` order):
    first the ones that meet the bar, then the most INT8 weights, then the most accurate (cosine
    up, errors down); among exact equals, the first."""
    def rank(method: str) -> tuple:
        c = candidates[method]
        return c["ok"], c["int8_weights"], c["value"] if c["measure"] == "cosine" else -c["value"]

    return max(candidates, key=rank)  # max() keeps the first of equals


def calibrate_graph(models: Path, graph: str, feeds: list[Mapping[str, np.ndarray]],
                    verdict: Callable[[onnx.ModelProto], Verdict], method: str,
                    progress: Callable[[str], None] = print, tick: Callable[[int], None] = lambda n: None,
                    unsigned: bool = False) -> Int8Result:
    """:func:`int8_graph` with ``method``, or with each method when it is ``auto`` (the model
    runs once: the later methods read the cached statistics), keeping the best by :meth:`Int8Result.rank`."""
    if method != AUTO:
        return int8_graph(models, graph, feeds, verdict, method, progress, tick, unsigned)
    tried = {}
    for m in S.METHODS:
        lines: list[str] = []
        tried[m] = int8_graph(models, graph, feeds, verdict, m, lines.append, tick, unsigned)
        tried[m].method = m
        progress(f"[{graph}] {m}: {qdq_summary(tried[m].model)['int8_weights']} INT8 weights; {tried[m].verdict}")
    candidates = {m: r.summary() for m, r in tried.items()}
    best = tried[choose_method(candidates)]
    best.candidates = candidates
    progress(f"[{graph}] auto: {best.method} keeps the most INT8 weights within the bar, the most accurate among equals")
    return best


def int8_graph(models: Path, graph: str, feeds: list[Mapping[str, np.ndarray]],
               verdict: Callable[[onnx.ModelProto], Verdict], method: str,
               progress: Callable[[str], None] = print, tick: Callable[[int], None] = lambda n: None,
               unsigned: bool = False) -> Int8Result:
    path = Path(models) / f"{graph}.onnx"
    model = onnx.load(str(path))
    G.ensure_node_names(model)
    islands = fixed_islands(model)
    names = activation_inputs(model, {})
    stats, cache, hit = S.cached(models, graph, sha256(path), feeds, lambda: S.collect(model, feeds, names, tick))
    ranges = stats.ranges(method, unsigned)
    progress(f"[{graph}] statistics of {len(names)} tensors {'read from' if hit else 'saved to'} {cache.name}")
    model8 = quantize(model, ranges, set(islands), unsigned)
    v = verdict(model8)
    progress(f"[{graph}] {len(islands)} nodes out of INT8: {v}")
    if not v.ok:
        quantizable = {n.name for n in model.graph.node if n.op_type in OP_TYPES}
        outside = {n.name: "not quantized" for n in model.graph.node if n.name not in quantizable}
        keep, model8, v = bisect_islands(model, {**outside, **islands}, verdict, progress,
                                         build=lambda keep: quantize(model, ranges, keep, unsigned), what="INT8")
        islands = {k: r for k, r in keep.items() if k in quantizable}
        progress(f"[{graph}] {len(islands)} quantizable nodes kept FP32 after bisection: {v}")
    return Int8Result(graph, model8, islands, v, cache, hit, method)


def qdq_summary(model: onnx.ModelProto) -> dict:
    """What the file claims: int8 weights behind DequantizeLinear, zero points all 0."""
    weights = {t.name: t for t in model.graph.initializer}
    q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    int8_weights = sum(1 for n in dq if n.input[0] in weights and weights[n.input[0]].data_type == onnx.TensorProto.INT8)
    zero_points = [numpy_helper.to_array(weights[n.input[2]]) for n in dq if len(n.input) > 2 and n.input[2] in weights]
    return {"quantize_linear": q, "dequantize_linear": len(dq), "int8_weights": int8_weights,
            "zero_points_all_zero": all(not np.any(z) for z in zero_points)}


def write_int8(models: Path, inputs: InputSet, method: str = DEFAULT_METHOD,
               progress: Callable[[str], None] = print, flavour: str = "tensorrt") -> dict:
    """Calibrate on ``inputs`` and write ``<graph>_int8.onnx`` for the encoder and each decoder;
    record them in ``models.json`` and return that ``precisions["int8"]`` entry."""
    from tqdm import tqdm

    from runtime.errors import ModelError

    if flavour not in FLAVOURS:
        raise ModelError(f"unknown INT8 flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    suffix, section, activations = FLAVOURS[flavour]
    unsigned = flavour == "cpu"
    if method not in CHOICES:
        raise ModelError(f"unknown calibration method {method!r}: choose one of {', '.join(CHOICES)}")
    models = Path(models)
    pipelines = list(ModelsFolder.read(models).pipelines)
    bar = selection_bars("int8")
    feeds = [u.encoder_feed() for u in inputs.utterances]
    encoder = onnx.load(str(models / "encoder.onnx"))
    embeddings, encoder_verdict = encoder_check(encoder, feeds, bar["cosine"], inputs.source)
    dfeeds = [{"embedding": embeddings[i:i + 8]} for i in range(0, len(embeddings), 8)]
    graphs: dict[str, dict] = {}
    written: list[str] = []
    superseded: list[str] = []
    progress(f"INT8 ({method}) for {models}: calibrating on {inputs.source}")
    final = BARS["int8"]
    progress(f"layers are chosen against the selection bars (embedding cosine >= {bar['cosine']:g}, params <= "
             f"{bar['params']:g}): half the error budget, so that speech the calibration never saw keeps the final "
             f"bars (cosine >= {final['cosine']:g}, params <= {final['params']:g}) that each file is judged by")
    with tqdm(total=2 * (len(feeds) + len(pipelines) * len(dfeeds)), desc="calibration statistics",
              unit="run", leave=False, disable=None) as bar_:  # None: no bar in logs (not a terminal)
        results = [calibrate_graph(models, "encoder", feeds, encoder_verdict, method, progress, bar_.update, unsigned)]
        for pipeline in pipelines:
            name = f"decoder_{pipeline}"
            check = DecoderCheck(name, onnx.load(str(models / f"{name}.onnx")), embeddings)

            def verdict(m8: onnx.ModelProto, check=check) -> Verdict:
                return check.verdict(m8, bar["params"], inputs.source)

            results.append(calibrate_graph(models, name, dfeeds, verdict, method, progress, bar_.update, unsigned))
    for r in results:
        if not r.verdict.ok:
            raise ModelError(f"{r.graph}: no INT8 model meets the bar ({r.verdict})")
        summary = qdq_summary(r.model)
        if summary["dequantize_linear"]:
            file = f"{r.graph}{suffix}.onnx"
            G.save(r.model, models / file)
            written.append(file)
        else:  # nothing met the bar in INT8: the FP32 file serves (no 2nd copy of its weights)
            file = f"{r.graph}.onnx"
            if (models / f"{r.graph}{suffix}.onnx").exists():
                superseded.append(f"{r.graph}{suffix}.onnx")
        official = Verdict(r.graph, r.verdict.measure, r.verdict.value, BARS["int8"][r.verdict.measure], r.verdict.inputs)
        graphs[r.graph] = {"file": file, "from": f"{r.graph}.onnx", "from_sha256": sha256(models / f"{r.graph}.onnx"),
                           "islands": r.islands, "quality": official.as_dict(),
                           "selection_bar": r.verdict.bar, "qdq": summary, "method": r.method,
                           "statistics": f"{S.CACHE_DIR}/{r.cache.name}"}
        if r.candidates:
            graphs[r.graph]["methods_tried"] = r.candidates
        if file in written:
            progress(f"[{r.graph}] wrote {file}: {official}")
        else:  # say that the FP32 file is what is judged, or "meets the bar" reads as a contradiction
            progress(f"[{r.graph}] no INT8 node could be kept within the bar, so the FP32 {file} serves INT8 "
                     f"requests: {official}")
    if not written:  # nothing INT8: the FP32 fused graphs serve (an earlier run's would run stale parts)
        for p in pipelines:
            graph = f"voice2mesh_{p}"
            if (models / f"{graph}{suffix}.onnx").exists():
                superseded.append(f"{graph}{suffix}.onnx")
            if (models / f"{graph}.onnx").is_file():
                graphs[graph] = {"file": f"{graph}.onnx", "from": f"{graph}.onnx", "kept_fp32": "no part is INT8"}
    elif (models / "frontend.onnx").is_file():
        graphs.update(fused_graphs(models, pipelines, voice_inputs(inputs), {r.graph: r.model for r in results},
                                   suffix, written, progress, {g: e["file"] for g, e in graphs.items()},
                                   describe=lambda m: {"qdq": qdq_summary(m)}, bars=BARS["int8"],
                                   superseded=superseded))
    entry = {"tool": "calibration.int8 (onnxruntime QDQQuantizer)", "flavour": flavour, "method": method,
             "calibrated_on": inputs.source, "activations": activations,
             "weights": "int8 symmetric per channel", "graphs": graphs,
             "param_outputs": [n for n in PARAM_OUTPUTS]}
    ModelsFolder.read(models).set_precision(section, entry, written, drop=tuple(superseded))
    progress(f"INT8 ({flavour}): wrote {', '.join(written) or 'nothing'}")
    return entry
