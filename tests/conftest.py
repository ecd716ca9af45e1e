"""Shared fixtures. The synthetic models are built once per session through the same cache
path that ``cmp-face predict`` uses without ``--models`` (so that path is exercised too)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.build_log import BUILD_LOG
from tests.helpers.data import verify_on_shared_data

verify_on_shared_data()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # CMP_TEST_CACHE reuses a cache across runs while developing; CI builds a fresh one.
    path = Path(os.environ["CMP_TEST_CACHE"]) if os.environ.get("CMP_TEST_CACHE") else tmp_path_factory.mktemp("cmp-cache")
    os.environ["CMP_DEPLOY_CACHE"] = str(path)  # read by export.cache and by CLI subprocesses
    return path


@pytest.fixture(scope="session")
def models_dir(cache_dir) -> Path:
    pytest.importorskip("torch", reason="building the models needs the export extra")
    from export.cache import synthetic_models

    return synthetic_models(progress=BUILD_LOG)


@pytest.fixture(scope="session")
def pack_dir(models_dir) -> Path:
    """The synthetic release-layout folder the models were exported from."""
    return models_dir.parent / "release"
