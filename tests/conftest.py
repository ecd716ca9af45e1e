"""Shared fixtures. The synthetic models are built once per session through the same cache
path that ``cmp-face predict`` uses without ``--models`` (so that path is exercised too)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FBANKS = sorted((DATA / "fbank_preprocessed").glob("*.npy"))
WAVS = sorted((DATA / "voxceleb_wav").glob("*.wav"))


def real_face():
    """The real 38365-vertex BFM face (N, 3) float32 in [0, 1] and its (M, 3) int32 triangles."""
    import pickle

    import numpy as np

    folder = DATA / "bfm_3ddfa"
    if not (folder / "ncc_code.npy").exists() or not (folder / "tri.pkl").exists():
        pytest.skip(f"real BFM face not available under {folder}")
    v = np.load(folder / "ncc_code.npy").T.astype(np.float32)
    with open(folder / "tri.pkl", "rb") as f:
        t = np.ascontiguousarray(pickle.load(f).T, dtype=np.int32)
    return np.ascontiguousarray(v), t


def requires(paths: list[Path], what: str):
    return pytest.mark.skipif(not paths, reason=f"{what} not found under {DATA} (the shared test data)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # CMP_TEST_CACHE reuses a cache across runs while developing; CI builds a fresh one.
    path = Path(os.environ["CMP_TEST_CACHE"]) if os.environ.get("CMP_TEST_CACHE") else tmp_path_factory.mktemp("cmp-cache")
    os.environ["CMP_DEPLOY_CACHE"] = str(path)  # read by export.cache and by CLI subprocesses
    return path


class BuildLog(list):
    """Records the build's messages; ``step`` marks where the progress bar advances."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    def __call__(self, message: str) -> None:
        self.append(message)

    def step(self, message: str) -> None:
        self.append(message)
        self.steps.append(message)


BUILD_LOG = BuildLog()  # what building the session's synthetic models printed


@pytest.fixture(scope="session")
def models_dir(cache_dir) -> Path:
    pytest.importorskip("torch", reason="building the models needs the export extra")
    from export.cache import synthetic_models

    return synthetic_models(progress=BUILD_LOG)


@pytest.fixture(scope="session")
def pack_dir(models_dir) -> Path:
    """The synthetic release-layout folder the models were exported from."""
    return models_dir.parent / "release"
