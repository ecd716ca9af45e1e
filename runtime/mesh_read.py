"""Mesh readers for evaluation and analysis: OBJ ``v`` lines, ``.xyz`` point lists, ``.npy``
arrays and ``result.npz`` files written by ``cmp-face predict``.

Every reader is bounded: a file over :data:`MAX_FILE_BYTES` (or an ``.npy``/``.npz`` member whose
header claims more, or an ``.npz`` whose zip directory is over :data:`MAX_NPZ_DIRECTORY_BYTES`) is
refused before it is read; OBJ and xyz text is parsed with numpy from the file's bytes (about
6x the file at the peak, the arrays returned included; the former per-token Python lists took
about 29x: 1.87 GB for a 64 MiB OBJ of short lines). Every failure is an
:class:`runtime.errors.InputError` whose message starts with the file's path, whatever zipfile,
numpy's header parser or a damaged stream raise underneath.
Vertices come back as float64 ``(N, 3)`` (the metrics are ratios of small differences).
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
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
        raise InputError(f"{path}: {not_a_file(path)}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB "
                         "a mesh file may have")
    return size


# --------------------------------------------------------------------------- text (OBJ, xyz)
#
# Parsed from the file's bytes with numpy: the lines that matter are gathered into one buffer
# and read by numpy.loadtxt's C parser, so memory stays a few times the file (no Python object
# per line or token). Lines are what str.splitlines() makes of the text, and tokens what
# str.split() makes of a line; a number is what float() (int() for face indices) accepts. Any
# input the fast path is not sure to read that way (non-ASCII bytes, a loadtxt error, a row
# count that does not add up) is read again line by line in Python, one line at a time (same
# memory bound, slower), which also finds the line an error message names.

# Line breaks of str.splitlines() besides "\n", as UTF-8 bytes (the text is checked to be UTF-8).
_LINE_BREAKS = re.compile(rb"\r\n|[\r\x0b\x0c\x1c\x1d\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")
_LINE_BREAK_MARKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")
# ASCII whitespace str.split() splits on, once the line breaks are "\n".
_SPACE_BYTES = (0x20, 0x09, 0x1F)
# A face corner "a/t/n": the vertex index is what comes before the first slash (a corner that
# starts with a slash keeps it: an empty index, refused).
_CORNER_TAIL = re.compile(rb"(?<=[^ \t\x1f\n])/[^ \t\x1f\n]*")


def _text_bytes(path: Path) -> bytes:
    """The file's bytes, checked to be UTF-8, with every line break made "\n"."""
    data = path.read_bytes()
    try:
        if not data.isascii():
            data.decode("utf-8")  # the check only: the str is dropped at once
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    if any(mark in data for mark in _LINE_BREAK_MARKS):  # (a search per byte: faster than the regex)
        data = _LINE_BREAKS.sub(b"\n", data)
    return data


def _lines(buf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the "\n") of every line of ``buf`` (uint8)."""
    step = 1 << 23  # in slices: no byte-sized mask of the whole file
    breaks = np.concatenate([np.flatnonzero(buf[i:i + step] == 10).astype(np.int32) + np.int32(i)
                             for i in range(0, buf.size, step)] or [np.zeros(0, np.int32)])  # files < 2 GiB
    starts = np.empty(breaks.size + 1, np.int32)
    starts[0] = 0
    np.add(breaks, 1, out=starts[1:])
    ends = np.append(breaks, np.int32(buf.size))
    del breaks
    if starts[-1] == buf.size:  # a final "\n" ends the last line; it does not start another
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def _is_space(buf: np.ndarray) -> np.ndarray:
    """Where ``buf`` holds a space, tab, unit separator or "\n"."""
    space = buf == 10
    for byte in _SPACE_BYTES:
        space |= buf == byte
    return space


def _keyword_lines(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, letter: str) -> Tuple[np.ndarray, np.ndarray]:
    """Start (after the letter) and end of the lines that start with ``letter`` and a space or
    tab ("v ", "f\t")."""
    long_enough = ends - starts >= 2
    first = np.zeros(starts.size, bool)
    first[long_enough] = buf[starts[long_enough]] == ord(letter)
    del long_enough
    second = np.zeros(starts.size, bool)
    second[first] = np.isin(buf[starts[first] + 1], (0x20, 0x09))
    del first
    return starts[second] + 1, ends[second]


def _gather(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """The bytes ``buf[starts[i]:ends[i]]`` of every line, each followed by "\n", in one buffer."""
    if starts.size == 0:
        return b""
    # +1 where a line starts, -1 after its "\n": the running sum is 1 inside the lines (int8, in
    # place: a byte per byte of the file). Starts are distinct, and so are ends (a start may be
    # another line's end: the two assignments add up).
    marks = np.zeros(buf.size + 2, np.int8)
    marks[starts] = 1
    marks[ends + 1] -= 1
    inside = np.cumsum(marks, dtype=np.int8, out=marks)[:buf.size].view(bool)
    blob = buf[inside].tobytes()
    del marks, inside
    return blob + b"\n" if ends[-1] == buf.size else blob  # the last line had no "\n"


def _loadtxt(blob: bytes, dtype, usecols=None) -> Optional[np.ndarray]:
    """numpy.loadtxt of an ASCII buffer: None if it is not ASCII or loadtxt refuses it."""
    if not blob.isascii():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data"
            return np.loadtxt(io.BytesIO(blob), dtype=dtype, comments=None, usecols=usecols,
                              ndmin=2, encoding="latin-1")
    except (ValueError, OverflowError, TypeError):
        return None


def _line_text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8")


def _parse_rows(path: Path, data: bytes, starts: np.ndarray, ends: np.ndarray, numbers, what: str) -> np.ndarray:
    """(len(starts), 3) float64 from lines whose tokens ``numbers(line)`` must be exactly three
    numbers; one line at a time; the first bad line is named (1-based) in the error."""
    for s, e in zip(starts.tolist(), ends.tolist()):  # counts first, numbers next (as ever)
        if len(tokens := numbers(_line_text(data, s, e))) != 3:
            raise InputError(f"{path}: line {_line_number(data, s)}: expected 3 numbers ({what}), found {len(tokens)}")
    out = np.empty((starts.size, 3), np.float64)
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        tokens = numbers(_line_text(data, s, e))
        try:
            out[k] = [float(x) for x in tokens]
        except ValueError:
            raise InputError(f"{path}: line {_line_number(data, s)}: not a number in {' '.join(tokens)!r}") from None
    return out


def _line_number(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _vertices_of(path: Path, data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 what: str, columns: Optional[int]) -> np.ndarray:
    """Three numbers from each line ``buf[starts:ends]``: the first three of each (``columns``
    None: "v x y z [r g b ...]") or exactly ``columns`` (3, xyz lines)."""
    fast = _loadtxt(_gather(buf, starts, ends), np.float64, usecols=(0, 1, 2) if columns is None else None)
    if fast is not None and fast.shape == (starts.size, 3):
        return fast
    del fast
    if columns is None:
        return _parse_rows(path, data, starts, ends, lambda line: line.split()[0:3], what)
    return _parse_rows(path, data, starts, ends, str.split, what)


def _obj(path: Path, want_faces: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    data = _text_bytes(path)
    buf = np.frombuffer(data, np.uint8)
    starts, ends = _lines(buf)
    v_starts, v_ends = _keyword_lines(buf, starts, ends, "v")
    f_starts, f_ends = _keyword_lines(buf, starts, ends, "f") if want_faces else (None, None)
    del starts, ends
    # "v x y z" or "v x y z r g b" (vertex colours): the position is the first three.
    vertices = _vertices_of(path, data, buf, v_starts, v_ends, "x y z after 'v'", None)
    del v_starts, v_ends
    triangles = None
    if want_faces and f_starts.size:
        triangles = _faces(path, data, buf, f_starts, f_ends, len(vertices))
    return vertices, triangles


def _faces(path: Path, data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           n_vertices: int) -> Optional[np.ndarray]:
    """0-based int32 (M, 3) from "f a b c" / "f a/t/n ..." lines (1-based positions before any
    slash), or None when some face is not a triangle."""
    blob = _gather(buf, starts, ends)
    t = None
    if blob.isascii():
        if b"/" in blob:
            blob = _CORNER_TAIL.sub(b"", blob)
        corners = np.frombuffer(blob, np.uint8)
        space = _is_space(corners)
        token_start = ~space
        token_start[1:] &= space[:-1]
        del space
        line_start = np.flatnonzero(corners[:-1] == 10)
        line_start += 1
        line_start = np.concatenate((np.zeros(1, line_start.dtype), line_start))
        counts = np.add.reduceat(token_start, line_start, dtype=np.int32)
        del token_start, line_start, corners
        if counts.size == starts.size and (counts != 3).any():
            return None
        if counts.size == starts.size:  # (always, with "\n"-ended lines)
            t = _loadtxt(blob, np.int32)  # an index beyond int32 is out of range: the slow path says so
            if t is not None and t.shape != (starts.size, 3):
                t = None
        del counts
    del blob
    if t is None:  # not ASCII, or something loadtxt refuses: line by line, as int() reads them
        t = _parse_faces(path, data, starts, ends)
        if t is None:
            return None
    if t.size and (t.min() < 1 or t.max() > n_vertices):
        raise InputError(f"{path}: a face refers to a vertex outside 1..{n_vertices}")
    t = t.astype(np.int32, copy=False)  # within 1..n_vertices
    t -= 1
    return t


def _parse_faces(path: Path, data: bytes, starts: np.ndarray, ends: np.ndarray) -> Optional[np.ndarray]:
    """The slow path of _faces: 1-based int64 (M, 3), None for a non-triangle face; indices out
    of int64 are clipped (they are out of range anyway)."""
    out = np.empty((starts.size, 3), np.int64)
    bad = None
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        corners = [c.split("/", 1)[0] for c in _line_text(data, s, e).split()]
        if len(corners) != 3:
            return None
        if bad is not None:
            continue  # every face is looked at: a later non-triangle means "no triangles"
        try:
            out[k] = [min(max(int(c), -1), 1 << 62) for c in corners]
        except ValueError:
            bad = k
    if bad is not None:
        raise InputError(f"{path}: a face line holds a non-integer vertex index")
    return out


def _xyz(path: Path) -> np.ndarray:
    data = _text_bytes(path)
    buf = np.frombuffer(data, np.uint8)
    starts, ends = _lines(buf)
    if b"#" in data or not data.isascii():
        # comments, or spaces beyond ASCII: which lines count is str.strip()'s business
        keep = np.fromiter((k for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist()))
                            if (line := _line_text(data, s, e)).strip() and not line.lstrip().startswith("#")),
                           np.int64)
    else:
        blank = _is_space(buf)
        non_blank = np.add.reduceat(~blank, starts, dtype=np.int64) if starts.size else np.zeros(0, np.int64)
        non_blank[ends == starts] = 0  # reduceat gives the element at an empty line's start
        keep = np.flatnonzero(non_blank)
    return _vertices_of(path, data, buf, starts[keep], ends[keep], "x y z", 3)


def _npy_header(path: Path, f: BinaryIO, member: str = "") -> Tuple[tuple, np.dtype]:
    """Shape and dtype from an .npy header, without reading the data."""
    name = f"{path}{f' ({member})' if member else ''}"
    shape, _, dtype = read_header(f, name)
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects, not numbers")
    if math.prod(shape) * dtype.itemsize > MAX_FILE_BYTES:  # Python ints: a shape may be huge
        raise InputError(f"{name}: a {dtype} array of shape {shape} is larger than a mesh may be")
    return shape, dtype


def npy_shape(path: PathLike) -> tuple:
    """The shape an ``.npy`` file declares (nothing else is read)."""
    path = Path(path)
    _checked_file(path)
    try:
        with open(path, "rb") as f:
            return _npy_header(path, f)[0]
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def not_a_file(path: Path) -> str:
    """Why ``path`` (not a regular file) cannot be read, for a message after ``<path>: ``."""
    if path.is_dir():
        return "is a folder, not a file"
    return "not a regular file (a FIFO, socket or device)" if path.exists() else "file not found"


def read_npy(path: PathLike) -> np.ndarray:
    """The numeric array of an untrusted ``.npy`` file: the header checked field by field, the
    data no larger than a mesh file may be, never a pickle; failures are InputError."""
    path = Path(path)
    _checked_file(path)
    try:
        return _npy(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _detail(exc: BaseException) -> str:
    """One short line about ``exc`` for a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _npy_header(path, f)
        f.seek(0)
        try:
            return npformat.read_array(f, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 (the header was checked: what is left is damage)
            raise InputError(f"{path}: not a readable .npy array ({_detail(exc)})") from None


#: The largest zip central directory read (a result.npz has a few members: ~100 bytes each).
#: Python's zipfile makes an object per entry, a few hundred bytes each, before anything else.
MAX_NPZ_DIRECTORY_BYTES = 64 * 1024
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _zip_directory_size(path: Path) -> Optional[int]:
    """The central directory's size from the end record (None if there is no such record, or
    zipfile's reader of it is not there: zipfile then decides)."""
    find = getattr(zipfile, "_EndRecData", None)
    index = getattr(zipfile, "_ECD_SIZE", None)
    if find is None or index is None:
        return None
    with open(path, "rb") as fh:
        end = find(fh)
    return None if end is None else end[index]


def _npz_member(path: Path, z: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The member ``name``, refused (with a message of ours) when it cannot be opened."""
    info = z.getinfo(name)
    if info.flag_bits & 0x1:
        raise InputError(f"{path}: not a readable .npz file (member {name!r} is encrypted)")
    if info.compress_type not in _ZIP_METHODS:
        raise InputError(
            f"{path}: not a readable .npz file (member {name!r} uses zip compression method "
            f"{info.compress_type}; readable are {', '.join(f'{k} ({v})' for k, v in _ZIP_METHODS.items())})")
    if info.extract_version > zipfile.MAX_EXTRACT_VERSION:
        raise InputError(
            f"{path}: not a readable .npz file (member {name!r} needs zip version "
            f"{info.extract_version / 10:.1f} to extract; {zipfile.MAX_EXTRACT_VERSION / 10:.1f} is supported)")
    return info


def _npz(path: Path) -> np.ndarray:
    """``vertices_frontal`` (the unsupervised pipeline's unaligned mesh) if present, else ``vertices``."""
    try:
        size = _zip_directory_size(path)
        if size is not None and size > MAX_NPZ_DIRECTORY_BYTES:
            raise InputError(f"{path}: not a readable .npz file (its zip directory has {size} bytes; a result.npz "
                             f"has a few members, and at most {MAX_NPZ_DIRECTORY_BYTES} bytes are read)")
        try:
            z = zipfile.ZipFile(path)
        except UnicodeDecodeError:  # a member name flagged UTF-8 that is not
            raise InputError(f"{path}: not a readable .npz file (a member name is not valid UTF-8)") from None
        except NotImplementedError as exc:  # zipfile checks each member's zip version here
            raise InputError(f"{path}: not a readable .npz file (unsupported zip feature: {_detail(exc)})") from None
        with z:
            names = set(z.namelist())
            key = next((k for k in ("vertices_frontal", "vertices") if f"{k}.npy" in names), None)
            if key is None:
                raise InputError(f"{path}: holds no 'vertices' array (not a result.npz of cmp-face predict)")
            info = _npz_member(path, z, f"{key}.npy")
            with z.open(info) as f:
                _npy_header(path, f, key)
            with z.open(info) as f:
                try:
                    return npformat.read_array(f, allow_pickle=False)
                except InputError:
                    raise
                except Exception as exc:  # noqa: BLE001 (zlib.error, LZMAError, a bad CRC, EOF...)
                    raise InputError(f"{path} ({key}): not a readable .npy array ({_detail(exc)})") from None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 (zipfile raises BadZipFile, but also NotImplementedError,
        # RuntimeError, UnicodeDecodeError, ValueError, struct.error... on damaged files)
        raise InputError(f"{path}: not a readable .npz file ({_detail(exc)})") from None


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
