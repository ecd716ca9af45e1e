"""A release-layout folder written from the spec alone (independent of export/): checkpoints with
the release's key lists and shapes typed out here, random tensors, a small 3DMM basis."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat

def mobilenet_keys() -> list[str]:
    """MobileNetV2 + heads state-dict keys, derived from the spec's table (not from our code)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["features.0.0.weight"] + [f"features.0.1.{k}" for k in bn]
    index = 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for _ in range(n):
            p = f"features.{index}.conv"
            if t == 1:
                keys += [f"{p}.0.0.weight"] + [f"{p}.0.1.{k}" for k in bn] + [f"{p}.1.weight"] + [f"{p}.2.{k}" for k in bn]
            else:
                keys += [f"{p}.0.0.weight"] + [f"{p}.0.1.{k}" for k in bn] + [f"{p}.1.0.weight"]
                keys += [f"{p}.1.1.{k}" for k in bn] + [f"{p}.2.weight"] + [f"{p}.3.{k}" for k in bn]
            index += 1
    keys += ["features.18.0.weight"] + [f"features.18.1.{k}" for k in bn]
    for head in ("ori", "shape", "exp", "texture"):
        keys += [f"classifier_{head}.1.weight", f"classifier_{head}.1.bias"]
    return keys


N_VERTICES = 300


def _tensor(rng: np.random.Generator, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1234, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.from_numpy(rng.uniform(0.5, 2.0, shape).astype(np.float32))
    scale = 1.0 if key.endswith(("running_mean", "bias")) and len(shape) == 1 else np.sqrt(2 / max(1, np.prod(shape[1:])))
    return torch.from_numpy((rng.normal(0, 1, shape) * (0.1 if len(shape) == 1 else scale)).astype(np.float32))


def mobilenet_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes for mobilenet_keys(), from the spec's table."""
    shapes, index, c_in = {}, 1, 32
    def conv_bn(prefix, c_out, c_in_g, k):
        shapes[f"{prefix}.0.weight"] = (c_out, c_in_g, k, k)
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.1.{n}"] = (c_out,)
        shapes[f"{prefix}.1.num_batches_tracked"] = ()
    conv_bn("features.0", 32, 3, 3)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for _ in range(n):
            hidden, p = c_in * t, f"features.{index}.conv"
            if t == 1:
                conv_bn(f"{p}.0", hidden, 1, 3)
                proj, bn = f"{p}.1", f"{p}.2"
            else:
                conv_bn(f"{p}.0", hidden, c_in, 1)
                conv_bn(f"{p}.1", hidden, 1, 3)
                proj, bn = f"{p}.2", f"{p}.3"
            shapes[f"{proj}.weight"] = (c, hidden, 1, 1)
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{bn}.{name}"] = (c,)
            shapes[f"{bn}.num_batches_tracked"] = ()
            index, c_in = index + 1, c
    conv_bn("features.18", 1280, 320, 1)
    for head, n in (("ori", 12), ("shape", 40), ("exp", 10), ("texture", 40)):
        shapes[f"classifier_{head}.1.weight"] = (n, 1280)
        shapes[f"classifier_{head}.1.bias"] = (n,)
    assert sorted(shapes) == sorted(mobilenet_keys())
    return shapes


def write_foreign_release(root: Path, seed: int = 0, epoch: str = "7") -> Path:
    """A release-layout folder written from the spec alone: key lists and shapes typed out
    here, tensors from numpy, shared storage for image3D's aliases (as torch.save of the
    release's module produces), extra training-time modules in the .tar."""
    rng = np.random.default_rng(seed)
    models = root / "pretrained_models"
    (models / "supervised_64").mkdir(parents=True)
    (root / "train.configs").mkdir()
    enc = OrderedDict()
    for conv, bn, c_in, c_out in ((0, 1, 64, 256), (3, 4, 256, 384), (6, 7, 384, 576), (9, 10, 576, 864)):
        enc[f"model.{conv}.weight"] = _tensor(rng, "w", (c_out, c_in, 3))
        for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            enc[f"model.{bn}.{n}"] = _tensor(rng, n, (c_out,))
    enc["model.12.weight"] = _tensor(rng, "w", (64, 864, 3))
    enc["model.12.bias"] = _tensor(rng, "bias", (64,))
    torch.save(enc, models / "voice_embedding.pth")

    heads = {f"classifier_{h}.1.{k}": _tensor(rng, k, (n, 64) if k == "weight" else (n,))
             for h, n in (("scale", 1), ("shape", 40), ("exp", 10)) for k in ("weight", "bias")}
    torch.save(heads, models / "supervised_64" / f"generator_{epoch}.pth")
    gen = {}
    for i, (ci, co, k) in zip((0, 2, 4, 6, 8, 10), ((64, 1024, 4), (1024, 512, 4), (512, 256, 4),
                                                    (256, 128, 4), (128, 64, 4), (64, 3, 1))):
        gen[f"model.{i}.weight"] = torch.from_numpy(rng.normal(0, 0.02, (ci, co, k, k)).astype(np.float32))
        gen[f"model.{i}.bias"] = _tensor(rng, "bias", (co,))
    torch.save(gen, models / f"generator_{epoch}.pth")

    shapes = mobilenet_shapes()
    image3d = {f"backbone.{k}": _tensor(rng, k, s) for k, s in shapes.items()}
    for k in list(image3d):
        if k.startswith("backbone.features."):
            i = int(k.split(".")[2])
            alias = "features_first" if i <= 8 else "features_second"
            image3d[k.replace("features.", f"{alias}.", 1)] = image3d[k]  # same storage
    torch.save(image3d, models / f"image3D_{epoch}.pth")

    n3 = 3 * N_VERTICES
    state = {f"module.IGM.backbone.{k}": _tensor(rng, k, s) for k, s in shapes.items()}
    state |= {"module.u": torch.from_numpy(rng.normal(0, 5e4, (n3, 1)).astype(np.float32)),
              "module.w_shp": torch.from_numpy(rng.normal(0, 1e-2, (n3, 40)).astype(np.float32)),
              "module.w_exp": torch.from_numpy(rng.normal(0, 1e3, (n3, 10)).astype(np.float32)),
              "module.param_mean": torch.from_numpy(np.r_[[6e-4, 0, 0, 60, 0, 6e-4, 0, 70, 0, 0, 6e-4, -65],
                                                          rng.normal(0, 1e4, 90)].astype(np.float32)),
              "module.param_std": torch.from_numpy(np.r_[[1e-4, 1e-4, 1e-4, 3] * 3,
                                                         rng.uniform(1e4, 5e5, 40), rng.uniform(0.1, 2, 50)].astype(np.float32)),
              "module.forwardDirection.conv1.weight": torch.zeros(8, 3, 3, 3),
              "module.reverseDirection.fc.bias": torch.zeros(5)}
    torch.save({"state_dict": state}, models / "2D-to-3D-pretrained.tar")
    tri = np.array([[i, i + 1, i + 2] for i in range(0, N_VERTICES - 2)], dtype=np.float64) + 1
    savemat(str(root / "train.configs" / "tri.mat"), {"tri": tri.T})
    return root
