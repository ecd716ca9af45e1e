"""The project's shared test data (../shared/data), read when present; tests skip with a reason
when it is absent (a user's clone has none)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FBANKS = sorted((DATA / "fbank_preprocessed").glob("*.npy"))
WAVS = sorted((DATA / "voxceleb_wav").glob("*.wav"))


def verify_on_shared_data() -> None:
    """Let the exports of the test session (and of CLI subprocesses) also verify on the real data,
    when present (export.onnx_export reads these variables)."""
    if FBANKS:
        os.environ.setdefault("CMP_DEPLOY_VERIFY_FBANKS", str(DATA / "fbank_preprocessed"))
    if WAVS:
        os.environ.setdefault("CMP_DEPLOY_VERIFY_AUDIO", str(DATA / "voxceleb_wav"))


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
