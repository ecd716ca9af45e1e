"""Render speed: this tree's Sim3DR against a baseline commit's, and the rasteriser paths.

Part 1, the issue's measure (``versus``): the lit 512x512 render of the supervised demo mesh
(53215 vertices, float32, int32 triangles; the synthetic models' prediction for the demo
voice, placed by ``runtime.render.frontal_to_image``, ~90% of the image) through
``Sim3DR.lighting.render_lit(vertices, triangles, background, alpha=1.0)``. The baseline
commit's ``Sim3DR`` (default 512561a) is built from ``git archive`` in a temporary folder;
old and new then run in processes of their own (``benchmarks/render_worker.py``),
interleaved over several rounds (alternating which goes first), on the same input files,
with Sim3DR's default threads, repeated plain calls (nothing cached between calls). Prints
the medians, their ratio in this run and the share of pixels that differ between the two
images (the issue allows 0.2%; the aim is 0). A thread sweep (1, 2, 4, ... up to the cores)
follows. A full run writes ``render_speed.md``, ``.json`` and ``.png`` to
``benchmarks/results/<machine>/render/``; ``--quick`` (a smoke test) writes nothing there.

Part 2, in one process: the plain single-threaded rasteriser loop against the fast path on a
synthetic 53215-vertex face and, when present, the real 38365-vertex BFM face from
../shared/data (skipped when absent); the release-style render (numpy lighting + plain loop)
against ``render_lit``; then the mesh writers (OBJ and PLY of a release-size mesh).

    python benchmarks/render_speed.py                   # full run (a few minutes)
    python benchmarks/render_speed.py --quick           # smoke test, writes no results
    python benchmarks/render_speed.py --versus REV --rounds 8 --calls 60 [--models DIR]
    python benchmarks/render_speed.py --skip-versus | --only-versus
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pickle
import subprocess
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
BASELINE_REV = "512561a"
MAX_DIFFERING = 0.002  # the limit on the share of differing pixels
WORKER = Path(__file__).resolve().parent / "render_worker.py"


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


# ----------------------------------------------------------------------------- part 1


def judged_mesh(args, size: int):
    """(vertices in image coordinates, triangles, description): the supervised demo
    prediction of the synthetic models (``--models``, else the cache, built once when
    ``--build-models``), else the synthetic pack's face mesh in the release's topology."""
    from runtime.render import frontal_to_image

    models = args.models
    if args.mesh == "synthetic":
        models = None
    elif models is None:
        from runtime.cache import check_models, synthetic_entry
        cached = synthetic_entry(0) / "models"
        if cached.is_dir() and not check_models(cached):
            models = cached
        elif args.build_models:
            from export.cache import synthetic_models
            models = synthetic_models()
    if models is not None:
        import runtime
        from runtime.demo_signal import demo_voice
        result = runtime.Predictor(models).predict(demo_voice(), sample_rate=16000)
        v = frontal_to_image(np.asarray(result.vertices, np.float32), size)
        t = np.ascontiguousarray(result.triangles, dtype=np.int32)
        return v, t, f"supervised demo prediction ({models})"
    from export.synthetic import face_mesh
    v, t = face_mesh()
    return (frontal_to_image(v.astype(np.float32), size), np.ascontiguousarray(t, np.int32),
            "synthetic pack face mesh (export.synthetic.face_mesh; no models folder)")


def build_baseline(rev: str, dest: Path) -> Path:
    """``git archive rev`` of Sim3DR and the build files into ``dest``, built in place."""
    try:
        import Cython  # noqa: F401  (the baseline is compiled here, outside pip's build isolation)
    except ImportError:
        raise SystemExit(f"building Sim3DR of {rev} needs Cython: pip install -e '.[bench]' "
                         "(or pass --skip-versus)") from None
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "Sim3DR", "setup.py", "pyproject.toml",
                              "README.md"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "x"], input=archive, cwd=dest, check=True)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=dest,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building Sim3DR of {rev} failed:\n{proc.stderr[-3000:]}")
    return dest


def run_worker(root: Path, inputs: Path, out: Path, calls: int, warmup: int,
               threads: int | None = None, image: Path | None = None) -> dict:
    """One worker process; adds the other processes' share of the CPUs meanwhile."""
    from benchmarks.machine import children_cpu, cpu_ticks

    env = dict(os.environ)
    env.pop("SIM3DR_NUM_THREADS", None)
    if threads is not None:
        env["SIM3DR_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(WORKER), str(root), str(inputs), str(out), "--calls", str(calls),
           "--warmup", str(warmup)] + (["--image", str(image)] if image else [])
    busy0, total0 = cpu_ticks()
    child0 = children_cpu()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    child = children_cpu() - child0
    busy1, total1 = cpu_ticks()
    if proc.returncode != 0:
        raise SystemExit(f"render worker failed ({root}):\n{proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    total = total1 - total0
    doc["others_cpu_share"] = max(0.0, (busy1 - busy0 - child) / total) if total > 0 else float("nan")
    return doc


def differing_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels where any channel differs."""
    return float((a != b).any(axis=-1).mean())


def versus(args, quick: bool) -> dict:
    from benchmarks.machine import available_cores, cpu_model, git_revision, machine_name, wait_idle

    size = args.size
    rounds, calls, warmup = (2, 10, 3) if quick else (args.rounds, args.calls, 5)
    print(f"[versus {args.versus}] lit {size}x{size} render, old and new in processes of their "
          f"own, {rounds} rounds x {calls} calls, default threads", flush=True)
    v, t, desc = judged_mesh(args, size)
    bg = np.full((size, size, 3), 48, np.uint8)  # render_frontal's default dark grey canvas
    # frontal_to_image: the longer side of the x/y bounding box spans 90% of the image
    fill = float(max(np.ptp(v[:, 0]), np.ptp(v[:, 1])) / (size - 1))
    print(f"  mesh: {desc}: {len(v)} vertices {v.dtype}, {len(t)} triangles {t.dtype}, "
          f"spanning {100 * fill:.0f}% of the image", flush=True)
    with tempfile.TemporaryDirectory(prefix="render-versus-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = tmp / "inputs.npz"
        np.savez(inputs, vertices=v, triangles=t, background=bg)
        if args.baseline_dir is not None and (args.baseline_dir / "Sim3DR").is_dir():
            old_root = args.baseline_dir
            print(f"  baseline: {old_root} (built before)", flush=True)
        else:
            t0 = time.perf_counter()
            old_root = build_baseline(args.versus, args.baseline_dir or tmp / "baseline")
            print(f"  baseline: Sim3DR of {args.versus} built in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        roots = {"old": old_root, "new": ROOT}
        runs = {"old": [], "new": []}
        images = {}
        for r in range(rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            if not quick and args.wait_idle > 0:
                idle = wait_idle(args.wait_idle)
                if not idle["quiet"]:
                    print(f"  (machine not quiet: {100 * idle['busy_share']:.0f}% busy)", flush=True)
            for name in order:
                img = tmp / f"{name}.npy" if r == 0 else None
                res = run_worker(roots[name], inputs, tmp / f"{name}-{r}.json", calls, warmup,
                                 image=img)
                runs[name].append(res)
                if img is not None:
                    images[name] = np.load(img)
            print(f"  round {r + 1}/{rounds}: old {np.median(runs['old'][-1]['times_ms']):6.2f} ms, "
                  f"new {np.median(runs['new'][-1]['times_ms']):6.2f} ms (median of {calls}; other "
                  f"processes {100 * max(x[-1]['others_cpu_share'] for x in runs.values()):.0f}% "
                  f"of the CPUs)", flush=True)
        share = differing_share(images["old"], images["new"])
        summary = {}
        for name in ("old", "new"):
            allt = np.concatenate([x["times_ms"] for x in runs[name]])
            summary[name] = {
                "median_ms": float(np.median(allt)), "p10_ms": float(np.percentile(allt, 10)),
                "p90_ms": float(np.percentile(allt, 90)), "min_ms": float(allt.min()),
                "round_medians_ms": [float(np.median(x["times_ms"])) for x in runs[name]],
                "threads": runs[name][0]["threads"],
                "others_cpu_share_max": float(max(x["others_cpu_share"] for x in runs[name])),
            }
        ratio = summary["old"]["median_ms"] / summary["new"]["median_ms"]
        # each round's old and new ran back to back: their ratio is less sensitive to
        # the machine's load changing between rounds
        round_ratios = [o / n for o, n in zip(summary["old"]["round_medians_ms"],
                                              summary["new"]["round_medians_ms"])]
        print(f"  median: old {summary['old']['median_ms']:.2f} ms, new "
              f"{summary['new']['median_ms']:.2f} ms ({summary['new']['threads']} threads): "
              f"x{ratio:.2f} in this run (per round: median x{np.median(round_ratios):.2f}, "
              f"x{min(round_ratios):.2f} to x{max(round_ratios):.2f})", flush=True)
        print(f"  differing pixels: {100 * share:.4f}% (limit {100 * MAX_DIFFERING:.1f}%)",
              flush=True)
        sweep = []
        if not args.no_sweep:
            cores = available_cores()
            counts = sorted({n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cores} | {cores})
            if quick:
                counts = counts[:2]
            print(f"  thread sweep ({', '.join(map(str, counts))} threads; {max(4, calls // 2)} "
                  f"calls each):", flush=True)
            for n in counts:
                row = {"threads": n}
                for name in ("old", "new"):
                    res = run_worker(roots[name], inputs, tmp / f"sweep-{name}-{n}.json",
                                     max(4, calls // 2), warmup, threads=n)
                    row[name + "_ms"] = float(np.median(res["times_ms"]))
                    row[name + "_others"] = res["others_cpu_share"]
                row["ratio"] = row["old_ms"] / row["new_ms"]
                sweep.append(row)
                print(f"    {n:3d} threads: old {row['old_ms']:6.2f} ms, new {row['new_ms']:6.2f} "
                      f"ms, x{row['ratio']:.2f}", flush=True)
    return {
        "schema": 1, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_name(available_cores(), None), "cpu": cpu_model(),
        "cores": available_cores(), "git": git_revision(), "baseline": args.versus,
        "mesh": {"description": desc, "vertices": int(len(v)), "triangles": int(len(t)),
                 "span": round(fill, 3)},
        "size": size, "rounds": rounds, "calls": calls, "warmup": warmup,
        "old": summary["old"], "new": summary["new"], "ratio": ratio,
        "round_ratios": round_ratios,
        "differing_pixels": share, "sweep": sweep,
    }


def versus_markdown(doc: dict) -> str:
    o, n = doc["old"], doc["new"]
    lines = [
        f"# Lit render {doc['size']}x{doc['size']}: this tree vs {doc['baseline']}", "",
        f"Machine `{doc['machine']}` ({doc['cpu']}, {doc['cores']} cores), git {doc['git']}, "
        f"{doc['date']}. `python benchmarks/render_speed.py` (part 1).", "",
        f"Mesh: {doc['mesh']['description']}: {doc['mesh']['vertices']} vertices (float32), "
        f"{doc['mesh']['triangles']} triangles (int32), spanning "
        f"{100 * doc['mesh']['span']:.0f}% of the image. Each version in processes of its "
        f"own, {doc['rounds']} interleaved rounds x {doc['calls']} plain calls of "
        f"`render_lit(vertices, triangles, background, alpha=1.0)` (after {doc['warmup']} "
        f"warm-up calls), default threads.", "",
        "| version | threads | median ms | p10 ms | p90 ms | other processes' CPU share (max) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {doc['baseline']} (old) | {o['threads']} | {o['median_ms']:.2f} | {o['p10_ms']:.2f} | "
        f"{o['p90_ms']:.2f} | {100 * o['others_cpu_share_max']:.0f}% |",
        f"| this tree (new) | {n['threads']} | {n['median_ms']:.2f} | {n['p10_ms']:.2f} | "
        f"{n['p90_ms']:.2f} | {100 * n['others_cpu_share_max']:.0f}% |",
        "",
        f"**Speed-up (old median / new median, this run): x{doc['ratio']:.2f}.** Pixels that "
        f"differ between the two images: {100 * doc['differing_pixels']:.4f}% (limit "
        f"{100 * MAX_DIFFERING:.1f}%).", "",
    ]
    rr = doc.get("round_ratios")
    if rr:
        lines += [f"Per round (old and new back to back): median x{float(np.median(rr)):.2f}, "
                  f"from x{min(rr):.2f} to x{max(rr):.2f}. Round medians (ms), old / new: "
                  + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(o["round_medians_ms"],
                                                                   n["round_medians_ms"]))
                  + ".", ""]
    if doc["sweep"]:
        lines += ["Thread sweep (`SIM3DR_NUM_THREADS`, each in its own process, median ms):", "",
                  "| threads | old ms | new ms | speed-up |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['threads']} | {r['old_ms']:.2f} | {r['new_ms']:.2f} | x{r['ratio']:.2f} |"
                  for r in doc["sweep"]]
        lines.append("")
    return "\n".join(lines)


def versus_plot(doc: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2 if doc["sweep"] else 1, figsize=(11 if doc["sweep"] else 6, 4),
                             squeeze=False)
    ax = axes[0][0]
    for name, colour in (("old", "tab:gray"), ("new", "tab:blue")):
        r = doc[name]["round_medians_ms"]
        label = doc["baseline"] if name == "old" else "this tree"
        ax.plot(range(1, len(r) + 1), r, "o-", color=colour, label=f"{label} (median {doc[name]['median_ms']:.2f} ms)")
    ax.set_xlabel("round")
    ax.set_ylabel("ms per render_lit call (median of the round)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"x{doc['ratio']:.2f}, {100 * doc['differing_pixels']:.4f}% pixels differ")
    ax.legend()
    if doc["sweep"]:
        ax = axes[0][1]
        th = [r["threads"] for r in doc["sweep"]]
        ax.plot(th, [r["old_ms"] for r in doc["sweep"]], "o-", color="tab:gray", label=doc["baseline"])
        ax.plot(th, [r["new_ms"] for r in doc["sweep"]], "o-", color="tab:blue", label="this tree")
        ax.set_xscale("log", base=2)
        ax.set_xticks(th, [str(x) for x in th])
        ax.set_xlabel("SIM3DR_NUM_THREADS")
        ax.set_ylabel("ms (median)")
        ax.set_ylim(bottom=0)
        ax.set_title("thread sweep")
        ax.legend()
    fig.suptitle(f"lit render {doc['size']}x{doc['size']}, {doc['mesh']['vertices']} vertices: "
                 f"{doc['machine']}, {doc['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_versus(doc: dict, out: Path) -> None:
    from runtime.atomic import replacing

    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / "render_speed.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    with replacing(out / "render_speed.md") as tmp:
        tmp.write_text(versus_markdown(doc))
    with replacing(out / "render_speed.png") as tmp:
        versus_plot(doc, tmp)
    print(f"  wrote {out}/render_speed.md, .json, .png", flush=True)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions")
    ap.add_argument("--threads", type=int, default=None,
                    help="fast-path threads (default: SIM3DR_NUM_THREADS or hardware)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--versus", default=BASELINE_REV, metavar="REV",
                    help=f"baseline commit of part 1 (default {BASELINE_REV})")
    ap.add_argument("--rounds", type=int, default=8, help="part 1: interleaved rounds (default 8)")
    ap.add_argument("--calls", type=int, default=60, help="part 1: timed calls per process (default 60)")
    ap.add_argument("--models", type=Path, help="part 1: models folder for the supervised demo mesh "
                                                "(default: the cached synthetic models)")
    ap.add_argument("--mesh", choices=("demo", "synthetic"), default="demo",
                    help="part 1: the supervised demo prediction (default; the synthetic pack's face "
                         "mesh when no models are found) or always the synthetic pack's face mesh")
    ap.add_argument("--build-models", action="store_true",
                    help="part 1: build the synthetic models into the cache when absent (~3 minutes; "
                         "without them the synthetic pack's face mesh is used)")
    ap.add_argument("--baseline-dir", type=Path, help="part 1: build the baseline here (kept), or reuse it")
    ap.add_argument("--wait-idle", type=float, default=60.0, metavar="S",
                    help="part 1: before each round wait up to S s for a quiet machine (default 60)")
    ap.add_argument("--no-sweep", action="store_true", help="part 1: no thread sweep")
    ap.add_argument("--out", type=Path, help="part 1: results folder (default "
                                             "benchmarks/results/<machine>/render; never with --quick)")
    ap.add_argument("--skip-versus", action="store_true", help="part 2 only")
    ap.add_argument("--only-versus", action="store_true", help="part 1 only")
    args = ap.parse_args(argv)
    if not args.skip_versus:
        doc = versus(args, args.quick)
        if not args.quick:
            from benchmarks.machine import available_cores, machine_name
            write_versus(doc, args.out or ROOT / "benchmarks" / "results"
                         / machine_name(available_cores(), None) / "render")
        if doc["differing_pixels"] > MAX_DIFFERING:
            print(f"FAILED: {100 * doc['differing_pixels']:.3f}% of the pixels differ", flush=True)
            return 1
        if args.only_versus:
            return 0
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
