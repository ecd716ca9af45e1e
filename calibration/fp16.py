"""FP16 models with FP32 islands, chosen by measurement: our own pass over the ONNX graph.

For each graph (``encoder``, ``decoder_<pipeline>``; ``voice2mesh_<pipeline>`` is the FP32
frontend fused with those two) the pass

1. measures the value range of every floating-point tensor on real inputs with ONNX Runtime;
2. keeps in FP32 every node that touches a tensor beyond ``data_max`` (FP16 overflows at
   65504; the headroom covers louder inputs than the measured ones) or whose values, or
   weights, lie wholly below FP16's normal range (2**-14: subnormal, precision lost), plus
   the known hazard: in a decoder, the 3DMM arithmetic after the parameter heads
   (de-whitening, reconstruction, pose row-normalisation) always stays FP32;
3. converts everything else to FP16 (initializers converted, one ``Cast`` per tensor and
   type at island borders, graph inputs and outputs FP32 so each file is a drop-in);
4. checks the local quality bar (calibration.quality) on every input, with FP16 storage emulated (see
   :func:`emulate`); when it fails, bisection finds the largest FP16 run of nodes (from the
   end of the graph or from its start) that meets it, and the rest joins the islands.

The frontend (samples -> fbank) stays FP32 as a whole: its power spectrum overflows FP16 by
orders of magnitude, and the log floor and per-filter normalisation are listed hazards. Its
ranges are still measured and recorded.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from calibration import graph as G
from calibration.inputs import InputSet, builtin_voices
from runtime.models_folder import ModelsFolder, sha256
from calibration.quality import BARS, Verdict, min_cosine, relative_error

FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -14        # smallest normal FP16 number
DATA_MAX = 2048.0             # 32x headroom below FP16_MAX for inputs louder than the measured ones
SUFFIX = "_fp16"
# Inputs that stay FP32 whatever the node's type (ONNX types them apart from T).
FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
# Ops whose attributes name a float type or carry float tensors we do not rewrite: left FP32.
BLOCKED_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike",
               "ConstantOfShape", "Multinomial", "Bernoulli", "CastLike"}
HAZARD_3DMM = "3DMM arithmetic after the parameter heads (de-whitening, reconstruction, pose)"


def _is_float(t: int | None) -> bool:
    return t in (G.FLOAT, G.FLOAT16)


# ---------------------------------------------------------------------------------- islands
def hazard_islands(model: onnx.ModelProto) -> dict[str, str]:
    """The known hazards that stay FP32 whatever the measurement: in a decoder (a graph with a
    ``vertices`` output), every node after the fully connected parameter heads (``Gemm``)."""
    if "vertices" not in {o.name for o in model.graph.output}:
        return {}
    heads = [n for n in model.graph.node if n.op_type == "Gemm"]
    return {n.name: HAZARD_3DMM for n in G.descendants(model, heads) if n.op_type != "Gemm"}


def range_islands(model: onnx.ModelProto, ranges: Mapping[str, G.Range], types: Mapping[str, int],
                  data_max: float = DATA_MAX) -> dict[str, str]:
    """Nodes that must stay FP32 because of the measured values or their weights."""
    weights = G.initializers(model)
    islands: dict[str, str] = {}
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            if not name or not _is_float(types.get(name)):
                continue
            if name in weights:
                amax = float(np.abs(weights[name]).max()) if weights[name].size else 0.0
                if amax > FP16_MAX:
                    islands[node.name] = f"weight {name} reaches {amax:.3g} (> FP16 max 65504)"
                elif 0 < amax < FP16_TINY:
                    islands[node.name] = f"weight {name} is at most {amax:.3g} (subnormal in FP16)"
            elif name in ranges:
                r = ranges[name]
                if r.amax > data_max:
                    islands[node.name] = f"{name} reaches {r.amax:.3g} (> {data_max:g})"
                elif 0 < r.amax < FP16_TINY:
                    islands[node.name] = f"{name} is at most {r.amax:.3g} (subnormal in FP16)"
            if node.name in islands:
                break
    return islands


# ------------------------------------------------------------------------------- conversion
def convert(model: onnx.ModelProto, keep: Collection[str]) -> onnx.ModelProto:
    """``model`` with every floating-point node not in ``keep`` (node names) in FP16.

    Initializers used only in FP16 are converted; one used on both sides is stored twice.
    Other tensors crossing an island border get one ``Cast`` per tensor and target type.
    Graph inputs and outputs keep their FP32 type.
    """
    model = _copy(model)
    G.ensure_node_names(model)
    g = model.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name} ({node.op_type}) has a subgraph: not supported by the FP16 pass")
    types = G.tensor_types(model)
    low = {n.name for n in g.node if n.name not in keep and n.op_type not in BLOCKED_OPS
           and any(_is_float(types.get(x)) for x in list(n.input) + list(n.output) if x)}
    weights = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}

    # A graph output made in FP16 is produced under another name and cast back to FP32.
    renamed: dict[str, str] = {}
    for node in g.node:
        if node.name in low:
            for i, o in enumerate(node.output):
                if o in outputs and types.get(o) == G.FLOAT:
                    renamed[o] = node.output[i] = f"{o}{SUFFIX}"
    for node in g.node:
        for i, x in enumerate(node.input):
            if x in renamed:
                node.input[i] = renamed[x]
    for o, new in renamed.items():
        types[new] = G.FLOAT

    have: dict[str, int] = {i.name: G.FLOAT for i in g.input if types.get(i.name) == G.FLOAT}
    have.update({name: G.FLOAT for name, t in weights.items() if t.data_type == G.FLOAT})
    casts = {(new, G.FLOAT): o for o, new in renamed.items()}  # (tensor, type) -> its cast
    restored = {new: o for o, new in renamed.items()}
    new_weights: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def as_type(name: str, to: int) -> str:
        if have.get(name) == to:
            return name
        key = (name, to)
        if key not in casts:
            tag = "fp16" if to == G.FLOAT16 else "fp32"
            casts[key] = f"{name}__{tag}"
            if name in weights:  # converted offline: no Cast at run time
                array = numpy_helper.to_array(weights[name])
                array = array.astype(np.float16 if to == G.FLOAT16 else np.float32)
                new_weights.append(numpy_helper.from_array(array, casts[key]))
            else:
                nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"Cast_{casts[key]}"))
        return casts[key]

    for node in g.node:
        want = G.FLOAT16 if node.name in low else G.FLOAT
        for i, x in enumerate(node.input):
            if x and types.get(x) == G.FLOAT:
                node.input[i] = as_type(x, G.FLOAT if i in FP32_INPUTS.get(node.op_type, ()) else want)
        if node.name in low:
            _retype_attributes(node)
        nodes.append(node)
        for o in node.output:
            if o and types.get(o) == G.FLOAT:
                have[o] = want
            if o in restored:  # an FP16 graph output: cast back right after its producer
                nodes.append(helper.make_node("Cast", [o], [restored[o]], to=G.FLOAT, name=f"Cast_{restored[o]}"))
                have[restored[o]] = G.FLOAT

    del g.node[:]
    g.node.extend(nodes)
    used = {x for n in g.node for x in n.input} | outputs
    kept = [t for t in g.initializer if t.name in used] + [t for t in new_weights if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=False)
    return model


def _retype_attributes(node: onnx.NodeProto) -> None:
    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to" and a.i == G.FLOAT:
            a.i = G.FLOAT16
        elif node.op_type == "Constant" and a.name == "value" and a.t.data_type == G.FLOAT:
            a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))


def emulate(model16: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 model that rounds every tensor ``model16`` holds in FP16 (Cast there and back)
    and uses its FP16-rounded weights: FP16 storage made visible on any CPU.

    Needed because ONNX Runtime's CPU provider runs most FP16 nodes in FP32 between casts it
    inserts, and drops its own casts between such nodes, so the FP16 file itself hides
    rounding that a GPU (TensorRT) does. Arithmetic inside each node stays FP32, as with
    TensorRT's FP32 accumulation."""
    model = _copy(model16)
    g = model.graph
    types = G.tensor_types(model)
    for t in g.initializer:
        if t.data_type == G.FLOAT16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == G.FLOAT16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
            nodes.append(node)
            continue
        nodes.append(node)
        is_cast16 = node.op_type == "Cast" and any(a.name == "to" and a.i == G.FLOAT16 for a in node.attribute)
        for i, o in enumerate(node.output):
            if o and types.get(o) == G.FLOAT16:
                if is_cast16:
                    node.output[i] = f"{o}__r16"
                else:
                    node.output[i] = f"{o}__x"
                    nodes.append(helper.make_node("Cast", [f"{o}__x"], [f"{o}__r16"], to=G.FLOAT16,
                                                  name=f"Emulate16_{o}"))
                nodes.append(helper.make_node("Cast", [f"{o}__r16"], [o], to=G.FLOAT, name=f"Emulate32_{o}"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def precision_of(model: onnx.ModelProto) -> dict[str, int]:
    """How many compute nodes run in FP16 and in FP32 (Casts not counted)."""
    types = G.tensor_types(model)
    count: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        kinds = {types.get(x) for x in list(node.input) + list(node.output) if x}
        if G.FLOAT16 in kinds:
            count["fp16"] += 1
        elif G.FLOAT in kinds:
            count["fp32"] += 1
    return {"fp16": count["fp16"], "fp32": count["fp32"]}


# ------------------------------------------------------------------------------ measurement
def tensor_errors(model32: onnx.ModelProto, model16: onnx.ModelProto,
                  feeds: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """For every floating-point tensor of ``model32``: max |FP16 - FP32| / max |FP32| over feeds."""
    t32, t16 = G.tensor_types(model32), G.tensor_types(model16)
    names = [n for n in G.float_intermediates(model32, t32)
             if n in t16 or f"{n}{SUFFIX}" in t16]
    names16 = [n if n in t16 and _is_float(t16[n]) and f"{n}{SUFFIX}" not in t16 else f"{n}{SUFFIX}" for n in names]
    err = {n: 0.0 for n in names}
    scale = {n: 0.0 for n in names}
    for a, b in zip(G.run_all(model32, feeds, names, t32), G.run_all(model16, feeds, names16, t16)):
        for n, n16 in zip(names, names16):
            ref = a[n].astype(np.float64)
            err[n] = max(err[n], float(np.max(np.abs(b[n16].astype(np.float64) - ref))) if ref.size else 0.0)
            scale[n] = max(scale[n], float(np.max(np.abs(ref))) if ref.size else 0.0)
    return {n: err[n] / scale[n] if scale[n] > 0 else err[n] for n in names}


def bisect_islands(model: onnx.ModelProto, islands: Mapping[str, str],
                   verdict: Callable[[onnx.ModelProto], Verdict], progress: Callable[[str], None],
                   build: Callable[[set[str]], onnx.ModelProto],
                   what: str = "FP16") -> tuple[dict[str, str], onnx.ModelProto, Verdict]:
    """When ``what`` (FP16, INT8) everywhere outside ``islands`` breaks the bar: the largest run
    of nodes in ``what``, taken from the end of the graph or from its start (topological
    order), that meets it. ``build(keep)`` makes the model with the nodes ``keep`` left FP32.

    Error in a deep network is mostly amplification of rounding made upstream, so the node
    where it shows is rarely the node to keep in FP32; a contiguous FP16 suffix (or prefix)
    found by bisection is measured, not guessed. Every candidate is converted and checked.
    """
    order = [n.name for n in model.graph.node if n.name not in islands]
    best: tuple[int, dict[str, str], onnx.ModelProto, Verdict] | None = None
    for side in ("end", "start"):
        lo, hi = 0, len(order)          # lo: FP16 node count known to pass (0 = all FP32)
        passing: tuple[onnx.ModelProto, Verdict] | None = None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            fp16 = set(order[len(order) - mid:] if side == "end" else order[:mid])
            model16 = build(set(islands) | (set(order) - fp16))
            v = verdict(model16)
            progress(f"  bisect ({side}): {mid:3d} of {len(order)} nodes {what} -> {v.measure} {v.value:.6g}"
                     f" {'ok' if v.ok else 'fails'}")
            if v.ok:
                lo, passing = mid, (model16, v)
            else:
                hi = mid - 1
        if passing and (best is None or lo > best[0]):
            fp16 = set(order[len(order) - lo:] if side == "end" else order[:lo])
            reason = f"measured: {what} breaks the bar; {what} kept for the {'last' if side == 'end' else 'first'} " \
                     f"{lo} nodes"
            best = (lo, {**islands, **{n: reason for n in order if n not in fp16}}, *passing)
    if best is None:  # nothing passes in FP16: the whole graph stays FP32
        kept = {**islands, **{n: f"measured: no {what} node meets the bar" for n in order}}
        model16 = build(set(kept))
        return kept, model16, verdict(model16)
    return best[1], best[2], best[3]


@dataclass
class Fp16Result:
    graph: str
    model: onnx.ModelProto
    islands: dict[str, str]
    verdict: Verdict
    ranges: dict[str, G.Range]


def fp16_graph(graph: str, model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]],
               verdict: Callable[[onnx.ModelProto], Verdict], data_max: float = DATA_MAX,
               progress: Callable[[str], None] = print) -> Fp16Result:
    """Measure, choose islands, convert, and grow the islands until ``verdict`` holds."""
    model = _copy(model)
    G.ensure_node_names(model)
    types = G.tensor_types(model)
    ranges = G.measure_ranges(model, feeds, types)
    islands = hazard_islands(model)
    islands.update({k: v for k, v in range_islands(model, ranges, types, data_max).items() if k not in islands})
    progress(f"[{graph}] {len(ranges)} tensors measured; {len(islands)} nodes start in FP32 islands")
    model16 = convert(model, islands)
    v = verdict(emulate(model16))
    progress(f"[{graph}] {len(islands)} FP32 nodes: {v}")
    if not v.ok:
        islands, model16, v = bisect_islands(model, islands, lambda m: verdict(emulate(m)), progress,
                                             build=lambda keep: convert(model, keep))
        progress(f"[{graph}] {len(islands)} FP32 nodes after bisection: {v}")
    return Fp16Result(graph, model16, islands, v, ranges)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# ------------------------------------------------------------------------------ the folder
PARAM_OUTPUTS = ("params", "pose_R", "pose_offset")  # what the decoder bar is measured on


def decoder_errors(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Relative error of every output (max abs error / max abs FP32 value)."""
    return {name: relative_error(got[name], want[name]) for name in want}


def decoder_verdict(graph: str, errors: Mapping[str, float], bar: float, inputs: str) -> Verdict:
    """The decoder bar: params (and the pose net's pose, where there is one) within ``bar``."""
    return Verdict(graph, "params", max(errors[n] for n in PARAM_OUTPUTS if n in errors), bar, inputs)


def encoder_check(encoder: onnx.ModelProto, feeds: list, bar: float, source: str):
    """The FP32 encoder's embeddings of ``feeds``, and the verdict of a candidate encoder against
    them (the lowest embedding cosine, within ``bar``)."""
    def embed(model: onnx.ModelProto) -> np.ndarray:
        s = G.session(model)
        return np.concatenate([s.run(["embedding"], f)[0] for f in feeds])

    embeddings = embed(encoder)

    def verdict(candidate: onnx.ModelProto) -> Verdict:
        return Verdict("encoder", "cosine", min_cosine(embed(candidate), embeddings), bar, source)

    return embeddings, verdict


class DecoderCheck:
    """A candidate decoder against the FP32 one, both fed the same FP32 embeddings."""

    def __init__(self, name: str, decoder: onnx.ModelProto, embeddings: np.ndarray) -> None:
        self.name, self.embeddings = name, embeddings
        self.names = [o.name for o in decoder.graph.output]
        self.want = self.outputs(decoder)

    def outputs(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        return dict(zip(self.names, G.session(model).run(self.names, {"embedding": self.embeddings})))

    def errors(self, candidate: onnx.ModelProto) -> dict[str, float]:
        return decoder_errors(self.outputs(candidate), self.want)

    def verdict(self, candidate: onnx.ModelProto, bar: float, source: str) -> Verdict:
        return decoder_verdict(self.name, self.errors(candidate), bar, f"FP32 embeddings of {source}")


def _ranges_entry(ranges: Mapping[str, G.Range]) -> dict[str, list[float]]:
    return {name: r.as_list() for name, r in ranges.items()}


def _log_ranges(graph: str, ranges: Mapping[str, G.Range], islands: Collection[str], model: onnx.ModelProto,
                progress: Callable[[str], None]) -> None:
    made_in = {o: n.name for n in model.graph.node for o in n.output}
    progress(f"[{graph}] value ranges (min .. max; precision of the node that makes the tensor):")
    for name, r in ranges.items():
        where = "input" if name not in made_in else ("FP32" if made_in[name] in islands else "FP16")
        progress(f"    {name:<34} {r.min:>11.4g} .. {r.max:<11.4g} {where}")


def _entry(result: Fp16Result, models: Path, extra: dict | None = None) -> dict:
    return {"file": f"{result.graph}{SUFFIX}.onnx", "from": f"{result.graph}.onnx",
            "from_sha256": sha256(models / f"{result.graph}.onnx"), "nodes": precision_of(result.model),
            "islands": result.islands, "quality": result.verdict.as_dict(), **(extra or {}),
            "ranges": _ranges_entry(result.ranges)}


def write_fp16(models: Path, inputs: InputSet, data_max: float = DATA_MAX,
               progress: Callable[[str], None] = print) -> dict:
    """Write ``<graph>_fp16.onnx`` for the encoder, each decoder and each fused voice2mesh
    graph of ``models``; record islands, ranges and quality in ``models.json``; return that
    ``precisions["fp16"]`` entry. Raises :class:`ModelError` when a bar cannot be met."""
    from runtime.errors import ModelError

    models = Path(models)
    pipelines = list(ModelsFolder.read(models).pipelines)
    bar = BARS["fp16"]
    progress(f"FP16 for {models}: value ranges from {inputs.source}")
    graphs: dict[str, dict] = {}
    written: list[str] = []
    superseded: list[str] = []  # fused files of an earlier run that now fail their bar

    encoder = onnx.load(str(models / "encoder.onnx"))
    feeds = [u.encoder_feed() for u in inputs.utterances]
    embeddings, encoder_verdict = encoder_check(encoder, feeds, bar["cosine"], inputs.source)

    results = {"encoder": fp16_graph("encoder", encoder, feeds, encoder_verdict, data_max, progress)}
    for pipeline in pipelines:
        name = f"decoder_{pipeline}"
        decoder = onnx.load(str(models / f"{name}.onnx"))
        check = DecoderCheck(name, decoder, embeddings)

        def verdict(model16: onnx.ModelProto, check=check) -> Verdict:
            return check.verdict(model16, bar["params"], inputs.source)

        dfeeds = [{"embedding": embeddings[i:i + 8]} for i in range(0, len(embeddings), 8)]
        results[name] = fp16_graph(name, decoder, dfeeds, verdict, data_max, progress)
        errors = {}
        for label, m in (("errors", emulate(results[name].model)), ("errors_onnxruntime_cpu", results[name].model)):
            errors[label] = {k: float(f"{v:.4g}") for k, v in check.errors(m).items()}
        graphs[name] = errors

    for graph, result in results.items():
        _log_ranges(graph, result.ranges, result.islands, onnx.load(str(models / f"{graph}.onnx")), progress)
        if not result.verdict.ok:
            raise ModelError(f"{graph}: no FP16 model meets the bar ({result.verdict})")
        G.save(result.model, models / f"{graph}{SUFFIX}.onnx")
        written.append(f"{graph}{SUFFIX}.onnx")
        graphs[graph] = _entry(result, models, graphs.get(graph))
        progress(f"[{graph}] wrote {graph}{SUFFIX}.onnx: {graphs[graph]['nodes']['fp16']} FP16 nodes, "
                 f"{graphs[graph]['nodes']['fp32']} FP32; {result.verdict}")

    if (models / "frontend.onnx").is_file():
        graphs.update(_voice_graphs(models, pipelines, inputs, results, written, superseded, progress))
    entry = {"tool": f"calibration.fp16 (own pass; onnx {onnx.__version__})", "ranges_from": inputs.source,
             "verified": "bars measured with FP16 storage emulated in FP32 (calibration.fp16.emulate)",
             "data_max": data_max, "graphs": graphs}
    ModelsFolder.read(models).set_precision("fp16", entry, written, drop=tuple(superseded))
    progress(f"FP16: wrote {', '.join(written)}")
    return entry


def _voice_graphs(models: Path, pipelines: list[str], inputs: InputSet, results: Mapping[str, Fp16Result],
                  written: list[str], superseded: list[str], progress: Callable[[str], None]) -> dict:
    """The frontend stays FP32 (its ranges recorded); ``voice2mesh_<p>_fp16`` fuses it with the
    FP16 encoder and decoder."""
    voices = voice_inputs(inputs)
    frontend = onnx.load(str(models / "frontend.onnx"))
    ranges = G.measure_ranges(frontend, [u.samples_feed() for u in voices.utterances])
    _log_ranges("frontend", ranges, {n.name for n in frontend.graph.node}, frontend, progress)
    out = {"frontend": {"file": None, "islands": "all",
                        "reason": "power spectrum overflows FP16 (see ranges); log floor and per-filter "
                                  "normalisation are listed hazards", "ranges_from": voices.source,
                        "ranges": _ranges_entry(ranges)}}
    parts = {name: r.model for name, r in results.items()}
    out.update(fused_graphs(models, pipelines, voices, parts, SUFFIX, written, progress, bars=BARS["fp16"],
                            superseded=superseded))
    return out


def voice_inputs(inputs: InputSet) -> InputSet:
    """Utterances with audio samples: ``inputs`` when they came from audio, else the built-in voices."""
    return inputs if all(u.samples is not None for u in inputs.utterances) else builtin_voices()


def fused_graphs(models: Path, pipelines: list[str], voices: InputSet, parts: Mapping[str, onnx.ModelProto],
                 suffix: str, written: list[str], progress: Callable[[str], None],
                 files: Mapping[str, str] | None = None,
                 describe: Callable[[onnx.ModelProto], dict] | None = None, *,
                 bars: Mapping[str, float], superseded: list[str]) -> dict:
    """``voice2mesh_<p><suffix>.onnx``: the FP32 frontend fused with ``parts["encoder"]`` and
    ``parts["decoder_<p>"]``, judged end to end against the FP32 ``voice2mesh_<p>`` by ``bars``
    (embedding cosine, params error). A fused graph that fails is not written and the FP32 one
    serves (a decoder that amplifies a tiny embedding change fails here though it met its own
    bar); an earlier file of that name joins ``superseded``."""
    from runtime.frontend_graph import fuse_voice2mesh

    frontend = onnx.load(str(models / "frontend.onnx"))
    feeds = [u.samples_feed() for u in voices.utterances]
    out = {}
    for pipeline in pipelines:
        graph = f"voice2mesh_{pipeline}"
        if not (models / f"{graph}.onnx").is_file():
            progress(f"[{graph}] skipped: {graph}.onnx (FP32) is not in {models}")
            continue
        fused = fuse_voice2mesh(frontend, parts["encoder"], parts[f"decoder_{pipeline}"])
        ref = G.session(onnx.load(str(models / f"{graph}.onnx")))
        s = G.session(fused)
        names = [o.name for o in ref.get_outputs()]
        got_all, want_all = [], []
        for feed in feeds:
            got_all.append(dict(zip(names, s.run(names, feed))))
            want_all.append(dict(zip(names, ref.run(names, feed))))
        stack = lambda rows: {n: np.concatenate([r[n] for r in rows]) for n in names}  # noqa: E731
        got, want = stack(got_all), stack(want_all)
        errors = decoder_errors(got, want)
        verdicts = [Verdict(graph, "cosine", min_cosine(got["embedding"], want["embedding"]), bars["cosine"],
                            voices.source),
                    decoder_verdict(graph, errors, bars["params"], voices.source)]
        ok = all(v.ok for v in verdicts)
        file = f"{graph}{suffix}.onnx"
        sources = [(files or {}).get(g, f"{g}{suffix}.onnx") for g in ("encoder", f"decoder_{pipeline}")]
        end_to_end = {"inputs": voices.source, "embedding_cosine": verdicts[0].value,
                      "errors": {k: float(f"{v:.4g}") for k, v in errors.items()}}
        quality = {"ok": ok, "embedding": verdicts[0].as_dict(), "params": verdicts[1].as_dict()}
        if ok:
            G.save(fused, models / file)
            written.append(file)
            out[graph] = {"file": file, "from": " + ".join(["frontend.onnx", *sources]),
                          **(describe(fused) if describe else {"nodes": precision_of(fused)}),
                          "quality": quality, "end_to_end": end_to_end}
            progress(f"[{graph}] wrote {file}: end to end {'; '.join(map(str, verdicts))}")
            continue
        if (models / file).exists():
            superseded.append(file)
        failed = "; ".join(str(v) for v in verdicts if not v.ok)
        out[graph] = {"file": f"{graph}.onnx", "from": f"{graph}.onnx",
                      "kept_fp32": f"frontend.onnx + {' + '.join(sources)} fused fails the bar end to end",
                      "quality": quality, "end_to_end": end_to_end}
        progress(f"[{graph}] FAIL end to end, {file} not written; {graph}.onnx (FP32) serves: {failed}")
    return out
