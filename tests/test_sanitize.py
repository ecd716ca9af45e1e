"""Sim3DR under AddressSanitizer and UndefinedBehaviorSanitizer (opt-in: CMP_SANITIZE=1).

Builds the extension from the same sources into a temporary folder with
``-fsanitize=address,undefined,float-cast-overflow``, then runs a representative workload
(every entry point, 1 to 256 threads, refused thread starts, degenerate, off-screen and
huge triangles, empty and one-row images, every SIMD level, concurrent callers) in a child process with the ASan runtime
preloaded (Python itself is not instrumented). Any sanitizer report fails the test.

    CMP_SANITIZE=1 python -m pytest -q tests/test_sanitize.py      # ~1-2 minutes
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CXX = os.environ.get("CXX", "g++")

pytestmark = pytest.mark.skipif(os.environ.get("CMP_SANITIZE") != "1",
                                reason="sanitizer build is opt-in: set CMP_SANITIZE=1")

WORKLOAD = r"""
import sys
import numpy as np
import Sim3DR
from Sim3DR import _sim3dr
from Sim3DR.lighting import light_colors, render_lit
from Sim3DR.reference import buffers_reference, rasterize_baseline, rasterize_reference

assert Sim3DR.__file__.startswith(sys.argv[1]), Sim3DR.__file__
assert "libasan" in open("/proc/self/maps").read(), "ASan runtime not loaded"

rng = np.random.default_rng(0)

def mesh(nver, ntri, h, w, spread=1.2):
    v = (rng.random((nver, 3)) * [w * spread, h * spread, 10] - [w * 0.1, h * 0.1, 0])
    return v.astype(np.float32), rng.integers(0, nver, (ntri, 3)).astype(np.int32)

def check(v, t, h, w, channels=3, dtype=np.uint8, threads=(1, 2, 3, 8), alpha=1.0):
    c = rng.random((len(v), channels)).astype(np.float32)
    base = np.zeros((h, w, channels), dtype)
    bd = Sim3DR.new_depth_buffer(h, w)
    rasterize_baseline(v, t, c, base, alpha=alpha, depth_buffer=bd)
    for n in threads:
        img = np.zeros_like(base)
        d = Sim3DR.new_depth_buffer(h, w)
        Sim3DR.rasterize(v, t, c, img, alpha=alpha, depth_buffer=d, num_threads=n)
        assert (img == base).all() and (d == bd).all(), (h, w, channels, n)
        depth, index = Sim3DR.rasterize_buffers(v, t, h, w, num_threads=n)
        assert ((index >= 0) == (bd != Sim3DR.DEPTH_INIT)).all()

# every channel count (compile-time 1, 3, 4 and the runtime one), both image types
for channels in (1, 3, 4, 5):
    for dtype in (np.uint8, np.float32):
        v, t = mesh(300, 700, 64, 48)
        check(v, t, 64, 48, channels, dtype, alpha=0.6)
# image shapes: one row, one column, tall thin (many bands), tiny
for h, w in ((1, 50), (50, 1), (8, 8), (9, 3), (4096, 2), (3, 4096)):
    v, t = mesh(200, 400, h, w)
    check(v, t, h, w)
# small numpy reference comparison
v, t = mesh(30, 40, 20, 20)
c = rng.random((30, 3)).astype(np.float32)
ref = rasterize_reference(v, t, c, np.zeros((20, 20, 3), np.uint8))
assert (Sim3DR.rasterize(v, t, c, np.zeros((20, 20, 3), np.uint8), num_threads=2) == ref).all()
# degenerate, off-screen, huge and NaN-producing coordinates
F = np.finfo(np.float32).max
v = np.array([[0, 0, 1], [5, 5, 1], [10, 10, 1], [-F, -F, F], [F, 0, -F], [0, F, F],
              [1e-30, 0, 0], [0, 1e-30, 0], [-100, -100, 0], [-50, -90, 0]], np.float32)
t = np.array([[0, 1, 2], [3, 4, 5], [0, 6, 7], [8, 9, 0], [3, 3, 3], [0, 4, 5]] * 60, np.int32)
check(v, t, 32, 32)
n = Sim3DR.get_normal(v, t)
assert np.isfinite(n).all()
light = light_colors(v, t)
assert np.isfinite(light).all()
render_lit(v, t, np.zeros((16, 16, 3), np.uint8))
for params in ({"specular_exp": 0}, {"specular_exp": 17}, {"specular_exp": 2.0 ** 40},
               {"light_pos": (F, -F, F)}):
    assert np.isfinite(light_colors(v, t, **params)).all()
# empty inputs
Sim3DR.rasterize(v[:0], t[:0], np.zeros((0, 3), np.float32), np.zeros((4, 4, 3), np.uint8))
Sim3DR.get_normal(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
light_colors(np.zeros((3, 3), np.float32), np.zeros((0, 3), np.int32))
# the most threads, more than bands, and refused thread starts
v, t = mesh(300, 600, 65536, 1)
assert _sim3dr.rasterize_u8(v, t, np.ones((300, 1), np.float32), np.zeros((65536, 1, 1), np.uint8),
                            Sim3DR.new_depth_buffer(65536, 1), 1.0, 256) == 256
v, t = mesh(300, 600, 4096, 8)  # a request past int range is lowered, no int overflow
assert _sim3dr.rasterize_u8(v, t, np.ones((300, 1), np.float32), np.zeros((4096, 8, 1), np.uint8),
                            Sim3DR.new_depth_buffer(4096, 8), 1.0, 2**31 - 1) == 256
v, t = mesh(300, 600, 16, 16)
for limit in (0, 1, 3):
    _sim3dr.set_thread_start_limit(limit)
    check(v, t, 16, 16, threads=(8,))
_sim3dr.set_thread_start_limit(-1)
# every SIMD level (deferred and immediate paths, index buffers), the one-pass lit render
top = _sim3dr.set_simd_level(-1)
for level in range(top + 1):
    _sim3dr.set_simd_level(level)
    for h, w in ((37, 53), (9, 3), (64, 1)):
        v, t = mesh(300, 700, h, w)
        check(v, t, h, w, threads=(1, 3))
        check(v, t, h, w, channels=1, threads=(2,))
        for alpha in (1.0, 0.5):
            ref = np.zeros((h, w, 3), np.uint8)
            rasterize_baseline(v, t, light_colors(v, t), ref, alpha=alpha)
            for n in (1, 2, 5):
                assert (render_lit(v, t, np.zeros((h, w, 3), np.uint8), alpha=alpha,
                                   num_threads=n) == ref).all(), (level, h, w, alpha, n)
_sim3dr.set_simd_level(-1)
# concurrent callers sharing the pool
import threading
v, t = mesh(3000, 6000, 96, 96)
ref = render_lit(v, t, np.zeros((96, 96, 3), np.uint8), num_threads=1)
bad = []
def caller(k):
    for i in range(4):
        img = render_lit(v, t, np.zeros((96, 96, 3), np.uint8), num_threads=1 + (k + i) % 4)
        if not (img == ref).all():
            bad.append(k)
threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
assert not bad, bad
print("workload done")
"""


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return proc


def test_sim3dr_clean_under_asan_and_ubsan(tmp_path):
    pytest.importorskip("Cython")
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler ({CXX})")
    asan = _run([CXX, "-print-file-name=libasan.so"]).stdout.strip()
    if not os.path.isabs(asan) or not os.path.exists(asan):
        pytest.skip(f"{CXX} has no AddressSanitizer runtime")
    # Preloaded with ASan so that its __cxa_throw interceptor finds the real one (Python
    # does not link libstdc++; without it ASan's CHECK fails at the first C++ throw).
    stdcxx = _run([CXX, "-print-file-name=libstdc++.so.6"]).stdout.strip()
    pkg = tmp_path / "Sim3DR"
    shutil.copytree(ROOT / "Sim3DR", pkg, ignore=shutil.ignore_patterns(
        "*.so", "*.cpp", "__pycache__", "build"))
    shutil.copytree(ROOT / "Sim3DR" / "src", pkg / "src", dirs_exist_ok=True)
    _run([sys.executable, "-m", "cython", "--cplus", "-3", str(pkg / "_sim3dr.pyx"),
          "-o", str(pkg / "_sim3dr.cpp")])
    out = pkg / ("_sim3dr" + sysconfig.get_config_var("EXT_SUFFIX"))
    _run([CXX, "-shared", "-fPIC", "-g", "-O1", "-std=c++17", "-pthread", "-ffp-contract=off",
          "-fno-omit-frame-pointer", "-fsanitize=address,undefined,float-cast-overflow",
          "-fno-sanitize-recover=all", "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION",
          f"-I{sysconfig.get_paths()['include']}", f"-I{np.get_include()}", f"-I{pkg / 'src'}",
          str(pkg / "_sim3dr.cpp"), str(pkg / "src" / "rasterize.cpp"),
          str(pkg / "src" / "lighting.cpp"), "-o", str(out)], timeout=900)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), LD_PRELOAD=f"{asan} {stdcxx}",
               # Python's own allocations are never freed at exit: leaks are not ours.
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
    env.pop("SIM3DR_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", WORKLOAD, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)
    report = proc.stderr[-8000:]
    assert "AddressSanitizer" not in proc.stderr and "runtime error:" not in proc.stderr, report
    assert proc.returncode == 0, report
    assert proc.stdout.strip().endswith("workload done"), proc.stdout + report
    # The instrumentation is live: an out-of-range index handed to the unchecked binding
    # (the checked API refuses it) is reported as a heap overflow.
    probe = ("import numpy as np; from Sim3DR import _sim3dr; "
             "v = np.zeros((3, 3), np.float32); "
             "_sim3dr.get_normal(v, np.array([[0, 1, 7]], np.int32), np.empty_like(v))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 99 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-4000:]
