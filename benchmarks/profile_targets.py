"""Where the time goes on the three latency targets (the evidence behind benchmarks/NOTES.md).

    python benchmarks/profile_targets.py [--models DIR] [--threads N] [--reps 30]

1. voice -> mesh through ``Predictor`` stage by stage (its own ``timings``), with ONNX
   Runtime's intra-op thread spinning on and off, numpy and ONNX frontend;
2. ONNX Runtime's own profiler (``SessionOptions.enable_profiling``): time per operator type
   in the encoder and both decoders, batch 1;
3. the lit 512x512 render split into its steps (scene transform, lighting, normals,
   rasterisation with 1 and N threads; the release's numpy lighting and the plain baseline
   rasteriser for comparison).
Medians over ``--reps`` runs. Nothing is written except ORT's profile files in a temp dir.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def med(fn, reps: int) -> float:
    import numpy as np
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def session(path, threads: int, spinning: bool = False, profile_dir: str | None = None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / Path(path).stem)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def predictor_stages(models: Path, threads: int, reps: int) -> None:
    import numpy as np

    from runtime.demo_signal import demo_voice
    from runtime.predictor import Predictor

    x = demo_voice(6.0)
    print("\n1. Predictor.predict(6 s synthetic voice), median ms per stage (its own timings)")
    for pipe in ("supervised", "unsupervised"):
        for frontend in (["numpy", "onnx"] if (models / f"voice2mesh_{pipe}.onnx").is_file() else ["numpy"]):
            for spinning in (True, False):
                p = Predictor(models, pipe, device="cpu", threads=threads, frontend=frontend, spinning=spinning)
                for _ in range(3):
                    p.predict(x, sample_rate=16000)
                runs, walls = [], []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    r = p.predict(x, sample_rate=16000)
                    walls.append((time.perf_counter() - t0) * 1e3)
                    runs.append(r.timings)
                stages = {k: float(np.median([t.get(k, 0.0) for t in runs])) for k in runs[0] if k != "total"}
                print(f"  {pipe:<12} frontend={frontend:<5} spinning={'on ' if spinning else 'off'} "
                      f"total {np.median(walls):6.2f} ms = " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


def ort_profile(models: Path, threads: int, reps: int) -> None:
    import numpy as np

    from runtime.demo_signal import demo_voice
    from runtime.fbank import log_mel, normalise
    from runtime.vad import remove_silence

    fb = normalise(log_mel(remove_silence(demo_voice(6.0))))
    print("\n2. ONNX Runtime profiler, batch 1, share of node time by operator type")
    with tempfile.TemporaryDirectory() as tmp:
        enc = session(models / "encoder.onnx", threads)
        emb = enc.run(["embedding"], {"fbank": np.ascontiguousarray(fb.T[None])})[0]
        feeds = {"encoder": {"fbank": np.ascontiguousarray(fb.T[None])},
                 "decoder_supervised": {"embedding": emb}, "decoder_unsupervised": {"embedding": emb}}
        for name, feed in feeds.items():
            s = session(models / f"{name}.onnx", threads, profile_dir=tmp)
            for _ in range(reps):
                s.run(None, feed)
            events = json.loads(Path(s.end_profiling()).read_text())
            by_op, by_node = defaultdict(float), defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    by_op[e["args"]["op_name"]] += e["dur"]
                    by_node[e["name"][:-len("_kernel_time")]] += e["dur"]
            total = sum(by_op.values())
            top = sorted(by_op.items(), key=lambda kv: -kv[1])[:6]
            print(f"  {name:<22} {total / reps / 1e3:6.2f} ms in nodes: " +
                  ", ".join(f"{op} {100 * t / total:.0f}%" for op, t in top))
            nodes = sorted(by_node.items(), key=lambda kv: -kv[1])[:3]
            print(f"  {'':<22} top nodes: " + ", ".join(f"{n} {t / reps / 1e3:.2f} ms" for n, t in nodes))


def render_steps(models: Path, threads: int, reps: int) -> None:
    import numpy as np

    import Sim3DR
    from benchmarks.release_style import frontal_to_image, numpy_light
    from runtime.demo_signal import demo_voice
    from runtime.predictor import Predictor
    from runtime.render import render_frontal
    from Sim3DR.lighting import light_colors
    from Sim3DR.reference import rasterize_baseline

    r = Predictor(models, "supervised", device="cpu", threads=threads).predict(demo_voice(6.0), sample_rate=16000)
    v, t = frontal_to_image(r.vertices, 512), r.triangles
    bg = np.full((512, 512, 3), 48, np.uint8)
    normal = Sim3DR.get_normal(v, t)
    colors = light_colors(v, t)
    print(f"\n3. lit render of the {len(v)}-vertex mesh ({len(t)} triangles) at 512x512, median ms")
    rows = [
        ("runtime.render.render_frontal (all of it)", lambda: render_frontal(r.vertices, t, 512)),
        ("  scene transform (numpy, float64)", lambda: frontal_to_image(r.vertices, 512)),
        ("  background canvas", lambda: np.full((512, 512, 3), 48, np.uint8)),
        ("  Sim3DR.lighting.light_colors (all of it)", lambda: light_colors(v, t)),
        ("    of which get_normal (C++)", lambda: Sim3DR.get_normal(v, t)),
        ("  the release's numpy lighting (baseline)", lambda: numpy_light(v, t, normal)),
        ("  Sim3DR.rasterize, 1 thread", lambda: Sim3DR.rasterize(v, t, colors, bg.copy(), num_threads=1)),
        (f"  Sim3DR.rasterize, {threads} threads", lambda: Sim3DR.rasterize(v, t, colors, bg.copy(),
                                                                          num_threads=threads)),
        ("  rasterize_baseline (plain, 1 thread)", lambda: rasterize_baseline(v, t, colors, bg.copy())),
    ]
    for name, fn in rows:
        print(f"  {name:<46} {med(fn, reps):7.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SIM3DR_NUM_THREADS"):
        os.environ[var] = str(threads)
    if args.models is None:
        from export.cache import synthetic_models
        args.models = synthetic_models(progress=lambda m: None)
    print(f"models {args.models}, {threads} threads")
    predictor_stages(args.models, threads, args.reps)
    ort_profile(args.models, threads, args.reps)
    render_steps(args.models, threads, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
