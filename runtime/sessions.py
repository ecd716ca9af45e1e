"""A models folder opened with ONNX Runtime: sessions, triangles and the manifest. No torch."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import ModelError

PIPELINES = ("supervised", "unsupervised")
DEVICES = ("auto", "cpu", "cuda")
ENCODER_FILE = "encoder.onnx"
TRIANGLES_FILE = "triangles.npy"
MANIFEST_FILE = "models.json"


def decoder_file(pipeline: str) -> str:
    return f"decoder_{pipeline}.onnx"


def select_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device``: CUDA when asked for or (auto) when available."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ModelError("device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                         f"(available: {', '.join(available)}); install onnxruntime-gpu (see README, GPU)")
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


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


def _check_io(session, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    have_in = tuple(i.name for i in session.get_inputs())
    have_out = {o.name for o in session.get_outputs()}
    if have_in != inputs or not set(outputs) <= have_out:
        raise ModelError(f"{path}: unexpected inputs/outputs {have_in} -> {sorted(have_out)}; expected "
                         f"{inputs} -> {list(outputs)} (was it exported by cmp-deploy?)")


@dataclass
class ModelsFolder:
    """The ONNX sessions of one pipeline, ready to run."""

    root: Path
    pipeline: str
    encoder: object
    decoder: object
    triangles: np.ndarray
    manifest: dict
    providers: list[str]
    voice2mesh: object | None = None  # samples -> mesh in one graph, when asked for

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("synthetic"))

    @classmethod
    def open(cls, root: str | Path, pipeline: str = "supervised", device: str = "auto",
             threads: int | None = None, voice2mesh: bool = False, spinning: bool = False) -> "ModelsFolder":
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
        providers = select_providers(device)
        encoder = open_session(root / ENCODER_FILE, providers, threads, spinning)
        _check_io(encoder, root / ENCODER_FILE, ("fbank",), ("embedding",))
        decoder = open_session(root / decoder_file(pipeline), providers, threads, spinning)
        _check_io(decoder, root / decoder_file(pipeline), ("embedding",), ("params", "vertices"))
        triangles = load_triangles(root / TRIANGLES_FILE, manifest.get("n_vertices"))
        fused = None
        if voice2mesh:
            path = root / f"voice2mesh_{pipeline}.onnx"
            fused = open_session(path, providers, threads, spinning)
            _check_io(fused, path, ("samples",), ("embedding", "params", "vertices"))
        return cls(root, pipeline, encoder, decoder, triangles, manifest, providers, fused)


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
