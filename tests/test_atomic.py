"""All-or-nothing writers: a failure leaves the previous file (or nothing) and no temporary file."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.atomic import OutputFolder, check_writable, replacing
from runtime.errors import OutputError
from runtime.mesh_io import write_obj, write_png


def test_replacing_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "mesh.obj"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".obj" and tmp.name.startswith(".mesh.")
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.obj"]
    with replacing(target):  # nothing written (a plot skipped without matplotlib): left as it was
        pass
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["mesh.obj"]
    with replacing(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["mesh.obj"]


def test_writers_leave_no_partial_file_on_bad_input(tmp_path):
    v = np.zeros((3, 3), np.float32)
    with pytest.raises(Exception):
        write_obj(tmp_path / "m.obj", v, np.array([[0, 1, 7]]))  # index out of range: refused before writing
    with pytest.raises(Exception):
        write_png(tmp_path / "i.png", np.zeros((2, 2), np.float32))
    assert list(tmp_path.iterdir()) == []
    write_obj(tmp_path / "m.obj", v, np.array([[0, 1, 2]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.obj"]


def test_output_folder_commits_all_or_nothing(tmp_path):
    owned = ("a.txt", "b.txt", "c.txt")
    (tmp_path / "c.txt").write_text("from an earlier run")
    (tmp_path / "user.txt").write_text("not ours")
    with pytest.raises(ValueError):
        with OutputFolder(tmp_path, owned) as out:
            out.path("a.txt").write_text("new a")
            raise ValueError("late failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "user.txt"]
    with OutputFolder(tmp_path, owned) as out:
        out.path("a.txt").write_text("new a")
        out.path("b.txt").write_text("new b")
        written, replaced, removed = out.commit()
    assert [p.name for p in written] == ["a.txt", "b.txt"] and replaced == [] and removed == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "user.txt"]


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_output_folder_checks_every_destination_before_the_first_rename(tmp_path):
    owned = ("a.txt", "b.txt", "result.npz", "z.txt")
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "result.npz").mkdir()  # a folder where a file of ours goes
    (tmp_path / "result.npz" / "inside").write_text("the user's")
    before = _snapshot(tmp_path)
    from runtime.errors import CmpError

    with pytest.raises(CmpError) as err:
        with OutputFolder(tmp_path, owned) as out:
            for name in ("a.txt", "b.txt", "result.npz", "z.txt"):
                out.path(name).write_text(f"new {name}")
            out.commit()
    assert str(err.value) == f"{tmp_path / 'result.npz'}: exists and is not a file; move it away and run again " \
                             "(nothing was written)"
    assert _snapshot(tmp_path) == before


def test_output_folder_puts_replaced_files_back_when_a_rename_fails(tmp_path, monkeypatch):
    import os

    owned = ("a.txt", "b.txt", "c.txt")
    for name in owned:
        (tmp_path / name).write_text(f"old {name}")
    before = _snapshot(tmp_path)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with pytest.raises(OutputError) as err:
        with OutputFolder(tmp_path, owned) as out:
            for name in owned:
                out.path(name).write_text(f"new {name}")
            monkeypatch.setattr(os, "replace", failing)
            out.commit()
    monkeypatch.setattr(os, "replace", real)
    assert _snapshot(tmp_path) == before  # a.txt and b.txt were replaced, then put back
    assert str(err.value) == (f"{tmp_path}: cannot move the outputs into place (no space left on device; nothing "
                              "was changed)")


def test_a_failed_write_names_the_output_not_the_staging_folder(tmp_path):
    import errno
    import os

    with pytest.raises(OutputError) as err:
        with OutputFolder(tmp_path / "out", ("mesh.obj",)) as out:
            path = out.path("mesh.obj")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    assert str(err.value) == f"{tmp_path / 'out' / 'mesh.obj'}: cannot be written (no space left on device)"
    assert list((tmp_path / "out").iterdir()) == []  # the staging folder is gone


def test_check_writable_refuses_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"^{tmp_path}/file: exists and is not a folder$"):
        check_writable(tmp_path / "file")
    with pytest.raises(OutputError, match=f"^{tmp_path}/file/a/b: cannot be made \\({tmp_path}/file is not a folder\\)$"):
        check_writable(tmp_path / "file" / "a" / "b")
    check_writable(tmp_path / "new" / "deeper")  # creatable: nothing made
    check_writable(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_read_png_refuses_non_png_and_truncated_files(tmp_path):
    from runtime.errors import InputError
    from runtime.mesh_io import read_png

    good = write_png(tmp_path / "g.png", np.full((8, 8, 3), 7, np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError, match=f"^png: {cut} is damaged or truncated$"):
        read_png(cut)
    text = tmp_path / "t.png"
    text.write_text("hello")
    with pytest.raises(InputError, match=f"^png: {text} is not a PNG file$"):
        read_png(text)
    with pytest.raises(InputError, match="^png: cannot read"):
        read_png(tmp_path / "missing.png")
