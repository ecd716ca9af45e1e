"""Which backends can this machine actually run?

Each discovery returns either a runnable :class:`Backend` (its probe session ran) or a skip
reason, so the harness never reports a row it could not measure:

* ``release-style``: the baseline (PyTorch eager models of the release-layout folder, see
  :mod:`benchmarks.release_style`); needs torch and the release folder;
* ``ort-cpu-fp32``: ONNX Runtime, CPUExecutionProvider, the FP32 models (always);
* ``ort-cuda-fp32``: CUDAExecutionProvider listed by onnxruntime AND a probe session whose
  first provider really is CUDA runs (ONNX Runtime silently falls back to the CPU when the
  CUDA libraries do not load, so the list alone proves nothing);
* ``ort-trt-fp32`` / ``ort-trt-fp16``: TensorrtExecutionProvider, same probe;
* ``*-fp16`` / ``*-int8``: the files the models folder's manifest lists for that precision (``cmp-face
  calibrate``; an INT8 graph may be served by its FP32 file, and the CPU prefers the ``int8u8``
  flavour), else ``encoder_fp16.onnx``, ``decoder_<pipeline>_fp16.onnx`` (``_int8`` likewise):
  FP16 on CUDA, INT8 on the CPU (and on CUDA), each probed;
* ``<id>-onnxfrontend``: each FP32 backend again with ``Predictor(frontend="fused")`` (log-mel,
  encoder and decoder in one ``voice2mesh_<pipeline>.onnx`` graph), when those files exist;
* non-default configurations, only when asked for (``--what-if``): ``ort-cpu-fp32-spinning``
  (ONNX Runtime's idle threads busy-waiting, ``Predictor(spinning=True)``), labelled so;
* native TensorRT engines (``*.engine`` / ``*.plan``): reported with the reason they are
  not run (no runner for them in ``runtime/`` yet) or why not (``import tensorrt`` fails).

No torch is imported here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.models_folder import PIPELINES

BASELINE_ID = "release-style"


@dataclass
class Backend:
    id: str
    label: str
    kind: str                     # "baseline" or "ours"
    precision: str                # "fp32", "fp16", "int8"
    providers: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)   # model name -> path
    device: str = "cpu"
    provider_options: list[dict] = field(default_factory=list)
    frontend: str = "numpy"       # "fused": Predictor(frontend="fused"), the fused voice2mesh graphs
    spinning: bool | None = None  # None: the runtime's default; True/False: ONNX Runtime thread spinning
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def model_files(models: Path, precision: str = "fp32", cpu: bool = True) -> tuple[dict[str, str], list[str]]:
    """``encoder``, ``decoder_supervised``, ``decoder_unsupervised`` paths at ``precision``, as the
    Predictor finds them (the files the manifest lists: an INT8 graph may be served by its FP32
    file, and the CPU prefers the ``int8u8`` flavour), and the names of those missing."""
    from runtime.errors import ModelError
    from runtime.models_folder import ModelsFolder

    try:
        folder = ModelsFolder.read(models)
    except ModelError:
        folder = ModelsFolder(models, {"files": {}})  # no manifest: files by name
    names = ["encoder"] + [f"decoder_{p}" for p in PIPELINES]
    files = {n: models / folder.precision_file(n, precision, cpu) for n in names}
    found = {n: str(path) for n, path in files.items() if path.is_file()}
    return found, [files[n].name for n in names if n not in found]


def probe(path: str, providers: list[str], threads: int, provider_options: list[dict] | None = None) -> str | None:
    """Open ``path`` with ``providers`` and run it once on a small input. Returns None when
    it ran on ``providers[0]``, else the reason it did not."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, so, providers=providers, provider_options=provider_options)
    except Exception as exc:  # noqa: BLE001 - any ORT failure is a skip reason
        return f"session creation failed: {first_line(exc)}"
    if sess.get_providers()[0] != providers[0]:
        return (f"ONNX Runtime fell back to {sess.get_providers()[0]} (the {providers[0]} libraries did "
                "not load)")
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    shape = [1, 64, 1000] if inp.name == "fbank" else [1, 64]
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    if inp.name == "embedding":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    try:
        sess.run(None, {inp.name: x})
    except Exception as exc:  # noqa: BLE001
        return f"probe run failed: {first_line(exc)}"
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def discover(models: Path, release: Path | None, threads: int, want_baseline: bool = True,
             what_if: bool = False) -> tuple[list[Backend], list[dict]]:
    """Runnable backends (baseline first) and ``[{"backend", "reason"}]`` for the others."""
    backends: list[Backend] = []
    skipped: list[dict] = []

    def skip(bid: str, reason: str) -> None:
        skipped.append({"backend": bid, "reason": reason})

    # --- the release-style baseline
    if want_baseline:
        try:
            import importlib.util
            has_torch = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            has_torch = False
        if not has_torch:
            skip(BASELINE_ID, "torch is not installed (pip install -e '.[export]'): the release-style "
                              "baseline runs the release's PyTorch eager models")
        elif release is None or not (release / "pretrained_models").is_dir():
            skip(BASELINE_ID, f"no release-layout folder for the eager models (looked for {release}); "
                              "pass --release DIR")
        else:
            backends.append(Backend(BASELINE_ID, "release-style (PyTorch eager, per-frame log-mel loop)",
                                    "baseline", "fp32", files={"release": str(release)}))
    else:
        skip(BASELINE_ID, "disabled with --no-baseline")

    try:
        import onnxruntime as ort
    except ImportError as exc:
        skip("ort-*", f"onnxruntime cannot be imported ({exc})")
        return backends, skipped
    available = ort.get_available_providers()

    fp32, missing = model_files(models)
    if missing:
        skip("ort-*", f"{models} lacks {', '.join(missing)}")
        return backends, skipped

    # (id, label, providers, precision, device); files come from the manifest (model_files)
    candidates = [
        ("ort-cpu-fp32", "ONNX Runtime CPU FP32", ["CPUExecutionProvider"], "fp32", "cpu"),
        ("ort-cpu-int8", "ONNX Runtime CPU INT8", ["CPUExecutionProvider"], "int8", "cpu"),
        ("ort-cpu-fp16", "ONNX Runtime CPU FP16", None, "fp16", "cpu"),
        ("ort-cuda-fp32", "ONNX Runtime CUDA FP32", ["CUDAExecutionProvider", "CPUExecutionProvider"],
         "fp32", "cuda"),
        ("ort-cuda-fp16", "ONNX Runtime CUDA FP16", ["CUDAExecutionProvider", "CPUExecutionProvider"],
         "fp16", "cuda"),
        ("ort-cuda-int8", "ONNX Runtime CUDA INT8", ["CUDAExecutionProvider", "CPUExecutionProvider"],
         "int8", "cuda"),
        ("ort-trt-fp32", "ONNX Runtime TensorRT FP32",
         ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "fp32", "cuda"),
        ("ort-trt-fp16", "ONNX Runtime TensorRT FP16",
         ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "fp16", "cuda"),
    ]
    for bid, label, providers, precision, device in candidates:
        if providers is None:
            skip(bid, "FP16 is measured on GPUs only: ONNX Runtime's CPU provider has no fast FP16 kernels "
                      "(it would time casts, not a deployment)")
            continue
        if providers[0] not in available:
            skip(bid, f"this onnxruntime has no {providers[0]} (available: {', '.join(available)})"
                 + ("; no GPU here or onnxruntime-gpu not installed" if device == "cuda" else ""))
            continue
        files, missing = model_files(models, precision, cpu=device == "cpu") if precision != "fp32" else (fp32, [])
        if missing:
            skip(bid, f"no {precision.upper()} models in {models} (missing {', '.join(missing)})")
            continue
        options = [{} for _ in providers]
        if providers[0] == "TensorrtExecutionProvider" and precision == "fp16":
            options[0] = {"trt_fp16_enable": True}
        reason = None
        for name, path in files.items():
            reason = probe(path, providers, threads, options)
            if reason:
                reason = f"{Path(path).name}: {reason}"
                break
        if reason:
            skip(bid, reason)
            continue
        backends.append(Backend(bid, label, "ours", precision, providers, files, device, options))

    # --- the same FP32 backends with the ONNX frontend (fused voice2mesh graphs)
    fused_files, fused_missing = {}, []
    for name in ["frontend"] + [f"voice2mesh_{p}" for p in PIPELINES]:
        path = models / f"{name}.onnx"
        (fused_files.__setitem__(name, str(path)) if path.is_file() else fused_missing.append(path.name))
    for b in [b for b in backends if b.kind == "ours" and b.precision == "fp32"
              and b.providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")]:
        bid = f"{b.id}-onnxfrontend"
        if fused_missing:
            skip(bid, f"{models} has no {', '.join(fused_missing)} (exported by an older cmp-deploy?)")
        else:
            reason = probe(fused_files["frontend"], b.providers, threads)
            if reason:
                skip(bid, f"frontend.onnx: {reason}")
                continue
            backends.append(Backend(bid, f"{b.label}, fused graph", "ours", "fp32", b.providers,
                                    {**b.files, **fused_files}, b.device, b.provider_options, frontend="fused"))
    if what_if and any(b.id == "ort-cpu-fp32" for b in backends):
        backends.append(Backend("ort-cpu-fp32-spinning", "ONNX Runtime CPU FP32, spinning on (not the default)",
                                "ours", "fp32", ["CPUExecutionProvider"], dict(fp32), "cpu", [{}], spinning=True,
                                note="sessions with session.intra_op.allow_spinning=1 (Predictor(spinning=True))"))

    # --- native TensorRT engines
    engines = sorted(p.name for p in models.glob("*.engine")) + sorted(p.name for p in models.glob("*.plan"))
    try:
        import tensorrt  # noqa: F401
        has_trt = True
        trt_error = ""
    except Exception as exc:  # noqa: BLE001
        has_trt, trt_error = False, first_line(exc)
    if not has_trt:
        skip("tensorrt-native", f"import tensorrt failed ({trt_error})"
             + (f"; engines present: {', '.join(engines)}" if engines else "; no engines in the models folder"))
    elif not engines:
        skip("tensorrt-native", f"tensorrt imports but {models} holds no *.engine / *.plan files")
    else:
        skip("tensorrt-native", f"engines {', '.join(engines)} found, but runtime/ has no runner for native "
                                "TensorRT engines yet")
    return backends, skipped
