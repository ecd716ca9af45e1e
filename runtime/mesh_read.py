"""Mesh readers for evaluation and analysis: OBJ ``v`` lines, ``.xyz`` point lists, ``.npy``
arrays and ``result.npz`` files written by ``cmp-face predict``.

Every reader is bounded: a file over :data:`MAX_FILE_BYTES` (or an ``.npy``/``.npz`` member whose
header claims more) is refused before it is read, and every failure is an
:class:`runtime.errors.InputError` whose message starts with the file's path.
Vertices come back as float64 ``(N, 3)`` (the metrics are ratios of small differences).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np
from numpy.lib import format as npformat

from runtime.errors import InputError
from runtime.npy import read_header

__all__ = ["MAX_FILE_BYTES", "MESH_SUFFIXES", "npy_shape", "read_mesh", "read_obj"]

#: Largest mesh file we read. A 53215-vertex OBJ with its triangles is about 5 MB.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: File types :func:`read_mesh` understands.
MESH_SUFFIXES = (".obj", ".xyz", ".npy", ".npz")

PathLike = Union[str, os.PathLike]


def _checked_file(path: Path) -> int:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB "
                         "a mesh file may have")
    return size


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from exc


def _numbers(path: Path, rows: list[str], first_line: list[int], what: str) -> np.ndarray:
    """(len(rows), 3) float64 from whitespace-separated rows of exactly three numbers."""
    tokens = [r.split() for r in rows]
    for k, t in enumerate(tokens):
        if len(t) != 3:
            raise InputError(f"{path}: line {first_line[k]}: expected 3 numbers ({what}), found {len(t)}")
    try:
        return np.array(tokens, dtype=np.float64).reshape(len(rows), 3)
    except ValueError:
        for k, t in enumerate(tokens):  # find the line to name (only on the error path)
            try:
                [float(x) for x in t]
            except ValueError:
                raise InputError(f"{path}: line {first_line[k]}: not a number in {' '.join(t)!r}") from None
        raise


def _obj(path: Path, want_faces: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    lines = _text(path).splitlines()
    rows, where, faces = [], [], []
    for i, line in enumerate(lines, 1):
        if line.startswith(("v ", "v\t")):
            # "v x y z" or "v x y z r g b" (vertex colours): the position is the first three.
            rows.append(" ".join(line.split()[1:4]))
            where.append(i)
        elif want_faces and line.startswith(("f ", "f\t")):
            faces.append(line)
    vertices = _numbers(path, rows, where, "x y z after 'v'")
    triangles = None
    if want_faces and faces:
        # "f a b c" or "f a/t/n ...": 1-based positions before any slash; only triangle meshes.
        corners = [[c.split("/", 1)[0] for c in f.split()[1:]] for f in faces]
        if all(len(c) == 3 for c in corners):
            try:
                t = np.array(corners, dtype=np.int64) - 1
            except ValueError:
                raise InputError(f"{path}: a face line holds a non-integer vertex index") from None
            if t.min() < 0 or t.max() >= len(vertices):
                raise InputError(f"{path}: a face refers to a vertex outside 1..{len(vertices)}")
            triangles = t.astype(np.int32)
    return vertices, triangles


def _xyz(path: Path) -> np.ndarray:
    lines = _text(path).splitlines()
    where = [i for i, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    return _numbers(path, [lines[i - 1] for i in where], where, "x y z")


def _npy_header(path: Path, f: BinaryIO, member: str = "") -> Tuple[tuple, np.dtype]:
    """Shape and dtype from an .npy header, without reading the data."""
    name = f"{path}{f' ({member})' if member else ''}"
    shape, _, dtype = read_header(f, name)
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects, not numbers")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_FILE_BYTES:
        raise InputError(f"{name}: a {dtype} array of shape {shape} is larger than a mesh may be")
    return shape, dtype


def npy_shape(path: PathLike) -> tuple:
    """The shape an ``.npy`` file declares (nothing else is read)."""
    path = Path(path)
    _checked_file(path)
    with open(path, "rb") as f:
        return _npy_header(path, f)[0]


def _npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _npy_header(path, f)
        f.seek(0)
        try:
            return npformat.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from exc


def _npz(path: Path) -> np.ndarray:
    """``vertices_frontal`` (the unsupervised pipeline's unaligned mesh) if present, else ``vertices``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            key = next((k for k in ("vertices_frontal", "vertices") if f"{k}.npy" in names), None)
            if key is None:
                raise InputError(f"{path}: holds no 'vertices' array (not a result.npz of cmp-face predict)")
            with z.open(f"{key}.npy") as f:
                _npy_header(path, f, key)
            with z.open(f"{key}.npy") as f:
                try:
                    return npformat.read_array(f, allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:
                    raise InputError(f"{path} ({key}): not a readable .npy array ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc


def _checked(path: Path, v: np.ndarray, n_vertices: Optional[int]) -> np.ndarray:
    if v.dtype.kind not in "biuf" or v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"{path}: expected an (N, 3) array of vertices, got {v.dtype} with shape {v.shape}")
    if n_vertices is not None and v.shape[0] != n_vertices:
        raise InputError(f"{path}: {v.shape[0]} vertices, expected {n_vertices}")
    v = v.astype(np.float64, copy=False)
    finite = np.isfinite(v)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise InputError(f"{path}: NaN or infinite coordinates (first at vertex {row})")
    return v


def read_mesh(path: PathLike, n_vertices: Optional[int] = None) -> np.ndarray:
    """The vertices of a mesh file as float64 ``(N, 3)``.

    ``.obj``: the ``v`` lines (extra colour columns ignored); ``.xyz``: one ``x y z`` line per
    vertex (blank and ``#`` lines skipped); ``.npy``: an ``(N, 3)`` array; ``.npz``: a
    ``result.npz`` of ``cmp-face predict`` (``vertices_frontal`` if present, else
    ``vertices``). ``n_vertices``: the count required (e.g. 53215).
    """
    return read_obj(path, n_vertices, faces=False)[0] if Path(path).suffix.lower() == ".obj" \
        else _read(Path(path), n_vertices)


def _read(path: Path, n_vertices: Optional[int]) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"{path}: unknown mesh file type {suffix!r}: expected one of {', '.join(MESH_SUFFIXES)}")
    _checked_file(path)
    try:
        v = {".xyz": _xyz, ".npy": _npy, ".npz": _npz}[suffix](path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return _checked(path, v, n_vertices)


def read_obj(path: PathLike, n_vertices: Optional[int] = None,
             faces: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Vertices (float64 ``(N, 3)``) and, with ``faces``, 0-based int32 ``(M, 3)`` triangles of an
    OBJ file (None when it has no faces or some face is not a triangle)."""
    path = Path(path)
    _checked_file(path)
    try:
        v, t = _obj(path, faces)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return _checked(path, v, n_vertices), t
