"""GPU check: every GPU backend and precision against CPU FP32, and the GPU chain's latency
against the release-style baseline on the same GPU, in one run of at most four minutes.

    python benchmarks/gpu_check.py --models MODELS --release RELEASE     # on a machine with a GPU
    python benchmarks/gpu_check.py --device cpu --quick --out DIR        # the same code on the CPU (CI)
    bash benchmarks/gpu_check.sh                                         # the lent H200: prepare, then run

1. CPU FP32 reference: ``Predictor(backend="onnxruntime", device="cpu")`` on real speech
   (``--audio``, default ../shared/data/voxceleb_wav when present) or the built-in demo voices.
2. Parity of every backend x precision on ``--device`` (onnxruntime, onnxruntime-trt, tensorrt x
   fp32, fp16, int8), stage by stage (encoder on the reference fbanks -> embedding cosine; decoder
   on the reference embeddings -> params and vertices max relative error) and end to end through
   ``voice2mesh``; a row that cannot run here says "not run" and why (the runtime's own error).
3. Latency p50/p99 at batch 1/8/32 of the GPU chain: audio -> VAD (CPU) -> ``voice2mesh`` on the
   device (``frontend="fused"``) -> vertices to the host -> Sim3DR render; and of the release-style
   baseline (benchmarks/release_style.py: per-frame log-mel on the CPU, PyTorch eager networks on the
   device) when torch can use the device.

Everything runs against one deadline (``--budget``, default 230 s): what does not fit is listed as
"not run: time budget"; results are rewritten after every step, so a killed run still leaves them.
Writes gpu_check.md, gpu_check.json and gpu_check.png to ``--out`` (default
benchmarks/results/<gpu-name>/).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import machine as _machine  # noqa: E402
from benchmarks.report import format_number, results_folder, write_results  # noqa: E402
from benchmarks.timing import Budget, measure  # noqa: E402
from calibration.quality import BARS, min_cosine, relative_error  # noqa: E402  (numpy only)
from runtime.errors import CmpError  # noqa: E402

SR = 16000
GPU_BACKENDS = ("onnxruntime", "onnxruntime-trt", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
PIPELINES = ("supervised", "unsupervised")
DEFAULT_AUDIO = ROOT.parent / "shared" / "data" / "voxceleb_wav"
NAMES = ("gpu_check.json", "gpu_check.md", "gpu_check.png")
# Seconds kept back for writing the results (PNG included) and closing the sessions.
RESERVE_S = 12.0
# ONNX Runtime's TensorRT provider builds its engines when a session first runs: minutes for our graphs.
TRT_EP_MIN_LEFT_S = 150.0

# Parity bars, per precision, on the *decoder's own* error (base bars) and on the embedding.
# FP16/INT8: the precision bars, the ones the precision files were made to meet on the CPU
# (calibration.quality.BARS); here they check the GPU's real reduced-precision arithmetic. FP32 on a
# GPU: cuDNN/cuBLAS pick other algorithms and, on Ampere and later, may round the operands of
# convolutions and matrix products to TF32 (10 mantissa bits, unit roundoff 2^-11 = 4.9e-4; ONNX
# Runtime's use_tf32 and PyTorch's cudnn.allow_tf32 default to on): a few such roundings through the
# layers give ~1e-3 relative to the largest value, and an embedding cosine above 1 - 1e-5.
PARITY_BARS = {"fp32": {"cosine": 0.99999, "params": 2e-3, "vertices": 2e-3},
               **{p: {"cosine": b["cosine"], "params": b["params"], "vertices": b["params"]} for p, b in BARS.items()}}
BARS_WHY = {
    "fp32": "cuDNN/cuBLAS algorithms and TF32 operand rounding (unit roundoff 4.9e-4) on Ampere+",
    "fp16": "the FP16 bars (calibration.quality.BARS), now with the GPU's real FP16 arithmetic",
    "int8": "the INT8 bars (calibration.quality.BARS), now with the GPU's INT8/Q-DQ kernels",
}
# A decoder amplifies small errors: its gain G (relative output change over relative embedding change,
# measured on the CPU reference, worst of GAIN_TRIALS random directions of size GAIN_STEP) is ~1.4 for
# the synthetic supervised heads and ~170 for the synthetic unsupervised decoder (generator -> image ->
# MobileNets: the CPU calibration saw the same). Rounding anywhere in a decoder travels through those layers, so
# params/vertices bars are the base bar x max(1, G); end to end (voice2mesh) the embedding's own
# relative error e = sqrt(2 (1 - cosine)) measured in that row comes on top: (base + e) x max(1, G).
# A bar of NO_BAR_ABOVE or more could not tell a correct backend from a wrong one (a wrong binding, a
# stale buffer or a wrong shape errs by order 1): such a check is reported without a bar.
GAIN_STEP = 1e-4
GAIN_TRIALS = 3
NO_BAR_ABOVE = 0.5
METRIC_BAR = {"embedding_cosine": "cosine", "params_max_rel": "params", "vertices_max_rel": "vertices"}
BARS_RULE = ("params/vertices bars = base bar x max(1, G), G = the decoder's measured gain; end to end "
             "(base + e) x max(1, G), e = sqrt(2 (1 - cosine)) of that row; a bar >= "
             f"{NO_BAR_ABOVE:g} is no bar (reported only)")


# ----------------------------------------------------------------------------- time
class Deadline:
    """One budget for the whole run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.spent()


# ----------------------------------------------------------------------------- inputs
def load_voices(audio: Path | None, count: int, quick: bool) -> tuple[list[tuple[str, np.ndarray]], str]:
    """(name, 16 kHz int16 samples) of the parity utterances and what they are."""
    from runtime.audio import load_audio
    from runtime.demo_signal import demo_voice

    if audio is not None:
        files = sorted(p for p in Path(audio).iterdir() if p.suffix.lower() == ".wav")[:count]
        if files:
            return [(p.stem, load_audio(p)) for p in files], f"{len(files)} recordings from {audio}"
    seconds = [3.0, 4.0] if quick else [4.0, 5.0, 6.0, 7.0, 8.0]
    voices = [(f"demo_voice({s:g}s, seed={i})", demo_voice(s, seed=i)) for i, s in enumerate(seconds[:count])]
    where = f"{audio} holds no .wav files" if audio is not None else "no --audio folder"
    return voices, f"{len(voices)} synthetic demo voices (runtime.demo_signal.demo_voice; {where})"


# ----------------------------------------------------------------------------- parity
@dataclass
class Reference:
    """CPU FP32 results of one pipeline, and its decoder's gain."""

    fbanks: list[np.ndarray]
    embeddings: np.ndarray
    decoded: dict[str, np.ndarray]
    fused: list[dict[str, np.ndarray]]
    gain: dict[str, float]


def _worst(pairs) -> float:
    return max(relative_error(a, b) for a, b in pairs)


def decoder_gain(p, emb: np.ndarray, dec: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Worst relative change of params and vertices per relative change of the embedding."""
    rng = np.random.default_rng(seed)
    gain = {"params": 0.0, "vertices": 0.0}
    for _ in range(GAIN_TRIALS):
        noise = rng.standard_normal(emb.shape)
        noise *= GAIN_STEP * np.linalg.norm(emb, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
        moved = p.decode((emb + noise).astype(np.float32))
        for k in gain:
            err = _worst((moved[k][i], dec[k][i]) for i in range(len(emb)))
            gain[k] = max(gain[k], err / GAIN_STEP)
    return gain


def reference(models: Path, pipeline: str, voices: list[tuple[str, np.ndarray]], threads: int | None):
    from runtime import Predictor

    with Predictor(models, pipeline, backend="onnxruntime", device="cpu", precision="fp32", frontend="fused",
                   threads=threads) as p:
        fbanks = [p.features(x, SR) for _, x in voices]
        emb = p.embed(fbanks)
        dec = p.decode(emb)
        fused = [{"embedding": r.embedding, "params": r.params, "vertices": r.vertices}
                 for r in p.predict_batch([x for _, x in voices], SR)]
        return Reference(fbanks, emb, dec, fused, decoder_gain(p, emb, dec))


def _bars(precision: str, gain: dict[str, float], embedding_error: float = 0.0) -> dict[str, float | None]:
    base = PARITY_BARS[precision]
    bars: dict[str, float | None] = {"embedding_cosine": base["cosine"]}
    for k in ("params", "vertices"):
        bar = (base[k] + embedding_error) * max(1.0, gain[k])
        bars[f"{k}_max_rel"] = bar if bar < NO_BAR_ABOVE else None
    return bars


def verdict(values: dict[str, float], bars: dict[str, float | None]) -> dict:
    failed = sorted(k for k, v in values.items() if bars.get(k) is not None
                    and not (v >= bars[k] if k == "embedding_cosine" else v <= bars[k]))
    return {"values": values, "bars": bars, "ok": not failed, "failed": failed}


def parity(p, ref: Reference, voices: list[tuple[str, np.ndarray]], precision: str) -> dict:
    """Stage by stage and end to end against the CPU FP32 reference, with the bars applied."""
    emb = p.embed(ref.fbanks)
    dec = p.decode(ref.embeddings)  # fed the reference embeddings: the decoder's own error
    n = len(ref.fbanks)
    stage = {"embedding_cosine": min_cosine(emb, ref.embeddings),
             "params_max_rel": _worst((dec["params"][i], ref.decoded["params"][i]) for i in range(n)),
             "vertices_max_rel": _worst((dec["vertices"][i], ref.decoded["vertices"][i]) for i in range(n))}
    got = p.predict_batch([x for _, x in voices], SR)
    fused = {"embedding_cosine": min_cosine(np.stack([r.embedding for r in got]),
                                            np.stack([r["embedding"] for r in ref.fused])),
             "params_max_rel": _worst((r.params, f["params"]) for r, f in zip(got, ref.fused)),
             "vertices_max_rel": _worst((r.vertices, f["vertices"]) for r, f in zip(got, ref.fused))}
    e = float(np.sqrt(max(0.0, 2.0 * (1.0 - fused["embedding_cosine"]))))
    out = {"stages": verdict(stage, _bars(precision, ref.gain)),
           "voice2mesh": verdict(fused, _bars(precision, ref.gain, e)), "decoder_gain": ref.gain}
    out["ok"] = out["stages"]["ok"] and out["voice2mesh"]["ok"]
    return out


# ----------------------------------------------------------------------------- configurations
@dataclass
class Config:
    backend: str
    device: str
    precision: str
    cuda_graph: bool = False         # ONNX Runtime CUDA replaying a captured graph per input shape
    status: str = "pending"          # measured | not run
    reason: str | None = None
    resolved: str | None = None      # the runtime's description, e.g. "onnxruntime on cuda:0, fp16"
    provider_options: dict | None = None
    parity: dict = field(default_factory=dict)
    predictors: dict = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device.replace(':', '')}-{self.precision}" + ("-cudagraph" if self.cuda_graph else "")

    def not_run(self, reason: str) -> None:
        self.status, self.reason = "not run", reason

    def as_dict(self) -> dict:
        return {"id": self.id, "backend": self.backend, "device": self.device, "precision": self.precision,
                "cuda_graph": self.cuda_graph, "status": self.status, "reason": self.reason, "resolved": self.resolved,
                "provider_options": self.provider_options, "parity": self.parity}


def plan_configs(device: str) -> list[Config]:
    """What the run checks: on a GPU every backend x precision; with ``--device cpu`` the CPU
    rows (measured) and the same GPU rows, which then say why they are not run."""
    rows = []
    if device == "cpu":
        rows += [Config("onnxruntime", "cpu", p) for p in PRECISIONS]
    gpu = "cuda" if device == "cpu" else device
    rows += [Config(b, gpu, p) for b in GPU_BACKENDS for p in PRECISIONS]
    # CUDA graphs (FP32; one session per input shape, so each parity length opens its own): second,
    # so that their latency rows come right after the first configuration's within the budget.
    rows.insert(len(rows) - len(GPU_BACKENDS) * len(PRECISIONS) + 1, Config("onnxruntime", gpu, "fp32", cuda_graph=True))
    return rows


def probe(cfg: Config, models: Path, dry_cpu: bool, deadline: Deadline) -> str | None:
    """Why ``cfg`` cannot run here, or None. The reasons are the runtime's own errors (missing
    precision files are reported by the Predictor when the row is opened)."""
    from runtime.runners import select_backend

    try:
        select_backend(cfg.backend, cfg.device, models)
    except CmpError as exc:
        return str(exc)
    if cfg.backend == "tensorrt" and not any(models.glob(f"*_{cfg.precision}_*.engine")):
        from runtime.engines import BUILD_SCRIPT
        return (f"no {cfg.precision} TensorRT engines in {models}; build them with: "
                f"{BUILD_SCRIPT} --models {models} --precision {cfg.precision}")
    if dry_cpu and cfg.device != "cpu":
        return "--device cpu: GPU rows are listed, not run"
    if cfg.backend == "onnxruntime-trt" and deadline.left() < TRT_EP_MIN_LEFT_S:
        return (f"ONNX Runtime's TensorRT provider builds its engines on first use (minutes); only "
                f"{deadline.left():.0f} s of the time budget were left")
    return None


def preload_cuda_libraries() -> str:
    """onnxruntime-gpu finds CUDA 13 / cuDNN 9 in the nvidia-* wheels only when preloaded
    (DEPLOY-NOTES B); the runtime does not do it, so the check does, before any CUDA session."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime not importable: {exc}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no CUDAExecutionProvider: nothing to preload"
    if not hasattr(ort, "preload_dlls"):
        return f"onnxruntime {ort.__version__} has no preload_dlls"
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - a failed preload is reported, the sessions then say more
        return f"preload_dlls failed: {exc}"
    return "onnxruntime.preload_dlls() done"


def onnxruntime_info() -> dict:
    """The onnxruntime actually imported (its distribution name can mislead: onnxruntime-gpu
    installed beside the CPU package both answer to ``import onnxruntime``)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"version": f"not importable ({exc})", "file": None, "providers": []}
    return {"version": ort.__version__, "file": ort.__file__, "providers": ort.get_available_providers()}


def _provider_options(p) -> dict | None:
    session = getattr(p.models.encoder, "session", None)
    if session is None:
        return None
    try:
        return {k: dict(v) for k, v in session.get_provider_options().items()}
    except Exception:  # noqa: BLE001 - informational only
        return None


# ----------------------------------------------------------------------------- the chains
STAGES = ("audio", "vad", "h2d", "graph", "d2h", "voice2mesh", "postprocess", "render")
STAGE_NAMES = {"audio": "read", "vad": "VAD", "h2d": "host->device", "graph": "graph", "d2h": "device->host",
               "voice2mesh": "runner", "postprocess": "post", "render": "render"}


def wav_bytes(x: np.ndarray) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR)
        w.writeframes(np.asarray(x, "<i2").tobytes())
    return buf.getvalue()


class ChainOurs:
    """A WAV file's bytes -> read -> VAD (CPU) -> voice2mesh (device) -> host vertices -> Sim3DR
    render, ``batch`` utterances per call. Each call keeps its stage times per utterance: the
    Predictor's own clock (on a device the runner's h2d, graph and d2h) and the render's."""

    def __init__(self, p, x: np.ndarray, batch: int) -> None:
        self.p, self.wav, self.batch = p, wav_bytes(x), batch
        self.seen: list[dict[str, float]] = []

    def __call__(self):
        results = self.p.predict_batch([self.wav] * self.batch)
        t0 = time.perf_counter()
        images = [r.render() for r in results]
        stages = {k: v for k, v in results[0].timings.items() if k != "total"}
        stages["render"] = (time.perf_counter() - t0) * 1e3 / self.batch
        self.seen.append(stages)
        return images

    def stages_ms(self) -> dict[str, float]:
        """Median per-utterance milliseconds of each stage over the calls seen."""
        keys = [k for k in STAGES if any(k in s for s in self.seen)]
        return {k: float(np.median([s.get(k, 0.0) for s in self.seen])) for k in keys}


class ReleaseOnDevice:
    """The release-style pipeline (benchmarks/release_style.py) with its PyTorch eager networks on
    ``device``: per-frame numpy log-mel and VAD on the CPU, fbanks copied to the device, outputs back."""

    def __init__(self, pack: Path, device: str) -> None:
        import torch

        from benchmarks import release_style as rs

        self.rs, self.torch = rs, torch
        self.model = rs.ReleaseStyle(pack)
        self.device = torch.device(device)
        for name in ("encoder", "heads", "generator", "image3d", "pose_net"):
            setattr(self.model, name, getattr(self.model, name).to(self.device))

    def embed(self, fbanks: np.ndarray):
        torch, F = self.torch, self.torch.nn.functional
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(fbanks.transpose(0, 2, 1))).to(self.device)
            x = self.model.encoder.model(x)
            x = F.avg_pool1d(x, x.size()[2], stride=1)
            return F.normalize(x.view(x.size()[0], -1, 1, 1), p=2, dim=1)

    def voice2mesh(self, pipeline: str, waves: list[np.ndarray]):
        """-> (embeddings (B, 64), vertices (B, N, 3), face images or None), all on the host."""
        torch, F, m = self.torch, self.torch.nn.functional, self.model
        fbanks = np.stack([self.rs.get_fbank(self.rs.remove_silence(w)) for w in waves])
        emb = self.embed(fbanks)
        with torch.no_grad():
            if pipeline == "supervised":
                p = m.heads(emb.view(emb.size(0), -1)).cpu().numpy()
                return emb.cpu().numpy().reshape(len(waves), -1), m.mesh_supervised(p).transpose(0, 2, 1), None
            img = F.interpolate(m.generator(emb), size=(120, 120), mode="bilinear", align_corners=True)
            out, pose = m.image3d(img).cpu().numpy(), m.pose_net(img).cpu().numpy()
        aligned, _ = m.mesh_unsupervised(out, pose)
        return emb.cpu().numpy().reshape(len(waves), -1), aligned.transpose(0, 2, 1), img.cpu().numpy()

    def chain(self, pipeline: str, x: np.ndarray, batch: int):
        rs, tri = self.rs, self.model.triangles

        def run():
            _, verts, imgs = self.voice2mesh(pipeline, [x] * batch)
            if pipeline == "supervised":
                return [rs.render_frontal_baseline(np.ascontiguousarray(v), tri, 512) for v in verts]
            return [rs.render_lit_baseline(np.ascontiguousarray(v), tri, rs.display_image(i))
                    for v, i in zip(verts, imgs)]
        return run


def baseline_parity(base: ReleaseOnDevice, pipeline: str, ref: Reference, voices) -> dict:
    """The baseline's embedding and vertices against the CPU FP32 reference (numpy log-mel path:
    the release's per-frame log-mel equals ours to 2e-5, tests/test_benchmarks.py)."""
    got = [base.voice2mesh(pipeline, [x]) for _, x in voices]
    emb = np.concatenate([g[0] for g in got])
    values = {"embedding_cosine": min_cosine(emb, ref.embeddings),
              "vertices_max_rel": _worst((g[1][0], ref.decoded["vertices"][i]) for i, g in enumerate(got))}
    e = float(np.sqrt(max(0.0, 2.0 * (1.0 - values["embedding_cosine"]))))
    bars = _bars("fp32", ref.gain, e)
    return verdict(values, {k: bars[k] for k in values})


def baseline_reason(device: str, release: Path) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed (the release-style baseline is PyTorch eager)"
    if device != "cpu" and not torch.cuda.is_available():
        return f"torch {torch.__version__} cannot use CUDA here (torch.cuda.is_available() is False)"
    if not (release / "pretrained_models").is_dir():
        return f"no release-layout folder at {release} (pass --release DIR)"
    return None


# ----------------------------------------------------------------------------- serving
SERVE_S = 50.0  # what the serving run may take of the budget (server start included)


def serving_run(models: Path, device: str, pipeline: str, x: np.ndarray, quick: bool, left_s: float) -> dict:
    """``cmp-face serve --device DEVICE`` on loopback under benchmarks/serve_load.py's open loop
    (binary INT16 samples of the latency utterance): rising rates until one is not held, with the
    server's own mean batch size (dynamic batching should pay on a GPU)."""
    import asyncio

    from benchmarks.serve_load import HELD_P99_MS, Server, batch_summary, held, infer_body, open_loop

    rates = [2.0, 4.0] if quick else [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0]
    seconds = 1.0 if quick else 3.0
    max_batch = 1 if device == "cpu" else 32
    started = time.perf_counter()
    server = Server(models, pipeline, max_batch, 2.0, "--device", device)
    doc = {"status": "measured", "device": device, "pipeline": pipeline, "max_batch": max_batch,
           "step_s": seconds, "held_p99_ms": HELD_P99_MS, "start_s": round(time.perf_counter() - started, 1),
           "rows": [], "highest_rate_held": None, "stopped": None}
    try:
        path = f"/v2/models/cmp_{pipeline}/infer"
        body, headers = infer_body(x)
        asyncio.run(open_loop(server.url, path, body, headers, 2.0, 1.0))  # warm-up
        for rate in rates:
            if time.perf_counter() - started + seconds + 5 > left_s:
                doc["stopped"] = "time budget"
                break
            before = server.batch_sizes()
            row = asyncio.run(open_loop(server.url, path, body, headers, rate, seconds))
            row["batch"] = batch_summary(before, server.batch_sizes())
            row["held"] = held(row)
            doc["rows"].append(row)
            if not row["held"]:
                break
        rates_held = [r["offered_per_s"] for r in doc["rows"] if r["held"]]
        doc["highest_rate_held"] = max(rates_held) if rates_held else None
    finally:
        server.stop()
    return doc


# ----------------------------------------------------------------------------- report
def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# GPU check: {doc['machine_name']}", "",
             f"{doc['date']} · device under test **{doc['device']}**"
             + (f" ({m['gpu']})" if m.get("gpu") else "") + f" · CPU {m['cpu']} ({m['logical_cpus']} logical)"
             + f" · git {doc['git']} · {'QUICK' if doc['quick'] else 'full run'}",
             f"python {doc['versions']['python']}, onnxruntime {doc['onnxruntime']['version']} "
             f"({', '.join(doc['onnxruntime']['providers'])}), torch {doc['versions']['torch']} · "
             f"CUDA libraries: {doc['cuda_preload']}",
             f"Models: `{doc['models']}`" + (" (synthetic, UNTRAINED: speed is representative, outputs are not)"
                                              if doc.get("untrained") else ""),
             f"Reproduce: `{doc['command']}`",
             f"Time: {doc['elapsed_s']:.0f} s of a {doc['budget_s']:.0f} s budget"
             + (f" · **stopped early**: {doc['stopped']}" if doc.get("stopped") else ""), ""]
    lines += ["## Parity against CPU FP32 (ONNX Runtime CPU)", "",
              f"Inputs: {doc['inputs']['parity']}. `stages`: encoder on the reference fbanks, decoder on the "
              "reference embeddings; `voice2mesh`: samples -> mesh in one graph, as the GPU chain runs it. "
              "cosine = smallest embedding cosine; params/vertices = largest |error| / largest |reference| "
              "over the utterances.", "",
              "| configuration | pipeline | path | cosine | params | vertices | bars: cosine >= / params <= / vertices <= | verdict |",
              "|---|---|---|---:|---:|---:|---|---|"]

    def row(label: str, pipe: str, path: str, r: dict) -> str:
        v, b = r["values"], r["bars"]
        cells = [f"{v['embedding_cosine']:.7f}", f"{v['params_max_rel']:.2e}" if "params_max_rel" in v else "-",
                 f"{v['vertices_max_rel']:.2e}"]
        bars = " / ".join("-" if k not in b else "none" if b[k] is None else f"{b[k]:.6g}"
                          if k == "embedding_cosine" else f"{b[k]:.3g}"
                          for k in ("embedding_cosine", "params_max_rel", "vertices_max_rel"))
        verdict = "pass" if r["ok"] else "**FAIL** (" + ", ".join(r["failed"]) + ")"
        return f"| {label} | {pipe} | {path} | {' | '.join(cells)} | {bars} | {verdict} |"

    for c in doc["configs"]:
        for pipe, par in c["parity"].items():
            if "error" in par:
                lines.append(f"| {c['id']} | {pipe} | - | - | - | - | - | **error**: {par['error']} |")
                continue
            lines += [row(c["id"], pipe, path, par[path]) for path in ("stages", "voice2mesh")]
    for pipe, r in doc["baseline"].get("parity", {}).items():
        lines.append(row(f"release-style ({doc['baseline']['device']})", pipe, "eager", r))
    gains = ", ".join(f"{pipe} params x{g['params']:.3g}, vertices x{g['vertices']:.3g}"
                      for pipe, g in doc["reference"].get("decoder_gain", {}).items())
    lines += ["", "Base bars: " + "; ".join(f"{p} {PARITY_BARS[p]['cosine']:g} / {PARITY_BARS[p]['params']:g} "
                                            f"({why})" for p, why in BARS_WHY.items()) + ".",
              f"Rule: {BARS_RULE}. Decoder gains G measured on the CPU reference: {gains or '-'}.", ""]
    lines += ["## Not run", ""]
    for c in doc["configs"]:
        if c["status"] == "not run":
            lines.append(f"- `{c['id']}`: {c['reason']}")
    if doc["baseline"]["status"] == "not run":
        lines.append(f"- release-style baseline: {doc['baseline']['reason']}")
    for cell in doc["latency_not_run"]:
        lines.append(f"- latency {cell['chain']} {cell['pipeline']} batch {cell['batch']}: {cell['reason']}")
    lines += ["", "## Latency of the chain (ms per batch; audio -> VAD on the CPU -> voice2mesh on the device -> "
              "vertices to the host -> Sim3DR render)", "",
              f"Input: {doc['inputs']['latency']}, repeated `batch` times. The baseline: VAD and the release's "
              "per-frame log-mel on the CPU, PyTorch eager networks on the device, numpy 3DMM, numpy lighting + "
              "plain C++ rasteriser. Speed-up = baseline p50 / p50, same run.", "",
              "| chain | pipeline | batch | p50 | p99 | n | utterances/s | speed-up vs baseline |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = {(r["pipeline"], r["batch"]): r for r in doc["latency"] if r["chain"] == "release-style"}
    for r in doc["latency"]:
        b = base.get((r["pipeline"], r["batch"]))
        ratio = f"x{format_number(b['p50_ms'] / r['p50_ms'])}" if b and r["chain"] != "release-style" else "-"
        lines.append(f"| {r['chain']} | {r['pipeline']} | {r['batch']} | {format_number(r['p50_ms'])} | {format_number(r['p99_ms'])} | "
                     f"{r['n']} | {format_number(1e3 * r['batch'] / r['p50_ms'], 1)} | {ratio} |")
    staged = [r for r in doc["latency"] if r.get("stages_ms")]
    if staged:
        keys = [k for k in STAGES if any(k in r["stages_ms"] for r in staged)]
        lines += ["", "### Where the time goes (ms per utterance, median of the timed calls)", "",
                  "The Predictor's own clock (read = WAV bytes decoded; on a device the runner laps host->device, "
                  "graph, device->host; runner = the rest of the fused-graph call) and the render. "
                  "From samples in host memory to vertices in host memory = host->device + graph + device->host + "
                  "runner + post.", "",
                  "| chain | pipeline | batch | " + " | ".join(STAGE_NAMES[k] for k in keys) + " | samples -> vertices |",
                  "|---|---|---:|" + "---:|" * (len(keys) + 1)]
        for r in staged:
            st = r["stages_ms"]
            core = sum(st.get(k, 0.0) for k in ("h2d", "graph", "d2h", "voice2mesh", "postprocess"))
            lines.append(f"| {r['chain']} | {r['pipeline']} | {r['batch']} | "
                         + " | ".join(format_number(st[k]) if k in st else "-" for k in keys)
                         + f" | {format_number(core)} |")
    serving = doc.get("serving") or {}
    lines += ["", "## Serving: `cmp-face serve` on this device under benchmarks/serve_load.py", ""]
    if serving.get("status") != "measured":
        lines.append(f"Not run: {serving.get('reason', serving.get('status'))}.")
    else:
        lines += [f"Pipeline {serving['pipeline']}, `--device {serving['device']} --max-batch {serving['max_batch']}`, "
                  f"open loop, {serving['step_s']:g} s per rate, binary INT16 samples of the latency input, loopback "
                  f"(the load generator on the same host); server started in {serving['start_s']:g} s. Held: p99 < "
                  f"{serving['held_p99_ms']:g} ms, no error, >= 95 % answered. Highest rate held: "
                  f"**{serving['highest_rate_held'] if serving['highest_rate_held'] is not None else 'none'} /s**"
                  + (f" (stopped: {serving['stopped']})" if serving.get("stopped") else "") + ".", "",
                  "| offered /s | answered /s | p50 ms | p99 ms | errors | mean batch | held |",
                  "|---:|---:|---:|---:|---|---:|---|"]
        for r in serving["rows"]:
            mean = r["batch"]["mean_size"]
            lines.append(f"| {r['offered_per_s']:g} | {r['answered_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                         f"| {r['errors'] or '-'} | {'-' if mean is None else f'{mean:.2f}'} | "
                         f"{'yes' if r['held'] else 'no'} |")
    lines.append("")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipes = [p for p in PIPELINES if any(r["pipeline"] == p for r in doc["latency"])] or ["supervised"]
    fig, axes = plt.subplots(1, len(pipes), figsize=(6.5 * len(pipes), 4.5), squeeze=False, constrained_layout=True)
    for ax, pipe in zip(axes[0], pipes):
        rows = [r for r in doc["latency"] if r["pipeline"] == pipe]
        for chain in dict.fromkeys(r["chain"] for r in rows):
            pts = sorted((r["batch"], r["p50_ms"], r["p99_ms"]) for r in rows if r["chain"] == chain)
            ax.errorbar([q[0] for q in pts], [q[1] for q in pts], yerr=[[0] * len(pts), [q[2] - q[1] for q in pts]],
                        marker="o" if chain != "release-style" else "s", capsize=3, label=chain,
                        ls="--" if chain == "release-style" else "-")
        batches = sorted({r["batch"] for r in rows})
        ax.set_xscale("log", base=2)
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("batch (utterances)")
        ax.set_ylabel("ms per batch (p50; whisker to p99)")
        ax.set_yscale("log")
        ax.set_title(f"{pipe}: voice -> rendered image", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
        if rows:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no latency measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"cmp-deploy GPU check: {doc['machine_name']}, device {doc['device']}, {doc['date'][:10]}"
                 + (" (QUICK)" if doc["quick"] else ""), fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", type=Path, help="ONNX models folder (default: the synthetic models, built once "
                                                "into the cache; needs torch)")
    ap.add_argument("--release", type=Path, help="release-layout folder for the baseline (default: 'release' "
                                                 "beside --models, as the cache lays it out)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the same code on the CPU, for CI)")
    ap.add_argument("--audio", type=Path, default=DEFAULT_AUDIO if DEFAULT_AUDIO.is_dir() else None,
                    help="folder of .wav speech for parity (default: ../shared/data/voxceleb_wav when present, "
                         "else the built-in demo voices)")
    ap.add_argument("--utterances", type=int, default=7, help="at most this many parity utterances")
    ap.add_argument("--pipelines", default="supervised,unsupervised", help="comma-separated")
    ap.add_argument("--batches", default="1,8,32", help="latency batch sizes, comma-separated")
    ap.add_argument("--budget", type=float, default=230.0, help="seconds for the whole run (default 230)")
    ap.add_argument("--cell-seconds", type=float, default=None,
                    help="timing budget of one latency cell (default 2.5, 0.05 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny repetitions: a smoke test of the code path")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of the reference and the CPU rows")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<gpu-name>/)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the release-style baseline")
    ap.add_argument("--no-serving", action="store_true", help="skip the serving run (cmp-face serve under load)")
    args = ap.parse_args(argv)
    try:
        from runtime.runners import parse_device
        kind, index = parse_device(args.device)
    except CmpError as exc:
        ap.error(str(exc))
    if kind == "auto":
        ap.error("--device must be cuda, cuda:N or cpu")
    args.device = "cpu" if kind == "cpu" else f"cuda:{index}"
    args.pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    if not args.pipelines or any(p not in PIPELINES for p in args.pipelines):
        ap.error(f"--pipelines: choose from {', '.join(PIPELINES)}")
    try:
        args.batches = sorted({int(b) for b in args.batches.split(",")})
    except ValueError:
        ap.error("--batches: comma-separated positive integers")
    if not args.batches or min(args.batches) < 1:
        ap.error("--batches: comma-separated positive integers")
    if args.budget <= RESERVE_S:
        ap.error(f"--budget must exceed {RESERVE_S:g} s (kept for writing the results)")
    if args.utterances < 1:
        ap.error("--utterances must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = Deadline(args.budget)
    from tqdm import tqdm

    cores = _machine.available_cores()
    dry_cpu = args.device == "cpu"
    gpu = None if dry_cpu else _machine.gpu_name()
    name = _machine.machine_name(cores, gpu)
    out = results_folder(args.out, name, full_run=not args.quick)
    if args.models is None:
        from export.cache import synthetic_models
        args.models = synthetic_models(progress=lambda m: print(f"  {m}", flush=True))
    models = args.models.resolve()
    release = (args.release or models.parent / "release").resolve()
    untrained = _machine.untrained_models(models)

    cell_s = args.cell_seconds if args.cell_seconds is not None else (0.05 if args.quick else 2.5)
    # The first call of every cell is made (and timed) before these: it is the warm-up that counts.
    timing = Budget(warmup=0, min_reps=2, max_reps=20, seconds=cell_s) if args.quick else \
        Budget(warmup=1, min_reps=10, max_reps=400, seconds=cell_s)
    preload = "not needed (--device cpu)" if dry_cpu else preload_cuda_libraries()
    voices, voices_desc = load_voices(args.audio, args.utterances, args.quick)
    x_lat_name, x_lat = voices[0]
    configs = plan_configs(args.device)
    doc = {
        "schema": 1, "machine_name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_check.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "device": args.device, "quick": args.quick, "budget_s": args.budget, "elapsed_s": 0.0, "stopped": None,
        "machine": {"cpu": _machine.cpu_model(), "logical_cpus": os.cpu_count(), "available_cores": cores,
                    "ram_gib": _machine.ram_gib(), "os": platform.platform(), "gpu": gpu},
        "versions": _machine.versions(), "git": _machine.git_revision(), "models": str(models), "untrained": untrained,
        "cuda_preload": preload, "onnxruntime": onnxruntime_info(),
        "inputs": {"parity": voices_desc,
                   "latency": f"{x_lat_name}, {len(x_lat) / SR:.2f} s"},
        "reference": {"backend": "onnxruntime", "device": "cpu", "precision": "fp32",
                      "stages": "numpy log-mel (VAD on) -> encoder -> decoder", "voice2mesh": "frontend='fused'"},
        "bars": {"base": PARITY_BARS, "why": BARS_WHY, "rule": BARS_RULE, "gain_step": GAIN_STEP,
                 "gain_trials": GAIN_TRIALS},
        "configs": [], "baseline": {"status": "pending", "reason": None, "device": args.device},
        "latency": [], "latency_not_run": [], "serving": {"status": "pending"},
    }

    def save(png: bool = False) -> None:
        doc["configs"] = [c.as_dict() for c in configs]
        doc["elapsed_s"] = round(deadline.spent(), 1)
        write_results(out, "gpu_check", doc, markdown(doc), plot if png else None)

    def out_of_time() -> str:
        doc["stopped"] = doc["stopped"] or f"time budget of {args.budget:g} s spent after {deadline.spent():.0f} s"
        return f"time budget of {args.budget:g} s spent"

    steps = 2 + len(configs) + len(args.pipelines) * len(args.batches) * (len(configs) + 1)
    bar = tqdm(total=steps, desc="gpu check", unit="step", dynamic_ncols=True, disable=None)
    refs: dict[str, Reference] = {}
    base: ReleaseOnDevice | None = None
    try:
        bar.set_postfix_str("CPU FP32 reference")
        for pipe in args.pipelines:
            refs[pipe] = reference(models, pipe, voices, args.threads)
            doc["reference"].setdefault("decoder_gain", {})[pipe] = refs[pipe].gain
        bar.update(1)

        # --- parity: every configuration, each either measured or not run with the reason
        for cfg in configs:
            bar.set_postfix_str(f"parity {cfg.id}")
            reason = probe(cfg, models, dry_cpu, deadline)
            if reason is None and deadline.left() < RESERVE_S + 10:
                reason = out_of_time()
            if reason is not None:
                cfg.not_run(reason)
                bar.update(1)
                continue
            from runtime import Predictor
            pipe = args.pipelines[0]
            try:
                for pipe in args.pipelines:
                    p = Predictor(models, pipe, backend=cfg.backend, device=cfg.device, precision=cfg.precision,
                                  frontend="fused", threads=args.threads if cfg.device == "cpu" else None,
                                  cuda_graph=cfg.cuda_graph)
                    cfg.predictors[pipe] = p
                    cfg.resolved = p.models.describe()
                    cfg.provider_options = cfg.provider_options or _provider_options(p)
                    try:
                        cfg.parity[pipe] = parity(p, refs[pipe], voices, cfg.precision)
                    except CmpError as exc:  # e.g. NaN outputs: a finding of this row, not a crash
                        cfg.parity[pipe] = {"error": str(exc), "ok": False}
                cfg.status = "measured"
            except CmpError as exc:  # the runtime's refusal (files, provider that did not start)
                cfg.not_run(f"{pipe}: {exc}")
            except Exception as exc:  # noqa: BLE001 - an ONNX Runtime/CUDA failure ends this row, not the run
                cfg.not_run(f"{pipe}: failed: {type(exc).__name__}: {str(exc)[:300]}")
            save()
            bar.update(1)

        # --- the baseline on the same device
        reason = "--no-baseline" if args.no_baseline else baseline_reason(args.device, release)
        if reason is None and deadline.left() < RESERVE_S + 10:
            reason = out_of_time()
        if reason is None:
            try:
                base = ReleaseOnDevice(release, args.device)
                doc["baseline"]["parity"] = {pipe: baseline_parity(base, pipe, refs[pipe], voices)
                                             for pipe in args.pipelines}
                doc["baseline"].update(status="measured", release=str(release))
            except Exception as exc:  # noqa: BLE001 - torch/CUDA failures are this row's result
                base, reason = None, f"the baseline failed: {type(exc).__name__}: {str(exc)[:300]}"
        if reason is not None:
            doc["baseline"].update(status="not run", reason=reason)

        # --- latency: the first measured configuration and the baseline first, for every pipeline and batch
        measured = [c for c in configs if c.status == "measured"]
        chains = [(c.id, c) for c in measured[:1]] + ([("release-style", None)] if base else []) + \
                 [(c.id, c) for c in measured[1:]]
        cells = [(pipe, b, cid, c) for rank in (0, 1) for pipe in args.pipelines for b in args.batches
                 for k, (cid, c) in enumerate(chains) if (k < 1 + bool(base)) == (rank == 0)]
        bar.total = bar.n + len(cells) + 1  # and the serving run
        bar.refresh()
        for pipe, batch, cid, cfg in cells:
            bar.set_postfix_str(f"latency {cid} {pipe} b{batch}")
            fn = base.chain(pipe, x_lat, batch) if cfg is None else ChainOurs(cfg.predictors[pipe], x_lat, batch)
            left = deadline.left() - RESERVE_S
            if left <= 0:
                doc["latency_not_run"].append({"chain": cid, "pipeline": pipe, "batch": batch,
                                               "reason": out_of_time()})
                bar.update(1)
                continue
            t0 = time.perf_counter()
            try:
                fn()  # first call outside the timing: it may allocate or build (cuDNN, CUDA graphs)
            except Exception as exc:  # noqa: BLE001 - e.g. Sim3DR not built, CUDA out of memory: this cell's result
                doc["latency_not_run"].append({"chain": cid, "pipeline": pipe, "batch": batch,
                                               "reason": f"failed: {type(exc).__name__}: {str(exc)[:300]}"})
                bar.update(1)
                continue
            one = time.perf_counter() - t0
            # Slow cells (the baseline at batch 32: seconds per call) get fewer repetitions, never under 3.
            reps = max(min(3, timing.min_reps), min(timing.min_reps, int(2 * timing.seconds / max(one, 1e-9))))
            cell = Budget(timing.warmup, reps, timing.max_reps, min(timing.seconds, left / 2))
            if one * (cell.warmup + cell.min_reps) > deadline.left() - RESERVE_S:
                doc["latency_not_run"].append({"chain": cid, "pipeline": pipe, "batch": batch,
                                               "reason": f"one call takes {one:.1f} s: does not fit the "
                                                         f"{deadline.left():.0f} s left of the time budget"})
                bar.update(1)
                continue
            s = measure(fn, cell)
            doc["latency"].append({"chain": cid, "pipeline": pipe, "batch": batch, "p50_ms": s.p50_ms,
                                   "p99_ms": s.p99_ms, "mean_ms": s.mean_ms, "min_ms": s.min_ms, "n": s.n,
                                   "first_call_ms": one * 1e3,
                                   "stages_ms": fn.stages_ms() if isinstance(fn, ChainOurs) else None})
            save()
            bar.update(1)

        # --- serving: the server on this device under the load test, with what is left
        bar.set_postfix_str("serving")
        left = deadline.left() - RESERVE_S
        pipe = args.pipelines[0]
        if args.no_serving:
            doc["serving"] = {"status": "not run", "reason": "--no-serving"}
        elif left < (5.0 if args.quick else SERVE_S / 2):
            doc["serving"] = {"status": "not run", "reason": out_of_time()}
        else:
            for cfg in configs:  # the server opens its own sessions on the device
                for p in cfg.predictors.values():
                    p.close()
                cfg.predictors.clear()
            try:
                doc["serving"] = serving_run(models, args.device, pipe, x_lat, args.quick, min(left, SERVE_S))
            except Exception as exc:  # noqa: BLE001 - a server that did not start is this step's result
                doc["serving"] = {"status": "not run", "reason": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
        save()
        bar.update(1)
    except KeyboardInterrupt:
        doc["stopped"] = "interrupted (SIGINT): results up to that point"
    finally:
        bar.close()
        for cfg in configs:
            for p in cfg.predictors.values():
                p.close()
        save(png=True)
    print(f"\nwrote {', '.join(str(out / n) for n in NAMES)} in {deadline.spent():.0f} s", flush=True)
    bad = [f"{c.id} {pipe}" for c in configs for pipe, r in c.parity.items() if not r.get("ok")]
    bad += [f"release-style {pipe}" for pipe, r in doc["baseline"].get("parity", {}).items() if not r["ok"]]
    print(markdown(doc).split("## Not run")[0])
    if bad:
        print(f"parity FAILED: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
