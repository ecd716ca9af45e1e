"""ONNX graph helpers shared by the FP16 and INT8 passes: tensor types, consumers, value
ranges of every intermediate tensor measured with ONNX Runtime. onnx + onnxruntime, no torch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from runtime.atomic import replacing

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every node a unique name (islands and exclusions are lists of node names)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor (inputs, initializers, intermediates, outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:  # Constant nodes are not always in value_info
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: node for node in model.graph.node for o in node.output if o}


def descendants(model: onnx.ModelProto, start: Iterable[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Nodes fed (directly or not) by the outputs of ``start``, not including ``start``."""
    users = consumers(model)
    seen: dict[str, onnx.NodeProto] = {}
    stack = [o for n in start for o in n.output]
    while stack:
        for node in users.get(stack.pop(), []):
            if node.name not in seen:
                seen[node.name] = node
                stack.extend(node.output)
    return list(seen.values())


@dataclass
class Range:
    """What a tensor held over the measured inputs."""

    min: float
    max: float
    amax: float          # largest |x|
    amin_nonzero: float  # smallest non-zero |x| (inf when all zero)

    def merge(self, other: "Range") -> "Range":
        return Range(min(self.min, other.min), max(self.max, other.max), max(self.amax, other.amax),
                     min(self.amin_nonzero, other.amin_nonzero))

    @classmethod
    def of(cls, a: np.ndarray) -> "Range":
        a = np.asarray(a, dtype=np.float32)
        if a.size == 0:
            return cls(np.inf, -np.inf, 0.0, np.inf)
        nz = np.abs(a[a != 0])
        return cls(float(a.min()), float(a.max()), float(np.abs(a).max()), float(nz.min()) if nz.size else np.inf)

    def as_list(self) -> list[float]:
        """[min, max] rounded to 4 significant digits: compact enough for models.json."""
        return [float(f"{self.min:.4g}"), float(f"{self.max:.4g}")]


def float_intermediates(model: onnx.ModelProto, types: Mapping[str, int] | None = None) -> list[str]:
    """Names of the floating-point tensors that nodes produce (graph outputs included)."""
    types = tensor_types(model) if types is None else types
    return [o for node in model.graph.node for o in node.output
            if o and types.get(o) in (FLOAT, FLOAT16)]


def with_outputs(model: onnx.ModelProto, names: Iterable[str], types: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``names`` (so ONNX Runtime keeps and returns them)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in have:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return exposed


def session(model: onnx.ModelProto, optimise: bool = True):
    """A CPU ONNX Runtime session on an in-memory model (graph optimisations off for
    measurement, so every tensor is computed as the graph says)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_all(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], names: list[str],
            types: Mapping[str, int] | None = None) -> Iterable[dict[str, np.ndarray]]:
    """Yield ``{name: value}`` of the tensors ``names`` for each feed (one session, one pass)."""
    types = tensor_types(model) if types is None else types
    sess = session(with_outputs(model, names, types), optimise=False)
    for feed in feeds:
        yield dict(zip(names, sess.run(names, dict(feed))))


def measure_ranges(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]],
                   types: Mapping[str, int] | None = None) -> dict[str, Range]:
    """Value range of every floating-point intermediate tensor (and graph input) over ``feeds``."""
    types = tensor_types(model) if types is None else types
    feeds = list(feeds)
    ranges: dict[str, Range] = {}

    def add(name: str, value: np.ndarray) -> None:
        r = Range.of(value)
        ranges[name] = ranges[name].merge(r) if name in ranges else r

    for feed in feeds:
        for name, value in feed.items():
            if types.get(name) in (FLOAT, FLOAT16):
                add(name, value)
    for values in run_all(model, feeds, float_intermediates(model, types), types):
        for name, value in values.items():
            add(name, value)
    return ranges


def save(model: onnx.ModelProto, path: Path) -> None:
    """Write an ONNX file all-or-nothing."""
    with replacing(path) as tmp:
        onnx.save(model, str(tmp))
