"""The models cache: lookup without torch, damage found and repaired, leftovers removed, list/clear."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import runtime.cache as cache
import runtime.models_folder as models_folder
from runtime.errors import CmpError, ModelError

ROOT = Path(__file__).resolve().parents[1]
FILES = {"encoder.onnx": b"encoder bytes " * 100, "decoder_supervised.onnx": b"decoder " * 300,
         "triangles.npy": b"triangles " * 50}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("CMP_DEPLOY_CACHE", str(path))
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_entry(entry: Path, files: dict[str, bytes] = FILES, fmt: int = 2) -> Path:
    """A finished entry laid out as export/cache.py writes it, with a format-1 or -2 manifest."""
    models = entry / "models"
    models.mkdir(parents=True)
    records = {}
    for name, data in files.items():
        (models / name).write_bytes(data)
        st = (models / name).stat()
        records[name] = digest(data) if fmt == 1 else {"sha256": digest(data), "size": len(data),
                                                       "mtime_ns": st.st_mtime_ns}
    (models / "models.json").write_text(json.dumps({"format": fmt, "synthetic": True,
                                                    "pipelines": ["supervised"], "files": records}))
    return models


def no_build(*args):
    raise AssertionError("nothing should be built")


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_cache_root_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CMP_DEPLOY_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "cmp-deploy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "cmp-deploy"
    monkeypatch.setenv("CMP_DEPLOY_CACHE", str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"


def test_finished_entry_is_found_by_size_and_mtime_without_hashing(root, monkeypatch):
    models = fake_entry(root / "synthetic-v2-seed0")
    monkeypatch.setattr(cache, "cache_builder", lambda command: no_build)
    hashed = []
    monkeypatch.setattr(models_folder, "sha256", lambda p: hashed.append(p.name) or digest(p.read_bytes()))
    messages = []
    assert cache.models_for(None, "supervised", progress=messages.append) == models
    assert hashed == [] and messages == []

    # Touched but unchanged: hashed once, its new mtime recorded, and not hashed again.
    os.utime(models / "encoder.onnx", ns=(1, 1))
    assert models_folder.check_models(models) == []
    assert hashed == ["encoder.onnx"]
    assert json.loads((models / "models.json").read_text())["files"]["encoder.onnx"]["mtime_ns"] == 1
    assert models_folder.check_models(models) == []
    assert hashed == ["encoder.onnx"]


def test_damage_is_described_exactly(root):
    models = fake_entry(root / "synthetic-v2-seed0")
    (models / "encoder.onnx").write_bytes(b"x" * len(FILES["encoder.onnx"]))  # same size, new mtime
    (models / "decoder_supervised.onnx").write_bytes(b"short")
    (models / "triangles.npy").unlink()
    assert models_folder.check_models(models) == [
        "encoder.onnx does not match its sha256 in models.json",
        "decoder_supervised.onnx has 5 bytes, models.json says 2400",
        "triangles.npy is missing"]
    (models / "triangles.npy").mkdir()  # a folder of the recorded size: refused before it is opened
    manifest = json.loads((models / "models.json").read_text())
    manifest["files"]["triangles.npy"]["size"] = (models / "triangles.npy").stat().st_size
    (models / "models.json").write_text(json.dumps(manifest))
    assert models_folder.check_models(models)[2] == "triangles.npy is not a regular file"
    (models / "models.json").write_text("{not json")
    assert models_folder.check_models(models) == ["models.json is unreadable (JSONDecodeError)"]
    (models / "models.json").write_text(json.dumps({"format": 99, "files": {"a": {}}}))
    assert models_folder.check_models(models) == ["models.json has an unknown format (99)"]
    (models / "models.json").unlink()
    assert models_folder.check_models(models) == ["models.json is missing"]


def test_format_1_entries_are_checked_by_hash_and_upgraded(root, monkeypatch):
    models = fake_entry(root / "synthetic-v2-seed0", fmt=1)
    monkeypatch.setattr(cache, "cache_builder", lambda command: no_build)
    assert cache.models_for(None, "supervised", progress=print) == models
    manifest = json.loads((models / "models.json").read_text())
    assert manifest["format"] == 2 and manifest["synthetic"] is True
    for name, data in FILES.items():
        assert manifest["files"][name] == {"sha256": digest(data), "size": len(data),
                                           "mtime_ns": (models / name).stat().st_mtime_ns}
    # A damaged format-1 entry is found too, and not upgraded.
    other = fake_entry(root / "synthetic-v2-seed1", fmt=1)
    (other / "triangles.npy").write_bytes(b"changed")
    assert models_folder.check_models(other) == ["triangles.npy does not match its sha256 in models.json"]
    assert json.loads((other / "models.json").read_text())["format"] == 1


def test_damaged_synthetic_entry_is_rebuilt(root, monkeypatch):
    models = fake_entry(root / "synthetic-v2-seed0")
    (models / "triangles.npy").unlink()
    built = []

    def build(entry, release, pipeline, epoch, seed, progress):
        assert not entry.exists()  # the damaged entry was removed first
        built.append((entry.name, release, seed))
        fake_entry(entry)

    monkeypatch.setattr(cache, "cache_builder", lambda command: build)
    messages = []
    assert cache.models_for(None, "supervised", progress=messages.append) == models
    assert built == [("synthetic-v2-seed0", None, 0)]
    assert messages == [f"the cached synthetic models in {root / 'synthetic-v2-seed0'} are damaged "
                        "(triangles.npy is missing): rebuilding them"]
    assert models_folder.check_models(models) == []
    assert sorted(p.name for p in root.iterdir()) == ["synthetic-v2-seed0"]


def fake_release(folder: Path) -> Path:
    files = {"pretrained_models/voice_embedding.pth": b"enc", "pretrained_models/2D-to-3D-pretrained.tar": b"3dmm",
             "train.configs/tri.mat": b"tri", "pretrained_models/supervised_64/generator_7.pth": b"heads"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_release_entry_key_is_unchanged_and_damage_names_the_command(root, tmp_path, monkeypatch):
    release = fake_release(tmp_path / "release")
    # The key existing caches were built with: sha256 of the sorted (relative path, sha256) pairs.
    pairs = sorted((str(p.relative_to(release)), digest(p.read_bytes())) for p in release.rglob("*") if p.is_file())
    key = hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
    entry = cache.release_entry(release, "supervised")
    assert entry == root / f"release-supervised-{key}"

    models = fake_entry(entry)
    monkeypatch.setattr(cache, "cache_builder", lambda command: no_build)
    assert cache.models_for(release, "supervised") == models
    (models / "encoder.onnx").unlink()
    with pytest.raises(ModelError) as err:
        cache.models_for(release, "supervised")
    assert str(err.value) == (f"the cached models in {entry} are damaged (encoder.onnx is missing); rebuild them "
                              f"with 'cmp-face cache clear release-supervised-{key}' and run this command again")
    assert entry.is_dir()  # a release entry is not removed behind the user's back


def test_release_files_are_hashed_once_until_they_change(root, tmp_path, monkeypatch):
    release = fake_release(tmp_path / "release")
    hashed: list[str] = []
    real = models_folder.sha256
    monkeypatch.setattr(models_folder, "sha256", lambda p: hashed.append(Path(p).name) or real(p))
    first = cache.release_entry(release, "supervised")
    assert sorted(hashed) == ["2D-to-3D-pretrained.tar", "generator_7.pth", "tri.mat", "voice_embedding.pth"]
    hashed.clear()
    assert cache.release_entry(release, "supervised") == first and hashed == []  # from the memo
    assert not any(e.name == cache.HASHES for e in cache.entries())  # the memo is not an entry
    heads = release / "pretrained_models" / "supervised_64" / "generator_7.pth"
    heads.write_bytes(b"other heads")  # changed: size and mtime differ, hashed again, another entry
    assert cache.release_entry(release, "supervised") != first and hashed == ["generator_7.pth"]
    (root / cache.HASHES).write_text("{not json")  # a damaged memo only costs the hashing
    hashed.clear()
    assert cache.release_entry(release, "supervised") != first and len(hashed) == 4
    monkeypatch.setattr(cache, "MAX_REMEMBERED", 2)  # bounded: the newest stay
    extra = release / "extra.bin"
    extra.write_bytes(b"x")
    cache.remembered_sha256([extra])
    memo = json.loads((root / cache.HASHES).read_text())
    assert len(memo) == 2 and list(memo)[-1] == str(extra.resolve())


def test_stale_partial_folders_are_removed_live_ones_kept(root, monkeypatch):
    fake_entry(root / "synthetic-v2-seed0")
    dead = root / f"synthetic-v2-seed0.partial-{dead_pid()}"
    (dead / "models").mkdir(parents=True)
    (dead / "models" / "encoder.onnx").write_bytes(b"x" * 1000)
    live = root / f"release-supervised-0123456789abcdef.partial-{os.getppid()}"
    (live / "models").mkdir(parents=True)
    reused = root / f"release-unsupervised-0123456789abcdef.partial-{os.getppid()}"  # live pid, old files
    (reused / "models").mkdir(parents=True)
    for path in (reused / "models", reused):
        os.utime(path, (time.time() - cache.STALE_AFTER_S - 60,) * 2)
    states = {e.name: e.state for e in cache.entries()}
    assert states == {"synthetic-v2-seed0": "ok", dead.name: "stale-partial", live.name: "building",
                      reused.name: "stale-partial"}

    monkeypatch.setattr(cache, "cache_builder", lambda command: no_build)
    messages = []
    cache.models_for(None, "supervised", progress=messages.append)
    assert messages == ["removed 2 unfinished build folders left by interrupted runs (1.0 kB)"]
    assert sorted(p.name for p in root.iterdir()) == sorted(["synthetic-v2-seed0", live.name])


BUILDER = """
import sys, time
from pathlib import Path
from export.cache import _build

def build(tmp, say):
    (tmp / "models").mkdir()
    (tmp / "models" / "encoder.onnx").write_bytes(b"x" * 4096)
    print("started", flush=True)
    time.sleep(600)

_build(Path(sys.argv[1]), 3, build, print)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_build_leaves_nothing_behind(root, sig):
    pytest.importorskip("torch")
    entry = root / "synthetic-v2-seed0"
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(entry)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        partial = root / f"synthetic-v2-seed0.partial-{proc.pid}"
        assert [(e.name, e.state) for e in cache.entries()] == [(partial.name, "building")]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    if sig == signal.SIGTERM:  # the build's own cleanup ran
        assert not partial.exists()
    else:  # SIGKILL: left behind, found stale, removed at the next lookup
        assert [(e.name, e.state) for e in cache.entries()] == [(partial.name, "stale-partial")]
        assert cache.remove_stale_partials() == [partial]
        assert not partial.exists()
    assert not entry.exists()


def test_entries_and_clear(root):
    fake_entry(root / "synthetic-v2-seed0")
    broken = fake_entry(root / "release-supervised-0123456789abcdef")
    (broken / "encoder.onnx").unlink()
    (root / "release-unsupervised-fedcba9876543210").mkdir()
    (root / "unrelated-folder").mkdir()
    building = root / f"synthetic-v2-seed1.partial-{os.getppid()}"
    building.mkdir()
    found = {e.name: e for e in cache.entries()}
    assert {n: (e.kind, e.state) for n, e in found.items()} == {
        "release-supervised-0123456789abcdef": ("release", "corrupt"),
        "release-unsupervised-fedcba9876543210": ("release", "incomplete"),
        "synthetic-v2-seed0": ("synthetic", "ok"),
        building.name: ("synthetic", "building")}
    sizes = {name: len(data) for name, data in FILES.items()}
    manifest = len((root / "synthetic-v2-seed0" / "models" / "models.json").read_bytes())
    assert found["synthetic-v2-seed0"].size == sum(sizes.values()) + manifest
    assert found["release-supervised-0123456789abcdef"].problems == ("encoder.onnx is missing",)

    with pytest.raises(CmpError) as err:
        cache.clear(["synthetic-v2-seed0", "nope"])
    assert str(err.value) == f"no cache entry named nope in {root} (see 'cmp-face cache list')"
    with pytest.raises(CmpError) as err:
        cache.clear([building.name])
    assert str(err.value) == (f"{building.name} is being built by a running process: wait for it to finish "
                              "(or stop that process) and clear it then")
    assert (root / "synthetic-v2-seed0").is_dir()  # nothing removed on a refusal

    assert cache.clear(["release-supervised-0123456789abcdef"]) == [root / "release-supervised-0123456789abcdef"]
    assert cache.clear() == [root / "release-unsupervised-fedcba9876543210", root / "synthetic-v2-seed0"]
    assert sorted(p.name for p in root.iterdir()) == sorted([building.name, "unrelated-folder"])


def test_cli_cache_list_and_clear(root, capsys):
    from runtime.cli import main

    assert main(["cache", "list"]) == 0
    assert capsys.readouterr().out == f"no cached models in {root}\n"
    models = fake_entry(root / "synthetic-v2-seed0")
    kb = f"{sum(p.stat().st_size for p in models.iterdir()) / 1000:.1f}"
    (root / "release-supervised-0123456789abcdef").mkdir()
    assert main(["cache", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:5] for line in lines[:3]] == [
        ["NAME", "KIND", "STATE", "SIZE", "CREATED"],
        ["release-supervised-0123456789abcdef", "release", "incomplete", "0.0", "kB"],
        ["synthetic-v2-seed0", "synthetic", "ok", kb, "kB"]]
    assert lines[3].split() == ["models:", str(models)]  # where to point --models
    assert lines[4] == f"2 entries in {root}, {kb} kB in all"
    assert main(["cache", "clear", "synthetic-v2-seed0"]) == 0
    assert capsys.readouterr().out == f"removed {root / 'synthetic-v2-seed0'} ({kb} kB)\n"
    assert main(["cache", "clear", "gone"]) == 2
    assert capsys.readouterr().err == (f"cmp-face: error: no cache entry named gone in {root} "
                                       "(see 'cmp-face cache list')\n")
    assert main(["cache", "clear"]) == 2  # not on a terminal: nothing asked, nothing removed
    assert capsys.readouterr().err == ("cmp-face: error: give the names of the entries to remove (see 'cmp-face "
                                       "cache list'), or --all to remove every one\n")
    assert (root / "release-supervised-0123456789abcdef").is_dir()
    assert main(["cache", "clear", "--all"]) == 0
    assert capsys.readouterr().out == f"removed {root / 'release-supervised-0123456789abcdef'} (0.0 kB)\n"
    assert main(["cache", "clear", "--all"]) == 0
    assert capsys.readouterr().out == f"nothing to remove in {root}\n"


BLOCK_TORCH = """
import importlib.abc, sys
tried = []
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            tried.append(name)
            raise ImportError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, BlockTorch())
"""


def run_without_torch(code: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CMP_DEPLOY_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_building_without_torch_says_what_to_install(tmp_path):
    done = run_without_torch(f"""
        from runtime.cli import main
        sys.exit(main(["predict", "--demo", "-o", {str(tmp_path / "out")!r}]))
    """, tmp_path / "empty-cache")
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("cmp-face: error: building models needs the export extra (torch is missing): "
                           "pip install 'cmp-deploy[export]', then run 'cmp-face cache build'; or pass --models DIR\n")


def test_predict_with_a_built_cache_never_imports_torch(models_dir, cache_dir, tmp_path):
    out = tmp_path / "out"
    done = run_without_torch(f"""
        from runtime.cli import main
        code = main(["predict", "--demo", "-o", {str(out)!r}])
        assert not tried and "torch" not in sys.modules, tried
        print("exit", code)
    """, cache_dir)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "exit 0", done.stderr
    assert (out / "mesh.obj").stat().st_size > 1_000_000
    assert "building" not in done.stderr


def test_special_files_in_an_entry_are_refused_unopened(root):
    """A FIFO where a model file (or the manifest) should be would block any reader forever."""
    models = fake_entry(root / "synthetic-v2-seed0")
    (models / "encoder.onnx").unlink()
    os.mkfifo(models / "encoder.onnx")
    env = {**os.environ, "CMP_DEPLOY_CACHE": str(root)}
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "cache", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "synthetic-v2-seed0" in done.stdout and "corrupt" in done.stdout
    assert "encoder.onnx is not a regular file" in done.stdout
    (models / "models.json").unlink()
    os.mkfifo(models / "models.json")
    assert models_folder.check_models(models) == ["models.json is not a regular file"]
    with pytest.raises(ModelError, match="models.json: not a regular file$"):
        models_folder.ModelsFolder.read(models)


def test_a_release_file_changed_in_size_with_its_old_mtime_restored_is_hashed_again(root, tmp_path):
    release = fake_release(tmp_path / "release")
    first = cache.release_entry(release, "supervised")
    heads = release / "pretrained_models" / "supervised_64" / "generator_7.pth"
    st = heads.stat()
    heads.write_bytes(b"heads, longer now")
    os.utime(heads, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert heads.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.release_entry(release, "supervised") != first


def test_a_build_folder_of_another_users_live_process_is_kept(root, monkeypatch):
    """os.kill(pid, 0) on another user's process raises PermissionError: that build is alive."""
    other = root / "synthetic-v2-seed0.partial-4242"
    (other / "models").mkdir(parents=True)
    real_kill = os.kill

    def kill(pid, sig):
        if pid == 4242:
            raise PermissionError(1, "Operation not permitted")
        return real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    assert {e.name: e.state for e in cache.entries()} == {other.name: "building"}
    assert cache.remove_stale_partials() == [] and other.is_dir()
    monkeypatch.setattr(os, "kill", lambda pid, sig: (_ for _ in ()).throw(ProcessLookupError()))
    assert {e.name: e.state for e in cache.entries()} == {other.name: "stale-partial"}
