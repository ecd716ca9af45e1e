"""One backend's measurements, in a process of its own (so that peak memory and imported
libraries are the backend's alone). Started by ``benchmarks/latency.py``:

    python benchmarks/worker.py SPEC.json RESULT.json

SPEC holds ``{"backend": Backend.as_dict(), "config": {...}}``; the thread environment
(OMP_NUM_THREADS, ...) is set by the parent before this process starts.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.timing import E2E_THROUGHPUT, FULL, QUICK, THROUGHPUT, Budget, measure  # noqa: E402

SR = 16000


class Recorder:
    def __init__(self, backend_id: str, budget: Budget) -> None:
        self.backend_id = backend_id
        self.budget = budget
        self.stages: dict[str, dict] = {}
        self.unavailable: dict[str, str] = {}
        self.throughput: list[dict] = []
        self.peak_batch1_mib: float | None = None

    def mark_batch1_done(self) -> None:
        """Peak RSS so far: everything up to here ran at batch 1 (ru_maxrss only grows)."""
        self.peak_batch1_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def stage(self, sid: str, what: str, fn: Callable[[], object], budget: Budget | None = None) -> None:
        stats = measure(fn, budget or self.budget)
        self.stages[sid] = {"what": what, **stats.as_dict()}
        print(f"  [{self.backend_id}] {sid:<32} p50 {stats.p50_ms:9.3f} ms  p90 {stats.p90_ms:9.3f}  "
              f"p99 {stats.p99_ms:9.3f}  mean {stats.mean_ms:9.3f}  (n={stats.n})", flush=True)

    def missing(self, sid: str, reason: str) -> None:
        self.unavailable[sid] = reason
        print(f"  [{self.backend_id}] {sid:<32} not measured: {reason}", flush=True)

    def rate(self, kind: str, pipeline: str, batch: int, seconds: float, fn: Callable[[], object],
             budget: Budget) -> None:
        stats = measure(fn, budget)
        ups = batch / (stats.p50_ms / 1e3)
        self.throughput.append({"kind": kind, "pipeline": pipeline, "batch": batch, "seconds": seconds,
                                "utt_per_s": ups, **stats.as_dict()})
        print(f"  [{self.backend_id}] {kind} {pipeline:<12} B={batch:<3} {seconds:>4g} s  "
              f"p50 {stats.p50_ms:9.2f} ms/batch  {ups:9.1f} utt/s  (n={stats.n})", flush=True)


# ----------------------------------------------------------------------------- inputs
def load_inputs(cfg: dict) -> dict:
    inp = cfg["inputs"]
    out = {"samples": np.load(inp["samples"]), "wav16": inp["wav16"], "wav44": inp["wav44"],
           "by_seconds": {float(s): np.load(p) for s, p in inp["by_seconds"].items()}}
    return out


def fbank_of(samples: np.ndarray) -> np.ndarray:
    """Encoder input for throughput: the utterance's fbank without VAD (its length is kept)."""
    from runtime.fbank import log_mel, normalise
    return normalise(log_mel(samples))


# ----------------------------------------------------------------------------- ours
def run_ours(backend: dict, cfg: dict, rec: Recorder, inputs: dict) -> dict:
    import onnxruntime as ort

    from runtime.audio import load_audio
    from runtime.fbank import log_mel, normalise
    from runtime.predictor import Predictor
    from runtime.render import render_frontal, render_overlap
    from runtime.runners.loaders import open_session
    from runtime.runners.ort_runner import OrtRunner
    from runtime.vad import remove_silence

    threads = cfg["threads"]
    models = Path(cfg["models"])
    providers = backend["providers"]
    spinning = bool(backend["spinning"])  # None: the runtime's default (off)
    simple = (backend["precision"] == "fp32"
              and providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider"))
    device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
    fused = backend["frontend"] == "fused"
    frontend = "fused" if fused else "numpy"

    def sess(path):
        """Other files or provider options: the runtime's session settings, this backend's files."""
        if not backend["provider_options"] or backend["provider_options"] == [{}]:
            return open_session(Path(path), providers, threads, spinning)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        return ort.InferenceSession(path, so, providers=providers, provider_options=backend["provider_options"])
    preds = {}
    for pipeline in ("supervised", "unsupervised"):
        if simple:  # the shipped path, exactly as a user opens it
            preds[pipeline] = Predictor(models, pipeline, device=device, threads=threads, frontend=frontend,
                                        spinning=spinning)
        else:       # other files / options: the same Predictor with this backend's sessions
            preds[pipeline] = Predictor(models, pipeline, device="cpu", threads=threads, frontend=frontend,
                                        spinning=spinning)
            for graph, attr in (("encoder", "encoder"), (f"decoder_{pipeline}", "decoder")):
                path = backend["files"][graph]
                setattr(preds[pipeline].models, attr, OrtRunner(sess(path), path, graph))
        got = preds[pipeline].models.encoder.session.get_providers()[0]
        if got != providers[0]:
            raise RuntimeError(f"encoder session runs on {got}, not {providers[0]}")
    sup, uns = preds["supervised"], preds["unsupervised"]
    tri = sup.triangles
    x = inputs["samples"]

    # --- frontend stages (host code, the same for every ONNX Runtime backend)
    rec.stage("decode_wav16k_mono", "runtime.audio.load_audio: own WAV reader, 16 kHz mono int16 passthrough",
              lambda: load_audio(inputs["wav16"]))
    rec.stage("decode_wav44k_stereo", "runtime.audio.load_audio: 44.1 kHz stereo WAV -> mono, soxr HQ "
              "resample to 16 kHz, rint", lambda: load_audio(inputs["wav44"]))
    rec.stage("vad", "runtime.vad.remove_silence (the release's collector, webrtcvad C extension)",
              lambda: remove_silence(x))
    voiced = remove_silence(x)
    fb = normalise(log_mel(voiced))
    if fused:
        front = sess(backend["files"]["frontend"])
        wave = {"samples": voiced.astype(np.float32)[None]}
        rec.stage("logmel", "frontend.onnx on ONNX Runtime: log-mel + normalise (int16 values as float32)",
                  lambda: front.run(None, wave))
    else:
        rec.stage("logmel", "runtime.fbank: vectorised log-mel (block FFT) + normalise",
                  lambda: normalise(log_mel(voiced)))
    feed = {"fbank": np.ascontiguousarray(fb.T[None])}
    enc = sup.models.encoder.session  # the raw ONNX Runtime session: stage timings without our checks
    rec.stage("encoder", f"encoder.onnx, batch 1, T={fb.shape[0]}",
              lambda: enc.run(["embedding"], feed))
    emb = enc.run(["embedding"], feed)[0]
    dsup, duns = sup.models.decoder.session, uns.models.decoder.session
    rec.stage("decoder_supervised", "decoder_supervised.onnx: heads + 3DMM mesh reconstruction (inside the graph)",
              lambda: dsup.run(None, {"embedding": emb}))
    rec.stage("decoder_unsupervised", "decoder_unsupervised.onnx: generator + upsample + image3D + pose net "
              "+ 3DMM mesh + alignment (inside the graph)", lambda: duns.run(None, {"embedding": emb}))
    for pipe in ("supervised", "unsupervised"):
        rec.missing(f"mesh_{pipe}", f"inside decoder_{pipe}.onnx (not a separate step here)")

    r_sup = sup.predict(x, sample_rate=SR)
    r_uns = uns.predict(x, sample_rate=SR)
    size = cfg["render_size"]
    rec.stage(f"render_{size}", f"runtime.render.render_frontal: lit {len(r_sup.vertices)}-vertex mesh at "
              f"{size}x{size} (Sim3DR lighting + rasteriser, {threads} threads)",
              lambda: render_frontal(r_sup.vertices, tri, size))
    rec.stage("render_overlap_120", "runtime.render.render_overlap: the release's 120x120 _overlap.png",
              lambda: render_overlap(r_uns.vertices, tri, r_uns.face_image))

    # --- end to end, measured as a whole (int16 samples in memory -> mesh / image)
    inside = "VAD, voice2mesh graph (log-mel + encoder + decoder), result" if fused else \
        "VAD, fbank, encoder, decoder, result"
    rec.stage("e2e_voice2mesh_supervised", f"Predictor.predict(samples): {inside}",
              lambda: sup.predict(x, sample_rate=SR))
    rec.stage("e2e_voice2mesh_unsupervised", f"Predictor.predict(samples): {inside}",
              lambda: uns.predict(x, sample_rate=SR))
    rec.stage("e2e_voice2image_supervised", f"Predictor.predict(samples).render(): + lit {size}x{size} render",
              lambda: sup.predict(x, sample_rate=SR).render())
    rec.stage("e2e_voice2image_unsupervised", "Predictor.predict(samples).render(): + 120x120 overlap render",
              lambda: uns.predict(x, sample_rate=SR).render())

    parity = {"embedding": emb[0], "vertices_supervised": r_sup.vertices,
              "vertices_unsupervised": r_uns.vertices, "face_image": r_uns.face_image,
              f"render_{size}": render_frontal(r_sup.vertices, tri, size),
              "render_overlap_120": r_uns.render()}

    # --- throughput
    rec.mark_batch1_done()
    tb = QUICK if cfg["quick"] else THROUGHPUT
    etb = QUICK if cfg["quick"] else E2E_THROUGHPUT
    for pipe, pred in preds.items():
        for seconds in cfg["seconds"]:
            fbs = fbank_of(inputs["by_seconds"][seconds])
            for batch in cfg["batches"]:
                batch_fb = [fbs] * batch
                rec.rate("models", pipe, batch, seconds,
                         lambda p=pred, b=batch_fb: p.decode(p.embed(b)), tb)
    for pipe, pred in preds.items():
        for seconds in cfg["e2e_seconds"]:
            s = inputs["by_seconds"][seconds]
            for batch in cfg["e2e_batches"]:
                rec.rate("e2e", pipe, batch, seconds,
                         lambda p=pred, b=[s] * batch: p.predict_batch(b, sample_rate=SR), etb)

    import Sim3DR
    info = {"ort_intra_op_threads": threads, "ort_inter_op_threads": 1,
            "sim3dr_threads": Sim3DR.resolve_num_threads(),
            "providers": sup.models.encoder.session.get_providers(),
            "ort_spinning": spinning}
    return {"parity": parity, "threads": info}


# ----------------------------------------------------------------------------- baseline
def run_baseline(backend: dict, cfg: dict, rec: Recorder, inputs: dict) -> dict:
    import torch

    from benchmarks import release_style as rs

    threads = cfg["threads"]
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = rs.ReleaseStyle(backend["files"]["release"])
    tri = model.triangles
    x = inputs["samples"]

    rec.stage("decode_wav16k_mono", "stdlib wave reader: the release takes 16 kHz mono 16-bit PCM only",
              lambda: rs.read_wave(inputs["wav16"]))
    rec.missing("decode_wav44k_stereo", "the release has no resampling: it takes 16 kHz mono input only")
    rec.stage("vad", "runtime.vad.remove_silence = the release's collector (its tmp/ WAV round trip not timed)",
              lambda: rs.remove_silence(x))
    voiced = rs.remove_silence(x)
    rec.stage("logmel", "release mfcc.py: filterbank loops + per-frame Python loop (rfft per frame) + get_fbank",
              lambda: rs.get_fbank(voiced))
    fb = rs.get_fbank(voiced)
    rec.stage("encoder", f"PyTorch eager VoiceEmbedNet, batch 1, T={fb.shape[0]}",
              lambda: model.embed(fb[None]))
    emb = model.embed(fb[None])
    rec.stage("decoder_supervised", "PyTorch eager heads + numpy 3DMM mesh",
              lambda: model.mesh_supervised(model.supervised_params(emb)))

    def dec_unsup():
        img, out, pose = model.unsupervised_outputs(emb)
        return model.mesh_unsupervised(out, pose)
    rec.stage("decoder_unsupervised", "PyTorch eager generator + F.interpolate + image3D + pose net, "
              "numpy 3DMM mesh + alignment", dec_unsup)
    p_sup = model.supervised_params(emb)
    img, out, pose = model.unsupervised_outputs(emb)
    rec.stage("mesh_supervised", "numpy float32 u + w_shp @ shape + w_exp @ exp, scaled",
              lambda: model.mesh_supervised(p_sup))
    rec.stage("mesh_unsupervised", "numpy 3DMM mesh + pose (R, offset) alignment, y flip",
              lambda: model.mesh_unsupervised(out, pose))

    v_sup = np.ascontiguousarray(model.mesh_supervised(p_sup)[0].T)
    aligned = np.ascontiguousarray(model.mesh_unsupervised(out, pose)[0][0].T)
    face = rs.display_image(img[0])
    size = cfg["render_size"]
    rec.stage(f"render_{size}", f"numpy lighting + plain single-threaded C++ rasteriser, {size}x{size}",
              lambda: rs.render_frontal_baseline(v_sup, tri, size))
    rec.stage("render_overlap_120", "numpy lighting + plain single-threaded C++ rasteriser over the 120x120 face",
              lambda: rs.render_lit_baseline(aligned, tri, face))

    rec.stage("e2e_voice2mesh_supervised", "VAD, per-frame log-mel, eager encoder + heads, numpy mesh",
              lambda: model.voice2mesh_supervised(x))
    rec.stage("e2e_voice2mesh_unsupervised", "VAD, per-frame log-mel, eager encoder + decoder nets, numpy mesh",
              lambda: model.voice2mesh_unsupervised(x))
    rec.stage("e2e_voice2image_supervised", f"voice -> mesh, + lit {size}x{size} baseline render",
              lambda: rs.render_frontal_baseline(np.ascontiguousarray(model.voice2mesh_supervised(x).T), tri, size))

    def v2i_unsup():
        im, al = model.voice2mesh_unsupervised(x)
        return rs.render_lit_baseline(np.ascontiguousarray(al.T), tri, rs.display_image(im))
    rec.stage("e2e_voice2image_unsupervised", "voice -> mesh, + 120x120 overlap baseline render", v2i_unsup)

    parity = {"embedding": emb.numpy().reshape(-1), "vertices_supervised": v_sup,
              "vertices_unsupervised": aligned, "face_image": face,
              f"render_{size}": rs.render_frontal_baseline(v_sup, tri, size),
              "render_overlap_120": rs.render_lit_baseline(aligned, tri, face)}

    # --- throughput (batched the way a user of the release would batch: stacked tensors)
    rec.mark_batch1_done()
    tb = QUICK if cfg["quick"] else THROUGHPUT
    etb = QUICK if cfg["quick"] else E2E_THROUGHPUT

    def models_sup(x3):
        return model.mesh_supervised(model.supervised_params(model.embed(x3)))

    def models_uns(x3):
        _, o, q = model.unsupervised_outputs(model.embed(x3))
        return model.mesh_unsupervised(o, q)
    fns = {"supervised": models_sup, "unsupervised": models_uns}
    for pipe, fn in fns.items():
        for seconds in cfg["seconds"]:
            fbs = fbank_of(inputs["by_seconds"][seconds])
            for batch in cfg["batches"]:
                x3 = np.ascontiguousarray(np.broadcast_to(fbs, (batch, *fbs.shape)))
                rec.rate("models", pipe, batch, seconds, lambda f=fn, a=x3: f(a), tb)
    for pipe, fn in fns.items():
        for seconds in cfg["e2e_seconds"]:
            s = inputs["by_seconds"][seconds]
            for batch in cfg["e2e_batches"]:
                def e2e(f=fn, s=s, b=batch):
                    feats = np.stack([rs.get_fbank(rs.remove_silence(s)) for _ in range(b)])
                    return f(feats)
                rec.rate("e2e", pipe, batch, seconds, e2e, etb)

    info = {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "rasterizer_threads": 1}
    return {"parity": parity, "threads": info}


# ----------------------------------------------------------------------------- main
def main(spec_path: str, result_path: str) -> int:
    t0 = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    backend, cfg = spec["backend"], spec["config"]
    rec = Recorder(backend["id"], QUICK if cfg["quick"] else FULL)
    inputs = load_inputs(cfg)
    print(f"[{backend['id']}] {backend['label']}: measuring (pid {os.getpid()})", flush=True)
    run = run_baseline if backend["kind"] == "baseline" else run_ours
    extra = run(backend, cfg, rec, inputs)
    parity_path = Path(result_path).with_suffix(".npz")
    np.savez(parity_path, **extra["parity"])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "backend": backend["id"],
        "stages": rec.stages,
        "unavailable": rec.unavailable,
        "throughput": rec.throughput,
        "peak_rss_mib": peak_kib / 1024.0,
        "peak_rss_batch1_mib": rec.peak_batch1_mib,
        "threads": {"env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                             "OPENBLAS_NUM_THREADS", "SIM3DR_NUM_THREADS")},
                    **extra["threads"]},
        "torch_imported": "torch" in sys.modules,
        "parity_file": str(parity_path),
        "wall_s": time.perf_counter() - t0,
    }
    Path(result_path).write_text(json.dumps(result, indent=1))
    print(f"[{backend['id']}] done in {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
