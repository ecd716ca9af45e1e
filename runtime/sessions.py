"""A models folder opened with ONNX Runtime: sessions, triangles and the manifest. No torch."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import ModelError

PIPELINES = ("supervised", "unsupervised")
TRIANGLES_FILE = "triangles.npy"
MANIFEST_FILE = "models.json"


def open_session(path: Path, providers: list[str], threads: int | None = None, spinning: bool = False):
    """An InferenceSession with our errors for missing or broken files.

    ``spinning=False`` stops ONNX Runtime's idle worker threads from busy-waiting after each
    run: between runs we compute VAD, log-mel and renders in numpy/C++, and on a small CPU the
    spinning threads take those cores (measured on 2 cores: voice -> mesh 31.7 -> 12.6 ms).
    """
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load this model ({first})") from exc


def _check_io(runner, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    have_in = tuple(i.name for i in runner.inputs)
    have_out = {o.name for o in runner.outputs}
    if have_in != inputs or not set(outputs) <= have_out:
        raise ModelError(f"{path}: unexpected inputs/outputs {have_in} -> {sorted(have_out)}; expected "
                         f"{inputs} -> {list(outputs)} (was it exported by cmp-deploy?)")


@dataclass
class ModelsFolder:
    """The runners of one pipeline (``runtime.runners``: any backend), ready to run."""

    root: Path
    pipeline: str
    encoder: object   # runtime.runners.Runner
    decoder: object
    triangles: np.ndarray
    manifest: dict
    backend: object   # runtime.runners.Backend
    precision: str = "fp32"
    voice2mesh: object | None = None  # samples -> mesh in one graph, when asked for

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("synthetic"))

    def describe(self) -> str:
        """What runs the graphs, e.g. "onnxruntime on cpu, fp32"."""
        return f"{self.backend}, {self.precision}"

    @classmethod
    def open(cls, root: str | Path, pipeline: str = "supervised", device: str = "auto",
             threads: int | None = None, voice2mesh: bool = False, spinning: bool = False,
             backend: str = "auto", precision: str = "fp32", cuda_graph: bool = False) -> "ModelsFolder":
        from runtime.engines import PRECISION_COMMANDS, onnx_file, precision_file
        from runtime.runners import open_runner, select_backend

        root = Path(root)
        if pipeline not in PIPELINES:
            raise ModelError(f"unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
        if not root.is_dir():
            raise ModelError(f"{root}: models folder not found")
        manifest_path = root / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{manifest_path}: not found; export the models with "
                             "'cmp-face export' (or python export/to_onnx.py)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{manifest_path}: not valid JSON ({exc})") from exc
        if pipeline not in manifest.get("pipelines", []):
            raise ModelError(f"{root} holds no {pipeline} decoder (exported: "
                             f"{', '.join(manifest.get('pipelines', [])) or 'none'})")
        onnx_file("encoder", precision)  # an unknown precision is refused before anything else
        chosen = select_backend(backend, device, root)
        graphs = ["encoder", f"decoder_{pipeline}"] + ([f"voice2mesh_{pipeline}"] if voice2mesh else [])
        files = {g: precision_file(manifest, g, precision, cpu=chosen.device == "cpu") for g in graphs}
        missing = [f for f in files.values() if not (root / f).is_file()]
        if precision != "fp32" and missing:
            raise ModelError(f"{root} has no {precision} models ({', '.join(missing)} not found); make them "
                             f"with: {PRECISION_COMMANDS[precision].format(models=root)}")

        def runner(graph: str, inputs: tuple[str, ...], outputs: tuple[str, ...]):
            opened = open_runner(root, graph, chosen, precision, threads=threads, spinning=spinning,
                                 cuda_graph=cuda_graph, file=files[graph])
            _check_io(opened, root / files[graph], inputs, outputs)
            return opened

        encoder = runner("encoder", ("fbank",), ("embedding",))
        decoder = runner(f"decoder_{pipeline}", ("embedding",), ("params", "vertices"))
        triangles = load_triangles(root / TRIANGLES_FILE, manifest.get("n_vertices"))
        fused = runner(f"voice2mesh_{pipeline}", ("samples",), ("embedding", "params", "vertices")) if voice2mesh else None
        return cls(root, pipeline, encoder, decoder, triangles, manifest, chosen, precision, fused)


def load_triangles(path: Path, n_vertices: int | None) -> np.ndarray:
    if not path.is_file():
        raise ModelError(f"{path}: triangles file not found")
    try:
        tri = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: not a readable .npy file ({exc})") from exc
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.dtype != np.int32:
        raise ModelError(f"{path}: expected (M, 3) int32 triangles, found {tri.shape} {tri.dtype}")
    if n_vertices is not None and (tri.min() < 0 or tri.max() >= n_vertices):
        raise ModelError(f"{path}: triangle indices outside 0..{n_vertices - 1}")
    return tri
