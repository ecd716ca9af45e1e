"""runtime.mesh_read on damaged files: every failure is our InputError naming the file (zip members
that zipfile cannot open, .npy headers numpy lets through, OBJ face indices beyond int64), and the
OBJ / xyz readers (numpy from the file's bytes) read exactly what the former per-token Python
reader read, in memory proportional to the file."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest

from runtime import mesh_read
from runtime.errors import InputError
from tests.helpers.npy_files import npy_bytes as npy_with_header

ROOT = Path(__file__).resolve().parents[1]


def msg(text: str) -> str:
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------- .npz: zip members

def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def patch_member(data: bytes, name: bytes, *, local: dict, central: dict) -> bytes:
    """Overwrite little-endian uint16 fields (offset -> value) of ``name``'s local header and
    central directory entry."""
    out = bytearray(data)
    # (signature, fields, where the name's length is, where the name starts)
    for signature, fields, length_at, name_at in ((b"PK\x03\x04", local, 26, 30), (b"PK\x01\x02", central, 28, 46)):
        pos = 0
        while (pos := out.find(signature, pos)) >= 0:
            n = struct.unpack_from("<H", out, pos + length_at)[0]
            if out[pos + name_at:pos + name_at + n] == name:
                for offset, value in fields.items():
                    struct.pack_into("<H", out, pos + offset, value)
            pos += 4
    return bytes(out)


V = np.arange(12, dtype=np.float64).reshape(4, 3)


def test_npz_member_with_an_unsupported_compression_method(tmp_path):
    p = tmp_path / "r.npz"  # zipfile: NotImplementedError("That compression method is not supported")
    p.write_bytes(patch_member(npz_bytes(vertices=V), b"vertices.npy", local={8: 99}, central={10: 99}))
    with pytest.raises(InputError, match=msg(
            f"{p}: not a readable .npz file (member 'vertices.npy' uses zip compression method 99; readable are "
            "0 (stored), 8 (deflate), 12 (bzip2), 14 (lzma))")):
        mesh_read.read_mesh(p)


def test_npz_member_needing_a_newer_zip_version(tmp_path):
    p = tmp_path / "r.npz"  # zipfile: NotImplementedError("zip file version 7.0")
    p.write_bytes(patch_member(npz_bytes(vertices=V), b"vertices.npy", local={4: 70}, central={6: 70}))
    # zipfile refuses it when it reads the directory (Python's words), or else we do when opening it
    with pytest.raises(InputError, match=f"^{re.escape(str(p))}: not a readable .npz file "
                                         r"\((unsupported zip feature: zip file version 7\.0|member 'vertices\.npy' "
                                         r"needs zip version 7\.0 to extract; 6\.3 is supported)\)$"):
        mesh_read.read_mesh(p)


def test_encrypted_npz_member(tmp_path):
    p = tmp_path / "r.npz"  # zipfile: RuntimeError("File ... is encrypted, password required for extraction")
    p.write_bytes(patch_member(npz_bytes(vertices=V), b"vertices.npy", local={6: 1}, central={8: 1}))
    with pytest.raises(InputError, match=msg(f"{p}: not a readable .npz file (member 'vertices.npy' is encrypted)")):
        mesh_read.read_mesh(p)


def test_npz_member_name_that_is_not_utf8(tmp_path):
    # a name with a non-ASCII letter is stored as UTF-8 with flag bit 11; make its bytes invalid
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("vertices.npy", _npy(V))
        z.writestr("n\u00e9.npy", _npy(V))
    data = buf.getvalue()
    assert data.count("n\u00e9.npy".encode()) == 2
    p = tmp_path / "r.npz"  # zipfile: UnicodeDecodeError
    p.write_bytes(data.replace("n\u00e9.npy".encode(), b"n\xff\xfe.npy"))
    with pytest.raises(InputError, match=msg(f"{p}: not a readable .npz file (a member name is not valid UTF-8)")):
        mesh_read.read_mesh(p)


def test_npz_with_damaged_compressed_data(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, vertices=np.random.default_rng(0).normal(size=(1000, 3)))
    data = bytearray(buf.getvalue())
    data[200:260] = bytes(range(60))  # inside the deflate stream: zlib.error or a bad CRC
    p = tmp_path / "r.npz"
    p.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(p)
    assert str(err.value).startswith((f"{p} (vertices): not a readable .npy array (", f"{p}: not a readable .npz file ("))


def test_npz_with_a_huge_zip_directory_is_refused_before_it_is_read(tmp_path):
    """zipfile makes an object per directory entry (hundreds of bytes) for 46 bytes of file."""
    n = 2000
    local = b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    entry = b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, n, n, 47 * n, len(local), 0)
    p = tmp_path / "r.npz"
    p.write_bytes(local + entry * n + end)
    with pytest.raises(InputError, match=msg(
            f"{p}: not a readable .npz file (its zip directory has {47 * n} bytes; a result.npz has a few members, "
            "and at most 65536 bytes are read)")):
        mesh_read.read_mesh(p)


def test_npz_is_still_read(tmp_path):
    p = tmp_path / "r.npz"
    p.write_bytes(npz_bytes(vertices=V + 1, vertices_frontal=V, triangles=np.zeros((2, 3), np.int32)))
    assert np.array_equal(mesh_read.read_mesh(p), V)
    buf = io.BytesIO()
    np.savez_compressed(buf, vertices=V)
    (tmp_path / "c.npz").write_bytes(buf.getvalue())
    assert np.array_equal(mesh_read.read_mesh(tmp_path / "c.npz"), V)


# --------------------------------------------------------------------------- .npy headers

def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def header(shape: str, fortran: str = "False", descr: str = "'<f8'") -> str:
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


@pytest.mark.parametrize("text, reason", [
    (header("(True, 3)"), "shape is not valid: (True, 3)"),  # numpy takes True for 1
    (header("(4, False)"), "shape is not valid: (4, False)"),
    (header("(3.0, 3)"), "shape is not valid: (3.0, 3)"),
    (header("('a',)"), "shape is not valid: ('a',)"),
    (header("[4, 3]"), "shape is not valid: [4, 3]"),
    (header("(-1,)"), "shape (-1,)"),  # numpy takes any int
    (header("(4, -3)"), "shape (4, -3)"),
    (header("(4, 3)", fortran="'yes'"), "fortran_order is not a valid bool: 'yes'"),
    (header("(4, 3)", fortran="1"), "fortran_order is not a valid bool: 1"),
    (header("(4, 3)", descr="'garbage'"), "descr is not a valid dtype descriptor: 'garbage'"),
    (header("(4, 3)", descr="5"), "descr is not a valid dtype descriptor: 5"),
    (header("(10**30, 3)"), "malformed node or string on line 1: <ast.BinOp object>"),
])
def test_npy_header_fields_are_checked_strictly(tmp_path, text, reason):
    p = tmp_path / "m.npy"
    p.write_bytes(npy_with_header(text, V.tobytes()))
    expected = msg(f"{p}: not a readable .npy array (corrupt header: {reason})")
    with pytest.raises(InputError, match=expected):
        mesh_read.read_mesh(p)
    with pytest.raises(InputError, match=expected):
        mesh_read.npy_shape(p)
    z = tmp_path / "r.npz"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("vertices.npy", npy_with_header(text, V.tobytes()))
    with pytest.raises(InputError, match=msg(f"{z} (vertices): not a readable .npy array (corrupt header: {reason})")):
        mesh_read.read_mesh(z)


def test_npy_header_with_a_huge_shape(tmp_path):
    p = tmp_path / "m.npy"  # was OverflowError (numpy.prod in int64)
    p.write_bytes(npy_with_header(header(f"({10 ** 30}, 3)"), V.tobytes()))
    with pytest.raises(InputError, match=msg(
            f"{p}: a float64 array of shape ({10 ** 30}, 3) is larger than a mesh may be")):
        mesh_read.read_mesh(p)


def test_npy_with_short_data(tmp_path):
    p = tmp_path / "m.npy"
    p.write_bytes(_npy(V)[:-8])
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(p)
    assert str(err.value).startswith(f"{p}: not a readable .npy array (")


# --------------------------------------------------------------------------- OBJ faces

@pytest.mark.parametrize("index, message", [
    (str(10 ** 30), "a face refers to a vertex outside 1..3"),  # was OverflowError
    (str(2 ** 31), "a face refers to a vertex outside 1..3"),
    ("-" + str(10 ** 30), "a face refers to a vertex outside 1..3"),
    ("0", "a face refers to a vertex outside 1..3"),
    ("4", "a face refers to a vertex outside 1..3"),
    ("1.5", "a face line holds a non-integer vertex index"),
    ("/2", "a face line holds a non-integer vertex index"),
])
def test_obj_face_indices(tmp_path, index, message):
    p = tmp_path / "m.obj"
    p.write_text(f"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 {index}/7 3\n")
    with pytest.raises(InputError, match=msg(f"{p}: {message}")):
        mesh_read.read_obj(p)
    assert mesh_read.read_mesh(p).shape == (3, 3)  # the vertices alone do not look at faces


def test_obj_faces_that_are_not_all_triangles_give_none(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 1 2 3 4\nf 1 x 3\n")
    v, t = mesh_read.read_obj(p)
    assert v.shape == (4, 3) and t is None


def test_obj_corners_and_line_breaks(tmp_path):
    p = tmp_path / "m.obj"
    p.write_bytes(b"v 0 0 0\r\nv 1 0 0\rv 0 1 0 0.5 0.5 0.5\x0cvt 0 0\nf 1/1/1 2//2\t3/1\n")
    v, t = mesh_read.read_obj(p)
    assert v.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]] and t.tolist() == [[0, 1, 2]] and t.dtype == np.int32


# --------------------------------------------------------------------------- the former reader, as reference

def _reference_numbers(path, rows, first_line, what):
    tokens = [r.split() for r in rows]
    for k, t in enumerate(tokens):
        if len(t) != 3:
            raise InputError(f"{path}: line {first_line[k]}: expected 3 numbers ({what}), found {len(t)}")
    try:
        return np.array(tokens, dtype=np.float64).reshape(len(rows), 3)
    except ValueError:
        for k, t in enumerate(tokens):
            try:
                [float(x) for x in t]
            except ValueError:
                raise InputError(f"{path}: line {first_line[k]}: not a number in {' '.join(t)!r}") from None
        raise


def _reference_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from exc


def reference_obj(path: Path, want_faces: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """runtime.mesh_read's OBJ reader before it parsed with numpy (a list per line and token)."""
    lines = _reference_text(path).splitlines()
    rows, where, faces = [], [], []
    for i, line in enumerate(lines, 1):
        if line.startswith(("v ", "v\t")):
            rows.append(" ".join(line.split()[1:4]))
            where.append(i)
        elif want_faces and line.startswith(("f ", "f\t")):
            faces.append(line)
    vertices = _reference_numbers(path, rows, where, "x y z after 'v'")
    triangles = None
    if want_faces and faces:
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


def reference_xyz(path: Path) -> np.ndarray:
    lines = _reference_text(path).splitlines()
    where = [i for i, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    return _reference_numbers(path, [lines[i - 1] for i in where], where, "x y z")


def outcome(read, *args):
    """("ok", exact bytes of the arrays) or ("error", message); another exception: ("raised", type)."""
    try:
        result = read(*args)
    except InputError as exc:
        return ("error", str(exc))
    except Exception as exc:  # noqa: BLE001 (the reference's OverflowError and the like)
        return ("raised", type(exc).__name__)
    arrays = result if isinstance(result, tuple) else (result,)
    return ("ok",) + tuple(None if a is None else (a.dtype.str, a.shape, a.tobytes()) for a in arrays)


def assert_same_as_reference(path: Path) -> None:
    """The new readers give what the reference gives (values to the bit, or the same message); where
    the reference raised something else, the new ones raise our error."""
    if path.suffix == ".obj":
        pairs = [(lambda p: mesh_read._obj(p, True), lambda p: reference_obj(p, True)),
                 (lambda p: mesh_read._obj(p, False), lambda p: reference_obj(p, False))]
    else:
        pairs = [(mesh_read._xyz, reference_xyz)]
    for new, old in pairs:
        expected, got = outcome(old, path), outcome(new, path)
        if expected[0] == "raised":
            assert got[0] == "error", (path.read_bytes(), got)
        else:
            assert got == expected, path.read_bytes()


TOKENS = ["1", "2", "3", "0", "-1", "1.5", "1e3", "+4", "1_0", "nan", "x", "/1", "1/2/3", "2//3", "3/", "1" * 40,
          "0.1", "-0", "inf", "#", "0x1", "1e400", "-", "\u0661", "2147483648", "9" * 20]
SPACES = [" ", " ", " ", "\t", "  ", "\x1f", "\u00a0"]
BREAKS = ["\n", "\n", "\n", "\n", "\r\n", "\r", "\x0c", "\x1c", "\u2028", "\x85"]


def _text_file(draw, st, keywords) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        line = draw(st.sampled_from(keywords))
        for _ in range(draw(st.sampled_from([0, 1, 2, 3, 3, 3, 3, 4, 6, 7]))):
            line += draw(st.sampled_from(SPACES)) + draw(st.sampled_from(TOKENS))
        lines.append(line + draw(st.sampled_from(["", "", "", " ", "\t"])) + draw(st.sampled_from(BREAKS)))
    text = "".join(lines)
    return text.rstrip("\n") if draw(st.booleans()) else text


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REFERENCE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])


@REFERENCE
@given(st.data())
def test_obj_reader_reads_what_the_reference_reads(tmp_path, data):
    text = _text_file(data.draw, st, ["v", "v", "v", "f", "f", "vn", "", "#", " v", "vt", "o"])
    p = tmp_path / "m.obj"
    p.write_bytes(text.encode("utf-8") if data.draw(st.integers(0, 9)) else text.encode("utf-8") + b"\xff")
    assert_same_as_reference(p)


@REFERENCE
@given(st.data())
def test_xyz_reader_reads_what_the_reference_reads(tmp_path, data):
    text = _text_file(data.draw, st, ["", "", "", "#", " #", " "])
    p = tmp_path / "m.xyz"
    p.write_bytes(text.encode("utf-8"))
    assert_same_as_reference(p)


def test_a_real_sized_mesh_reads_as_the_reference_reads(tmp_path):
    from runtime.mesh_io import write_obj

    rng = np.random.default_rng(0)
    v = rng.normal(0, 50, (53215, 3)).astype(np.float32)
    t = rng.integers(0, len(v), (105000, 3))
    for name, colors in (("plain.obj", None), ("colours.obj", rng.random((len(v), 3)))):
        write_obj(tmp_path / name, v, t, colors)
        assert_same_as_reference(tmp_path / name)
    np.savetxt(tmp_path / "m.xyz", v, fmt="%.9g", header="a comment")
    assert_same_as_reference(tmp_path / "m.xyz")
    np.savetxt(tmp_path / "n.xyz", v, fmt="%.9g")
    assert_same_as_reference(tmp_path / "n.xyz")


# --------------------------------------------------------------------------- memory

_BOUNDED_CHILD = r"""
import json, resource, sys
from runtime import mesh_read

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

path, headroom = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    v, t = mesh_read.read_obj(path)
    print(json.dumps(["ok", v.shape, None if t is None else t.shape]))
except MemoryError:
    print(json.dumps(["MemoryError"]))
"""


def test_obj_parsing_memory_is_proportional_to_the_file(tmp_path):
    """16 MiB of the shortest lines ("v 0 0 0", "f 1 1 1": 2 Mi of each) in a process that may
    grow by 12x the file: the per-token Python reader needed about 29x (1.87 GB for 64 MiB)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to size the address-space limit")
    n = 1 << 20
    p = tmp_path / "short_lines.obj"
    p.write_bytes(b"v 0 0 0\n" * n + b"f 1 1 1\n" * n)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _BOUNDED_CHILD, str(p), str(12 * p.stat().st_size)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["ok", [n, 3], [n, 3]]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("suffix", [".obj", ".xyz", ".npy", ".npz"])
def test_a_folder_a_fifo_or_nothing_is_named_for_what_it_is(tmp_path, suffix):
    """Never opened (a FIFO would block the reader for ever): the message says what is there."""
    (tmp_path / f"folder{suffix}").mkdir()
    os.mkfifo(tmp_path / f"fifo{suffix}")
    for name, why in [("folder", "is a folder, not a file"),
                      ("fifo", "not a regular file (a FIFO, socket or device)"), ("none", "file not found")]:
        path = tmp_path / f"{name}{suffix}"
        with pytest.raises(InputError) as caught:
            mesh_read.read_mesh(path)
        assert str(caught.value) == f"{path}: {why}"
