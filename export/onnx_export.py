"""Export the release's networks to ONNX and verify every file against PyTorch with ONNX Runtime.

Writes into a models folder::

    encoder.onnx                fbank (B, 64, T) -> embedding (B, 64), L2-normalised
    decoder_supervised.onnx     embedding -> params (B, 51), vertices (B, N, 3)
    decoder_unsupervised.onnx   embedding -> image, params (B, 102), pose_R, pose_offset,
                                vertices (aligned, image frame), vertices_frontal
    triangles.npy               (M, 3) int32, 0-based
    models.json                 what was exported from what, and the verification errors
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from export.checkpoints import load_release
from export.models import EMBED_DIM, SUPERVISED_OUTPUTS, UNSUPERVISED_OUTPUTS
from export.progress import step
from export.synthetic import WARNING, read_manifest
from runtime.errors import CheckpointError, CmpError
from runtime.release_files import ReleaseFolder
from runtime.models_folder import (FORMAT, PIPELINES, TRIANGLES, file_record, graphs, remove_reduced_precision_files,
                                   write_manifest)

OPSET = 18
DEFAULT_TOLERANCE = 1e-4
# Optional real data the export verifies on besides random inputs (a user's clone has none).
VERIFY_FBANKS_ENV = "CMP_DEPLOY_VERIFY_FBANKS"
VERIFY_AUDIO_ENV = "CMP_DEPLOY_VERIFY_AUDIO"
OUTPUT_NAMES = {"supervised": SUPERVISED_OUTPUTS, "unsupervised": UNSUPERVISED_OUTPUTS}


class _TorchvisionNotes(logging.Filter):
    """torch.onnx's op registry logs one warning per torchvision op (nms, roi_align, ...) it
    skips when torchvision is not installed; our models use none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextlib.contextmanager
def _no_torchvision_notes():
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    notes = _TorchvisionNotes()
    logger.addFilter(notes)
    try:
        yield
    finally:
        logger.removeFilter(notes)


@contextlib.contextmanager
def _interrupts_stay_interrupts():
    """torch.onnx wraps whatever stops it in a TorchExportError, a Ctrl-C too (seen as the
    AttributeError of a module half imported when it came): remember a SIGINT that arrives
    meanwhile and end as the KeyboardInterrupt it was."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    seen: list[int] = []

    def on_sigint(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except BaseException:
        if seen:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
            output_names: tuple[str, ...], dynamic: dict[int, torch.export.Dim],
            metadata: dict[str, str]) -> None:
    """torch.onnx (dynamo) export with dynamic axes, then metadata and the ONNX checker."""
    import onnx

    captured = io.StringIO()
    with (_interrupts_stay_interrupts(), warnings.catch_warnings(), contextlib.redirect_stdout(captured),
          _no_torchvision_notes()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), None, input_names=[input_name],
                                    output_names=list(output_names), dynamic_shapes=[dynamic],
                                    opset_version=OPSET, dynamo=True, external_data=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "cmp-deploy"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def relative_error(actual: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max abs reference)."""
    abs_err = float(np.max(np.abs(actual.astype(np.float64) - reference.astype(np.float64))))
    scale = float(np.max(np.abs(reference)))
    return abs_err, abs_err / scale if scale > 0 else abs_err


class VerificationError(CmpError):
    """An exported model does not reproduce PyTorch within the tolerance."""


@dataclass
class Check:
    model: str
    inputs: str
    output: str
    max_abs: float
    max_rel: float
    float32_floor: float  # PyTorch float32 vs float64 on the same input: the noise floor
    error: float          # what was compared: max_rel, or max_abs for absolute checks
    passed_by: str        # "tolerance", or "float32 floor" (within twice PyTorch's own error)


class Verifier:
    """Runs an ONNX file and its PyTorch module on the same inputs and records the errors."""

    def __init__(self, tolerance: float, progress: Callable[[str], None]) -> None:
        self.tolerance = tolerance
        self.progress = progress
        self.checks: list[Check] = []
        self._sessions: dict[Path, object] = {}         # one ONNX Runtime session per file
        self._float64: dict[int, nn.Module] = {}        # one float64 copy per PyTorch module

    def run(self, path: Path, feeds: dict[str, np.ndarray],
            outputs: tuple[str, ...] | None = None) -> list[np.ndarray]:
        """Run an ONNX file on the CPU provider (its session is opened once)."""
        import onnxruntime as ort

        if path not in self._sessions:
            self._sessions[path] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return self._sessions[path].run(list(outputs) if outputs else None, feeds)

    def record(self, model: str, label: str, name: str, got: np.ndarray, want: np.ndarray,
               floor: float = 0.0, absolute: bool = False) -> None:
        """Check one output; ``absolute`` compares max abs error (not relative) to the tolerance."""
        if got.shape != want.shape:
            raise VerificationError(f"{model}:{name} on {label}: shape {got.shape} vs reference {want.shape}")
        abs_err, rel_err = relative_error(got, want)
        self.progress(f"  verify {model:<26} {label[:30]:<30} {name:<16} max abs {abs_err:.1e}  "
                      f"rel {rel_err:.1e}" + (f"  (fp32 floor {floor:.1e})" if floor else ""))
        error = abs_err if absolute else rel_err
        # Pass within the tolerance, or, where PyTorch's own float32 result is that far from
        # float64 (a network that amplifies rounding), within twice PyTorch's own error.
        if not (error <= self.tolerance or error <= 2 * floor):
            raise VerificationError(f"{model}:{name} differs from the reference on {label}: max "
                                    f"{'absolute' if absolute else 'relative'} error {error:.3e} > "
                                    f"tolerance {self.tolerance:.0e}" + (f" (float32 noise floor {floor:.1e})" if floor else ""))
        passed_by = "tolerance" if error <= self.tolerance else "float32 floor"
        self.checks.append(Check(model, label, name, abs_err, rel_err, floor, error, passed_by))

    def summary(self) -> str:
        """The rule each check passed by, in one line."""
        by_tol = [c for c in self.checks if c.passed_by == "tolerance"]
        by_floor = [c for c in self.checks if c.passed_by != "tolerance"]
        parts = [f"{len(by_tol)} within the tolerance {self.tolerance:.0e}"
                 + (f" (largest error {max(c.error for c in by_tol):.2e})" if by_tol else "")]
        if by_floor:
            worst = max(by_floor, key=lambda c: c.error / c.float32_floor)
            parts.append(f"{len(by_floor)} within twice PyTorch's own float32 error (largest {worst.error:.2e} "
                         f"against a float32 floor of {worst.float32_floor:.2e}, {worst.model} {worst.output})")
        return f"verified {len(self.checks)} outputs against their references: " + ", ".join(parts)

    def compare(self, path: Path, module: nn.Module, x: torch.Tensor, input_name: str,
                output_names: tuple[str, ...], label: str) -> None:
        """ONNX Runtime against the PyTorch module (float32, with its float64 noise floor)."""
        got = self.run(path, {input_name: x.numpy()}, output_names)
        if id(module) not in self._float64:
            self._float64[id(module)] = copy.deepcopy(module).double()
        with torch.no_grad():
            want = module(x)
            exact = self._float64[id(module)](x.double())
        want = want if isinstance(want, tuple) else (want,)
        exact = exact if isinstance(exact, tuple) else (exact,)
        for name, a, b, c in zip(output_names, got, want, exact):
            floor = relative_error(b.numpy(), c.numpy())[1]
            self.record(path.name, label, name, a, b.numpy(), floor)


def _real_fbanks(folder: Path | None) -> list[tuple[str, np.ndarray]]:
    if folder is None or not folder.is_dir():
        return []
    return [(p.name, np.load(p).astype(np.float32)) for p in sorted(folder.glob("*.npy"))]


def _real_voices(folder: Path | None) -> list[tuple[str, np.ndarray]]:
    """Speech after the release's VAD, as the frontend graph receives it."""
    from runtime.audio import load_audio
    from runtime.demo_signal import demo_voice
    from runtime.vad import remove_silence

    voices = [("demo voice 6 s", remove_silence(demo_voice(6.0)))]
    if folder is not None and folder.is_dir():
        voices += [(p.name, remove_silence(load_audio(p))) for p in sorted(folder.glob("*.wav"))]
    return voices


def default_real_audio() -> Path | None:
    """Real speech recordings to verify the frontend graphs on: the folder named by
    ``$CMP_DEPLOY_VERIFY_AUDIO`` (``.wav`` files), if set and present."""
    return _env_folder(VERIFY_AUDIO_ENV)


def _env_folder(name: str) -> Path | None:
    folder = os.environ.get(name)
    return Path(folder) if folder and Path(folder).is_dir() else None


def export_voice_graphs(out_dir: Path, pipelines: tuple[str, ...], meta: dict[str, str], verifier: Verifier,
                        real_audio: Path | None, progress: Callable[[str], None]) -> None:
    """``frontend.onnx`` (samples -> fbank) and ``voice2mesh_<pipeline>.onnx`` (samples -> mesh),
    verified against the numpy frontend and against the separate graphs chained."""
    import onnx

    from runtime.frontend_graph import build_frontend, fuse_voice2mesh
    from runtime.fbank import log_mel, normalise

    path = out_dir / "frontend.onnx"
    step(progress, f"[frontend] building and verifying {path.name}")
    frontend = build_frontend(OPSET)
    onnx.helper.set_model_props(frontend, meta | {"pipeline": "frontend"})
    onnx.save(frontend, str(path))
    voices = _real_voices(real_audio)
    for label, samples in voices:
        got = verifier.run(path, {"samples": samples[None].astype(np.float32)})[0]
        verifier.record(path.name, label, "fbank", got[0].T, normalise(log_mel(samples)), absolute=True)

    encoder = onnx.load(str(out_dir / "encoder.onnx"))
    for pipeline in pipelines:
        decoder_path = out_dir / f"decoder_{pipeline}.onnx"
        path = out_dir / f"voice2mesh_{pipeline}.onnx"
        step(progress, f"[{pipeline}] fusing and verifying {path.name}")
        onnx.save(fuse_voice2mesh(frontend, encoder, onnx.load(str(decoder_path))), str(path))
        names = ("embedding",) + OUTPUT_NAMES[pipeline]
        for label, samples in voices[:2]:
            fused = verifier.run(path, {"samples": samples[None].astype(np.float32)}, names)
            fbank = verifier.run(out_dir / "frontend.onnx", {"samples": samples[None].astype(np.float32)})[0]
            embedding = verifier.run(out_dir / "encoder.onnx", {"fbank": fbank})[0]
            separate = [embedding] + verifier.run(decoder_path, {"embedding": embedding}, OUTPUT_NAMES[pipeline])
            for name, a, b in zip(names, fused, separate):
                verifier.record(path.name, label, name, a, b)


def export_steps(pipelines: tuple[str, ...]) -> int:
    """How many ``step`` messages :func:`export_release` prints (for a progress bar)."""
    return 3 + 4 * len(pipelines)  # encoder export + verify, frontend; per pipeline: load, export, verify, fuse


def default_real_inputs() -> Path | None:
    """Real (T, 64) fbanks to verify on (e.g. the release's preprocessed features): the folder named
    by ``$CMP_DEPLOY_VERIFY_FBANKS``, if set and present. Random inputs are always checked."""
    return _env_folder(VERIFY_FBANKS_ENV)


def export_release(release: str | Path, out_dir: str | Path, pipelines: tuple[str, ...] = PIPELINES,
                   epoch: str | int | None = None, real_inputs: Path | None = None,
                   tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                   progress: Callable[[str], None] = print, real_audio: Path | None = None) -> dict:
    """Export and verify the chosen pipelines of a release-layout folder into ``out_dir``; return the
    manifest. All or nothing: the files are made in a hidden folder inside ``out_dir`` and moved into
    place once every one is verified (an interrupted export leaves the folder as it was)."""
    for pipeline in pipelines:  # a missing release file is reported before any work starts
        ReleaseFolder.locate(release, pipeline, epoch)
    final = Path(out_dir)
    created = not final.exists()
    final.mkdir(parents=True, exist_ok=True)
    stage = final / f".export-{os.getpid()}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    done = False
    try:
        manifest = _export_files(Path(release), stage, pipelines, epoch, real_inputs, tolerance, seed, progress,
                                 real_audio)
        # FP16/INT8 files of an earlier export were made from other FP32 files: remove them with the
        # manifest that listed them, so no name lookup can find them (cmp-face calibrate remakes them).
        stale = remove_reduced_precision_files(final)
        if stale:
            progress(f"removed the reduced-precision files of an earlier export: {', '.join(stale)}")
        for name in manifest["files"]:
            os.replace(stage / name, final / name)  # a rename keeps the mtime the manifest recorded
        write_manifest(final, manifest)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not done and created:
            with contextlib.suppress(OSError):
                final.rmdir()
    progress(f"wrote {final}")
    return manifest


def _export_files(release: Path, out_dir: Path, pipelines: tuple[str, ...], epoch: str | int | None,
                  real_inputs: Path | None, tolerance: float, seed: int, progress: Callable[[str], None],
                  real_audio: Path | None) -> dict:
    """The files of a models folder, written and verified in ``out_dir``; their manifest (not written)."""
    import onnx

    synthetic = read_manifest(release)
    if synthetic:
        progress(f"NOTE: {release} is a synthetic pack. {WARNING}.")
    verifier = Verifier(tolerance, progress)
    rng = torch.Generator().manual_seed(seed)
    real = _real_fbanks(real_inputs)
    if not real:
        progress("  (no real inputs given: verifying on random inputs only)")
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=1 << 20)
    manifest: dict = {"format": FORMAT, "synthetic": bool(synthetic), "pipelines": [],
                      "warning": WARNING if synthetic else None, "opset": OPSET,
                      "torch": torch.__version__, "onnx": onnx.__version__, "sources": {}, "files": {}}

    encoder_done = False
    for pipeline in pipelines:
        started = time.perf_counter()
        step(progress, f"[{pipeline}] loading {release}")
        loaded = load_release(release, pipeline, epoch)
        hashes = loaded.folder.hashes()
        manifest["sources"].update(hashes)
        n_vertices = int(loaded.decoder.morphable.n_vertices)
        base_meta = {"source": "synthetic" if synthetic else "release", "untrained": str(bool(synthetic)).lower(),
                     "n_vertices": str(n_vertices), "cmp_deploy_format": str(FORMAT)}

        if not encoder_done:
            path = out_dir / "encoder.onnx"
            step(progress, f"[encoder] exporting {path.name}")
            enc_meta = base_meta | {"pipeline": "encoder", "source_files": json.dumps(
                {k: v for k, v in hashes.items() if k.endswith("voice_embedding.pth")})}
            _export(loaded.encoder, torch.randn(2, 64, 1000, generator=rng), path, "fbank", ("embedding",),
                    {0: batch, 2: frames}, enc_meta)
            cases = [("random B=2 T=1000", torch.randn(2, 64, 1000, generator=rng)),
                     ("random B=3 T=317", torch.randn(3, 64, 317, generator=rng)),
                     ("random B=1 T=1751", torch.randn(1, 64, 1751, generator=rng))]
            cases += [(f"real {name}", torch.from_numpy(fb.T[None].copy())) for name, fb in real]
            step(progress, f"[encoder] verifying {path.name} against PyTorch on {len(cases)} inputs")
            for label, x in cases:
                verifier.compare(path, loaded.encoder, x, "fbank", ("embedding",), label)
            triangles = loaded.triangles
            np.save(out_dir / TRIANGLES, triangles)
            encoder_done = True
        elif not np.array_equal(triangles, loaded.triangles):
            raise CheckpointError("the two pipelines use different triangle files")

        path = out_dir / f"decoder_{pipeline}.onnx"
        step(progress, f"[{pipeline}] exporting {path.name}")
        names = OUTPUT_NAMES[pipeline]
        meta = base_meta | {"pipeline": pipeline, "outputs": ",".join(names), "source_files": json.dumps(hashes)}
        unit = nn.functional.normalize(torch.randn(2, EMBED_DIM, generator=rng), dim=1)
        _export(loaded.decoder, unit, path, "embedding", names, {0: batch}, meta)
        cases = [("random unit B=4", nn.functional.normalize(torch.randn(4, EMBED_DIM, generator=rng), dim=1))]
        if real:
            with torch.no_grad():
                emb = torch.cat([loaded.encoder(torch.from_numpy(fb.T[None].copy())) for _, fb in real])
            cases.append((f"real embeddings B={len(real)}", emb))
        step(progress, f"[{pipeline}] verifying {path.name} against PyTorch on {len(cases)} input batches")
        for label, x in cases:
            verifier.compare(path, loaded.decoder, x, "embedding", names, label)
        manifest["pipelines"].append(pipeline)
        manifest["n_vertices"] = n_vertices
        progress(f"[{pipeline}] done in {time.perf_counter() - started:.1f} s")

    export_voice_graphs(out_dir, tuple(manifest["pipelines"]), base_meta, verifier, real_audio, progress)
    written = [f"{g}.onnx" for g in graphs(manifest["pipelines"])] + [TRIANGLES]
    for name in sorted(written):
        manifest["files"][name] = file_record(out_dir / name)
    manifest["verification"] = {"tolerance": tolerance, "real_inputs": len(real),
                                "max_rel": max(c.max_rel for c in verifier.checks),
                                "checks": [c.__dict__ for c in verifier.checks]}
    progress(verifier.summary())
    return manifest
