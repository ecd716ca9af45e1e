"""One timed process of ``benchmarks/render_speed.py``'s comparison of two Sim3DR builds.

    python benchmarks/render_worker.py ROOT INPUTS.npz RESULT.json [--calls N] [--warmup N]
        [--image IMAGE.npy]

Imports Sim3DR from ``ROOT`` (a source tree with the extension built in place; refuses to run
when another copy would be imported), loads the vertices, triangles and background from
``INPUTS.npz`` and times plain calls of ``Sim3DR.lighting.render_lit(vertices, triangles,
background, alpha=1.0)``, the release's signature, with Sim3DR's default threads
(``SIM3DR_NUM_THREADS`` as the parent set it). Nothing is cached between calls: every call
gets the same arrays, as a caller with a new mesh each time would. Writes the times (ms) and
the thread count to ``RESULT.json`` and the last image to ``IMAGE.npy``.

Kept free of imports from this repository at module level: the baseline tree's Sim3DR must
be the only one loaded.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("inputs", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image", type=Path)
    args = ap.parse_args(argv)

    root = args.root.resolve()
    sys.path.insert(0, str(root))
    import numpy as np

    import Sim3DR
    from Sim3DR.lighting import render_lit

    where = Path(Sim3DR.__file__).resolve()
    if root not in where.parents:
        print(f"render_worker: imported Sim3DR from {where}, not from {root}", file=sys.stderr)
        return 2
    data = np.load(args.inputs)
    vertices, triangles, background = data["vertices"], data["triangles"], data["background"]

    image = None
    for _ in range(args.warmup):
        image = render_lit(vertices, triangles, background, alpha=1.0)
    gc.collect()
    gc.disable()
    times = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.calls):
        t0 = time.perf_counter_ns()
        image = render_lit(vertices, triangles, background, alpha=1.0)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.enable()
    if args.image is not None and image is not None:
        np.save(args.image, image)
    doc = {
        "sim3dr": str(where.parent),
        "threads": Sim3DR.resolve_num_threads(),
        "env_threads": os.environ.get("SIM3DR_NUM_THREADS"),
        "calls": args.calls,
        "warmup": args.warmup,
        "times_ms": times,
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }
    args.result.write_text(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
