"""Mesh writer speed: runtime.mesh_io.write_obj (compiled formatting) against the former writer
(Python % formatting of every number, kept here as the reference) in one run, same mesh, timed
round-robin; both files are checked byte for byte first. Also times write_ply.

The mesh is the release's size (53215 vertices, 105840 triangles) with random float32 vertices
(as benchmarks/render_speed.py's writer section), written without and with float colours.

Each writer is timed writing a new file (the previous round's files are deleted between rounds,
untimed) and over an existing one: there the rename that replaces it costs ext4 3-4 ms more, for
both writers (auto_da_alloc starts writing the new file out when it is renamed over another).

    python benchmarks/writer_speed.py [--quick] [--reps 20]
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.atomic import replacing  # noqa: E402
from runtime.mesh_io import write_obj, write_ply  # noqa: E402

N_VERTICES, N_TRIANGLES = 53215, 105840


def obj_text_reference(vertices, triangles, colors=None) -> str:
    """The former write_obj's text: one % format string per line, applied to every number (its
    format strings define the bytes; tests/test_mesh_io.py holds the compiled writer to them)."""
    v = np.asarray(vertices)
    t = np.asarray(triangles).astype(np.int64, copy=False)
    if colors is None:
        vals = v.astype(np.float64)
        line = "v %.9g %.9g %.9g\n"
    else:
        c = np.asarray(colors)
        c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else np.clip(c.astype(np.float64), 0.0, 1.0)
        vals = np.hstack([v.astype(np.float64), c])
        line = "v %.9g %.9g %.9g %.6g %.6g %.6g\n"
    body = (line * v.shape[0]) % tuple(vals.ravel().tolist())
    return body + ("f %d %d %d\n" * t.shape[0]) % tuple((t + 1).ravel().tolist())


def write_obj_reference(path: Path, vertices, triangles, colors=None) -> Path:
    """write_obj as it was (with the checks its time included: finite vertices, indices in range)."""
    v = np.asarray(vertices)
    t = np.asarray(triangles).astype(np.int64, copy=False)
    if not np.isfinite(v).all() or (t.size and (t.min() < 0 or t.max() >= v.shape[0])):
        raise ValueError("non-finite vertices or indices out of range")
    text = obj_text_reference(v, t, colors)
    with replacing(path) as tmp, open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write(text)
    return path


def timed_round_robin(fns, reps: int, warmup: int = 1, between=None) -> list[np.ndarray]:
    """Milliseconds of each function, ``reps`` rounds, one call of each per round (background
    load affects all alike); the garbage collector paused while timing. ``between``: called
    after each round, untimed."""
    for _ in range(warmup):
        for fn in fns:
            fn()
        if between:
            between()
    out = [[] for _ in fns]
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                out[i].append((time.perf_counter() - t0) * 1e3)
            if between:
                between()
    finally:
        gc.enable()
    return [np.array(o) for o in out]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 20)
    rng = np.random.default_rng(2)
    v = (rng.standard_normal((N_VERTICES, 3)) * 1e5).astype(np.float32)
    t = rng.integers(0, N_VERTICES, (N_TRIANGLES, 3)).astype(np.int32)
    colors = rng.random((N_VERTICES, 3)).astype(np.float32)
    print(f"[mesh writers] {N_VERTICES} vertices, {N_TRIANGLES} triangles, {reps} rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        old, new, ply = Path(tmp) / "old.obj", Path(tmp) / "new.obj", Path(tmp) / "m.ply"
        for label, c in (("write_obj", None), ("write_obj + colours", colors)):
            write_obj_reference(old, v, t, c)
            write_obj(new, v, t, c)
            if old.read_bytes() != new.read_bytes():
                print(f"  {label}: FILES DIFFER", flush=True)
                return 1
            size = new.stat().st_size / 1e6

            def remove_both():
                old.unlink()
                new.unlink()

            for mode, between in (("new file", remove_both), ("over a file", None)):
                before, after = timed_round_robin([lambda: write_obj_reference(old, v, t, c),
                                                   lambda: write_obj(new, v, t, c)], reps, between=between)
                print(f"  {label:20s} {mode:11s} former {np.median(before):6.1f} ms   now {np.median(after):5.1f} ms "
                      f"(p90 {np.percentile(after, 90):5.1f})   x{np.median(before) / np.median(after):.1f} faster, "
                      f"byte-identical {size:.1f} MB", flush=True)
        for label, c in (("write_ply", None), ("write_ply + colours", colors)):
            (ms,) = timed_round_robin([lambda: write_ply(ply, v, t, c)], reps)
            print(f"  {label:20s} median {np.median(ms):6.1f} ms   p90 {np.percentile(ms, 90):5.1f} ms "
                  f"({ply.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
