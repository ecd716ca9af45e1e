"""Meshes the Sim3DR tests draw (also imported by the child processes some tests start)."""
from __future__ import annotations

import numpy as np

import Sim3DR


def scatter_mesh(h: int, w: int, ntri: int = 600, seed: int = 0):
    """Random triangles over an h x w image (at least 256, so the threaded path runs)."""
    rng = np.random.default_rng(seed)
    v = (rng.random((400, 3)) * [w, h, 10]).astype(np.float32)
    t = rng.integers(0, 400, (ntri, 3)).astype(np.int32)
    return v, t, rng.random((400, 3)).astype(np.float32)


def draw_native(v, t, c, h, w, n):
    """The C++ fast path directly: (image, depth, threads that did the work)."""
    img, d = np.zeros((h, w, 3), np.uint8), Sim3DR.new_depth_buffer(h, w)
    used = Sim3DR._sim3dr.rasterize_u8(v, t, c, img, d, 1.0, n)
    return img, d, used


def dome(n=64, size=96, seed=0):
    """A bumpy height field over most of a size x size image, triangles shuffled (so that
    triangles of every band and vertex range are interleaved) with a few degenerate and
    repeated-corner ones: n * n vertices, about 2 n^2 triangles."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    s = np.float32((size - 8) / (n - 1))
    z = 20 * np.exp(-(((xs - n / 2) ** 2 + (ys - n / 2) ** 2) / (n * n / 6))) + rng.random((n, n))
    v = np.column_stack([xs.ravel() * s + 3.3, ys.ravel() * s + 2.7, z.ravel()]).astype(np.float32)
    q = (ys[:-1, :-1] * n + xs[:-1, :-1]).astype(np.int32).ravel()
    t = np.concatenate([np.stack([q, q + 1, q + n], 1), np.stack([q + 1, q + n + 1, q + n], 1)])
    t = t[rng.permutation(len(t))]
    t[::97, 2] = t[::97, 1]  # repeated corner: degenerate, skipped; its normal is 0
    return v, np.ascontiguousarray(t, dtype=np.int32)
