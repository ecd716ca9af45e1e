"""Rasteriser speed: plain single-threaded baseline vs the fast (banded, threaded) path.

Renders a synthetic 53215-vertex face (the release mesh's vertex count) and, when
present, the real 38365-vertex BFM face from ../shared/data into 512x512 uint8 images
with per-vertex lit colours, checks that every image and depth buffer is identical, and
prints median / p90 milliseconds and the speed-up measured in the same run. Then times
the mesh writers (OBJ and PLY of a release-size mesh, random vertices), which used to be
a wall-clock assertion in the tests.

    python benchmarks/render_speed.py [--quick] [--threads N] [--size 512] [--reps 40]
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import Sim3DR  # noqa: E402
from Sim3DR.lighting import light_colors, render_lit  # noqa: E402
from Sim3DR.reference import light_colors_reference  # noqa: E402
from Sim3DR.reference import rasterize_baseline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bfm_3ddfa"
N_RELEASE = 53215


def synthetic_face(n_vertices: int = N_RELEASE, cols: int = 231):
    """A face-like height field with exactly ``n_vertices`` vertices on a grid of
    ``cols`` columns (last row partial), mapped from the square onto a disc (an oval
    face with a nose bump), x/y in [-1, 1], z toward the viewer. Returns (N,3), (M,3)."""
    rows_full, extra = divmod(n_vertices, cols)
    n_rows = rows_full + (1 if extra else 0)
    idx = np.arange(n_vertices)
    r, c = idx // cols, idx % cols
    a = c / (cols - 1) * 2 - 1
    b = r / (n_rows - 1) * 2 - 1
    x = a * np.sqrt(1 - b * b / 2)  # square -> disc
    y = b * np.sqrt(1 - a * a / 2)
    x = x * 0.8
    rr = np.clip(1 - (x / 0.8) ** 2 - y ** 2, 0, None)
    z = 0.5 * np.sqrt(rr) + 0.25 * np.exp(-((x / 0.12) ** 2 + ((y - 0.05) / 0.25) ** 2))
    verts = np.column_stack([x, y, z]).astype(np.float32)
    tris = []
    for row in range(n_rows - 1):
        width = min(cols, n_vertices - (row + 1) * cols)  # columns present in next row
        q = row * cols + np.arange(width - 1)
        tris.append(np.stack([q, q + cols, q + 1], 1))
        tris.append(np.stack([q + 1, q + cols, q + cols + 1], 1))
    return verts, np.concatenate(tris).astype(np.int32)


def real_face():
    if not (DATA / "ncc_code.npy").exists():
        return None
    v = np.load(DATA / "ncc_code.npy").T.astype(np.float32)
    with open(DATA / "tri.pkl", "rb") as f:
        t = np.ascontiguousarray(pickle.load(f).T, dtype=np.int32)
    return v, t


def to_image(v: np.ndarray, size: int) -> np.ndarray:
    """3DMM-style coordinates (y up) -> image coordinates filling ``size`` with a margin."""
    lo, hi = v.min(0), v.max(0)
    s = (size - 1) * 0.92 / max(hi[0] - lo[0], hi[1] - lo[1])
    out = np.empty_like(v)
    out[:, 0] = (v[:, 0] - (lo[0] + hi[0]) / 2) * s + (size - 1) / 2
    out[:, 1] = -(v[:, 1] - (lo[1] + hi[1]) / 2) * s + (size - 1) / 2
    out[:, 2] = (v[:, 2] - lo[2]) * s
    return out.astype(np.float32)


def timed_interleaved(fns, reps: int, warmup: int = 3):
    """Time every function ``reps`` times, round-robin, so that background load on the
    machine affects all of them alike. Returns one array of milliseconds per function."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [[] for _ in fns]
    for r in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            out[i].append((time.perf_counter() - t0) * 1e3)
        if (r + 1) % max(1, reps // 4) == 0:
            print(f"  ... {r + 1}/{reps} rounds", flush=True)
    return [np.array(o) for o in out]


def bench(name: str, v: np.ndarray, t: np.ndarray, size: int, reps: int, threads: int):
    print(f"\n[{name}] {len(v)} vertices, {len(t)} triangles, {size}x{size}", flush=True)
    colors = light_colors(v, t)
    bg = np.full((size, size, 3), 48, np.uint8)
    results = {}

    def run(kind, n=None):
        img, depth = bg.copy(), Sim3DR.new_depth_buffer(size, size)
        if kind == "baseline":
            rasterize_baseline(v, t, colors, img, depth_buffer=depth)
        else:
            Sim3DR.rasterize(v, t, colors, img, depth_buffer=depth, num_threads=n)
        return img, depth

    ref = run("baseline")
    cover = float((ref[0] != bg).any(axis=2).mean())
    print(f"  coverage {cover:.3f}", flush=True)
    configs = [("baseline (1 thread, plain loop)", "baseline", None),
               ("fast, 1 thread", "fast", 1), (f"fast, {threads} threads", "fast", threads)]
    for label, kind, n in configs:
        img, depth = run(kind, n)
        assert np.array_equal(img, ref[0]) and np.array_equal(depth, ref[1]), \
            f"{label}: result differs from the baseline"
    print("  all results identical to the baseline (image and depth buffer)", flush=True)
    times = timed_interleaved([lambda k=kind, n=n: run(k, n) for _, kind, n in configs], reps)
    for (label, _, _), ms in zip(configs, times):
        results[label] = ms
        print(f"  {label:34s} median {np.median(ms):7.2f} ms   p90 "
              f"{np.percentile(ms, 90):7.2f} ms   ({reps} runs)", flush=True)
    base = np.median(results[configs[0][0]])
    for label, _, _ in configs[1:]:
        print(f"  speed-up {label:25s} x{base / np.median(results[label]):.2f}", flush=True)

    # The whole renderer as the release runs it (numpy lighting + the single-threaded loop)
    # against ours (C++ normals and lighting + the threaded rasteriser), from the same vertices.
    def release_style():
        img = bg.copy()
        rasterize_baseline(v, t, light_colors_reference(v, t, normals=Sim3DR.get_normal(v, t)), img)
        return img

    def ours():
        return render_lit(v, t, bg, num_threads=threads)

    assert np.abs(release_style().astype(int) - ours().astype(int)).max() <= 1, "lit renders differ"
    full = timed_interleaved([release_style, ours], reps)
    print(f"  lit render, release-style        median {np.median(full[0]):7.2f} ms")
    print(f"  lit render, ours ({threads} threads)     median {np.median(full[1]):7.2f} ms   "
          f"speed-up x{np.median(full[0]) / np.median(full[1]):.2f}", flush=True)
    return base / np.median(results[configs[-1][0]]), np.median(full[0]) / np.median(full[1])


def bench_writers(reps: int) -> None:
    """OBJ and PLY of a release-size mesh (53215 vertices, 105840 triangles)."""
    from runtime.mesh_io import write_obj, write_ply

    rng = np.random.default_rng(2)
    v = (rng.standard_normal((N_RELEASE, 3)) * 1e5).astype(np.float32)
    t = rng.integers(0, N_RELEASE, (105840, 3)).astype(np.int32)
    print(f"\n[mesh writers] {len(v)} vertices, {len(t)} triangles", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        obj, ply = Path(tmp) / "m.obj", Path(tmp) / "m.ply"
        times = timed_interleaved([lambda: write_obj(obj, v, t), lambda: write_ply(ply, v, t)],
                                  reps, warmup=1)
        for label, ms, path in (("write_obj", times[0], obj), ("write_ply", times[1], ply)):
            print(f"  {label:10s} median {np.median(ms):7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms"
                  f"   ({path.stat().st_size / 1e6:.1f} MB, {reps} runs)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions")
    ap.add_argument("--threads", type=int, default=None,
                    help="fast-path threads (default: SIM3DR_NUM_THREADS or hardware)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (8 if args.quick else 40)
    threads = Sim3DR.resolve_num_threads(args.threads)
    print(f"Sim3DR render benchmark: {args.size}x{args.size}, {threads} threads for the "
          f"fast path, hardware concurrency {Sim3DR._sim3dr.hardware_concurrency()}",
          flush=True)
    ratios = {}
    v, t = synthetic_face()
    ratios["synthetic 53215"] = bench("synthetic face", to_image(v, args.size), t,
                                      args.size, reps, threads)
    real = real_face()
    if real is None:
        print(f"\n[real BFM face] skipped: {DATA} not found")
    else:
        ratios["real 38365"] = bench("real BFM face", to_image(*real[:1], args.size),
                                     real[1], args.size, reps, threads)
    print("\nsummary (rasteriser | whole lit render, vs the single-threaded baseline): "
          + ", ".join(f"{k}: x{r:.2f} | x{f:.2f}" for k, (r, f) in ratios.items()) + f", {threads} threads")
    bench_writers(max(3, reps // 8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
