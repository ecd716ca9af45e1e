"""Load a folder laid out like the research release into our PyTorch models, strictly.

Layout (ORIGINAL.md section 2)::

    pretrained_models/voice_embedding.pth                 encoder (both pipelines)
    pretrained_models/supervised_64/generator_<epoch>.pth supervised heads
    pretrained_models/generator_<epoch>.pth               unsupervised generator
    pretrained_models/image3D_<epoch>.pth                 unsupervised image -> 3DMM network
    pretrained_models/2D-to-3D-pretrained.tar             pose network + 3DMM tensors
    train.configs/tri.mat                                 triangles, 1-based, (3, M)

Every file is read with ``torch.load(weights_only=True)`` and every network is loaded with
strict key and shape matching; errors name the file and list what is wrong.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.models import (MobileNetV2, Morphable, SupervisedDecoder, UnsupervisedDecoder,
                           VoiceEmbedNet)
from runtime.errors import CheckpointError
from runtime.release_files import ReleaseFolder

POSE_PREFIX = "module.IGM.backbone."
MORPHABLE_KEYS = ("u", "w_shp", "w_exp", "param_mean", "param_std")
ALIAS_PREFIXES = ("features_first.", "features_second.")
_LIST_LIMIT = 8


def _short(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def load_tensor_file(path: Path) -> object:
    """``torch.load(weights_only=True)`` with our errors: no arbitrary pickles are ever executed."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than plain tensors "
            f"(weights_only load failed: {first})") from exc
    except Exception as exc:  # zip/pickle corruption surfaces as many exception types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def tensor_dict(obj: object, path: Path, what: str = "state dict") -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a mapping of names to tensors."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a {what} (a dict of tensors), found {type(obj).__name__}")
    bad = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {what} values must be tensors; not tensors: {_short(bad)}")
    return dict(obj)


def check_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Raise a CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
    hint = ""
    if missing and unexpected and all(k.startswith("module.") for k in unexpected):
        hint = " (the file looks saved from nn.DataParallel: strip the 'module.' prefix)"
    raise CheckpointError(f"{path} does not match {what}: " + "; ".join(parts) + hint)


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    check_state(module, state, path, what)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN or inf) in {_short(bad)}")
    module.load_state_dict(state, strict=True)


def check_aliases(state: dict[str, torch.Tensor], path: Path, prefix: str = "") -> None:
    """The release's split aliases must hold the same values as ``features``: the forward pass
    uses one copy, so two different copies would make the result depend on load order."""
    for key, value in state.items():
        rest = key[len(prefix):]
        if key.startswith(prefix) and rest.startswith(ALIAS_PREFIXES):
            canonical = prefix + "features." + rest.split(".", 1)[1]
            other = state.get(canonical)
            if other is not None and other.shape == value.shape and not torch.equal(other, value):
                raise CheckpointError(f"{path}: {key} differs from {canonical}; the two are the same "
                                      "layer in the release and must hold identical values")


def load_triangles(path: Path) -> np.ndarray:
    """``train.configs/tri.mat`` (key ``tri``, (3, M), 1-based) -> (M, 3) int32, 0-based."""
    from scipy.io import loadmat  # export-time dependency

    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        mat = loadmat(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from exc
    if "tri" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise CheckpointError(f"{path}: no 'tri' variable (found: {', '.join(keys) or 'none'})")
    tri = np.asarray(mat["tri"])
    if tri.ndim != 2 or tri.shape[0] != 3 or tri.shape[1] == 0:
        raise CheckpointError(f"{path}: 'tri' must have shape (3, M), found {tri.shape}")
    if tri.dtype.kind == "f" and not np.all(tri == np.round(tri)):
        raise CheckpointError(f"{path}: 'tri' holds non-integer vertex indices")
    if tri.min() < 1:
        raise CheckpointError(f"{path}: 'tri' indices must be 1-based (found {int(tri.min())})")
    return np.ascontiguousarray((tri.astype(np.int64) - 1).T.astype(np.int32))


def load_morphable(path: Path) -> tuple[Morphable, dict[str, torch.Tensor]]:
    """Read the 3DMM tensors and the pose-network weights from ``2D-to-3D-pretrained.tar``."""
    obj = load_tensor_file(path)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        found = type(obj).__name__ if not isinstance(obj, dict) else f"keys {_short(sorted(map(str, obj)))}"
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' entry, found {found}")
    state = obj["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' must be a dict of tensors, found {type(state).__name__}")
    needed = {f"module.{k}": k for k in MORPHABLE_KEYS}
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing 3DMM tensors: {', '.join(missing)}")
    t = {short: v for full, short in needed.items()
         for v in tensor_dict({full: state[full]}, path, "3DMM entry").values()}
    pose = tensor_dict({k[len(POSE_PREFIX):]: v for k, v in state.items() if k.startswith(POSE_PREFIX)},
                       path, "pose-network entry")
    n3 = t["u"].shape[0]
    expected = {"u": [(n3, 1), (n3,)], "w_shp": [(n3, 40)], "w_exp": [(n3, 10)],
                "param_mean": [(102,)], "param_std": [(102,)]}
    shapes = [f"module.{k}: {tuple(t[k].shape)}, expected {v[0]}" for k, v in expected.items()
              if tuple(t[k].shape) not in v]
    if shapes or n3 % 3:
        raise CheckpointError(f"{path}: malformed 3DMM tensors: "
                              + ("; ".join(shapes) or f"module.u has {n3} rows, not a multiple of 3"))
    bad = [f"module.{k}" for k, v in t.items() if not torch.isfinite(v.float()).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN or inf) in {', '.join(bad)}")
    return Morphable(**t), pose


def load_pose_net(pose_state: dict[str, torch.Tensor], path: Path) -> MobileNetV2:
    net = MobileNetV2()
    if not pose_state:
        raise CheckpointError(f"{path}: no pose-network weights (no keys starting with '{POSE_PREFIX}')")
    check_aliases(pose_state, path)
    # Some saves of the pose network carry the release's split aliases too: identical copies.
    state = {k: v for k, v in pose_state.items() if not k.startswith(ALIAS_PREFIXES)}
    load_strict(net, state, path, f"the pose MobileNetV2 (key names after '{POSE_PREFIX}')")
    return net


@dataclass
class LoadedRelease:
    encoder: VoiceEmbedNet
    decoder: nn.Module
    triangles: np.ndarray
    folder: ReleaseFolder


def load_release(root: str | Path, pipeline: str, epoch: str | int | None = None) -> LoadedRelease:
    """Load one pipeline of a release-layout folder into eval-mode PyTorch modules."""
    folder = ReleaseFolder.locate(root, pipeline, epoch)
    f = folder.files
    triangles = load_triangles(f["triangles"])
    morphable, pose_state = load_morphable(f["morphable"])
    n_vertices = morphable.n_vertices
    if triangles.max() >= n_vertices:
        raise CheckpointError(f"{f['triangles']}: triangle index {int(triangles.max()) + 1} exceeds the "
                              f"{n_vertices} vertices of the 3DMM in {f['morphable']}")

    encoder = VoiceEmbedNet()
    load_strict(encoder, tensor_dict(load_tensor_file(f["voice_embedding"]), f["voice_embedding"]),
                f["voice_embedding"], "the voice encoder (VoiceEmbedNet)")
    if pipeline == "supervised":
        decoder: nn.Module = SupervisedDecoder(morphable)
        load_strict(decoder.heads, tensor_dict(load_tensor_file(f["heads"]), f["heads"]), f["heads"],
                    "the supervised decoder (Generator1D_directMLP)")
    else:
        decoder = UnsupervisedDecoder(morphable)
        load_strict(decoder.generator, tensor_dict(load_tensor_file(f["generator"]), f["generator"]),
                    f["generator"], "the face generator")
        image3d_state = tensor_dict(load_tensor_file(f["image3d"]), f["image3d"])
        check_aliases(image3d_state, f["image3d"], prefix="backbone.")
        load_strict(decoder.image3d, image3d_state, f["image3d"], "image3D (MobileNetV2 with split aliases)")
        decoder.pose_net = load_pose_net(pose_state, f["morphable"])
    return LoadedRelease(encoder.eval(), decoder.eval(), triangles, folder)
