"""A deterministic, UNTRAINED asset pack in the release's exact file layout.

No weights of the release can be downloaded here, so tests and the zero-setup demo run on this
pack. Magnitudes are realistic (ORIGINAL.md): He-initialised layers rescaled on calibration data
so activations stay O(1), BatchNorm running statistics measured on that data, a 53215-vertex
face-like mean shape in micrometres with a valid triangulation, 3DMM parameter statistics in the
quoted ranges. The outputs look like faces only because the 3DMM does: the networks are noise.
``SYNTHETIC.json`` at the pack's root says so, and every tool that reads the pack repeats it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from export.models import (IMAGE_SIZE, AlignCornersUpsample, InvertedResidual, N_VERTICES, FaceGenerator, Image3D, MobileNetV2,
                           SupervisedHeads, VoiceEmbedNet)
from export.progress import step
from runtime.cache import SYNTHETIC_PACK_VERSION

MANIFEST = "SYNTHETIC.json"
EPOCH = "48000"
PACK_VERSION = SYNTHETIC_PACK_VERSION  # names the cache entry, so defined on the torch-free side
PACK_STEPS = 3  # step messages of write_pack, for a progress bar
WARNING = ("UNTRAINED synthetic weights: outputs have the release's shapes and magnitudes "
           "but carry no information about the voice")


# ----------------------------------------------------------------------------- face geometry

def face_mesh(n_vertices: int = N_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """A face-like height field: (N, 3) float64 micrometres (x right, y up, z to the viewer)
    and (M, 3) int32 triangles, every vertex in at least one triangle."""
    from scipy.spatial import Delaunay

    half_w, half_h = 78000.0, 98000.0
    # Grid points inside the ellipse, nearest the centre first, exactly n_vertices of them.
    spacing = np.sqrt(np.pi * half_w * half_h / n_vertices) * 0.97
    xs = np.arange(-half_w, half_w + spacing, spacing)
    ys = np.arange(-half_h, half_h + spacing, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    radius = np.hypot(gx / half_w, gy / half_h)
    order = np.lexsort((np.arctan2(gy, gx), np.round(radius, 9)))[:n_vertices]
    x, y = gx[order], gy[order]
    tri = Delaunay(np.stack([x, y], 1)).simplices
    # Drop the hull's slivers: keep triangles whose edges are grid-sized.
    p = np.stack([x, y], 1)[tri]
    longest = np.max(np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2), axis=1)
    tri = tri[longest < 1.5 * spacing]
    if np.unique(tri).size != n_vertices:
        raise RuntimeError("synthetic face mesh left vertices without triangles")
    # Clockwise seen from +z, like the BFM's triangles: once the renderer flips y into image
    # rows the winding turns counter-clockwise and the normals face the viewer (and the light).
    p = np.stack([x, y], 1)[tri]
    cross = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    tri[cross > 0] = tri[cross > 0][:, [0, 2, 1]]

    u, v = x / half_w, y / half_h
    def bump(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-((u - cx) / sx) ** 2 - ((v - cy) / sy) ** 2)
    z = 55000.0 * np.sqrt(np.clip(1 - 0.8 * u ** 2 - 0.5 * v ** 2, 0, None))
    z += 26000.0 * bump(0, -0.05, 0.12, 0.35)                                      # nose
    z -= 9000.0 * (bump(-0.38, 0.22, 0.2, 0.1) + bump(0.38, 0.22, 0.2, 0.1))       # eye sockets
    z += 5000.0 * (bump(-0.36, 0.38, 0.28, 0.06) + bump(0.36, 0.38, 0.28, 0.06))   # brows
    z += 4000.0 * bump(0, -0.5, 0.28, 0.06) - 3000.0 * bump(0, -0.56, 0.3, 0.02)   # lips
    z += 6000.0 * bump(0, -0.85, 0.3, 0.2)                                         # chin
    return np.stack([x, y, z - 30000.0], 1), tri.astype(np.int32)


def _smooth_fields(rng: np.random.Generator, xyz: np.ndarray, count: int, amplitude: np.ndarray,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """``count`` smooth displacement fields (3N, count), field k of max amplitude ``amplitude[k]``."""
    u = xyz[:, 0] / np.abs(xyz[:, 0]).max()
    v = xyz[:, 1] / np.abs(xyz[:, 1]).max()
    out = np.empty((xyz.shape[0] * 3, count))
    for k in range(count):
        fx, fy = rng.uniform(0.3, 1.0 + 0.1 * k, 2)
        phase = rng.uniform(0, 2 * np.pi, 2)
        shape = np.cos(np.pi * fx * u + phase[0]) * np.cos(np.pi * fy * v + phase[1])
        if mask is not None:
            shape = shape * mask
        direction = rng.normal(size=3) * np.array([0.6, 0.6, 1.0])
        field = shape[:, None] * direction[None, :]
        out[:, k] = (field / np.abs(field).max() * amplitude[k]).reshape(-1)
    return out


def morphable_tensors(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The five 3DMM tensors of ``2D-to-3D-pretrained.tar`` and the triangles."""
    mean_shape, tri = face_mesh()
    # Parameter statistics in the ranges ORIGINAL.md quotes: shape std 1.3e4 .. 5.8e5, means down
    # to about -3.5e5; pose = rotation times a scale of 3.5e-4 .. 6e-4 (entries ~1e-4), translations
    # 60-75. The mean scale (4.6e-4) and offsets are 3DDFA's for its 120 x 120 crops: with this mesh
    # the mean face spans about 88 pixels of the 120 frame, centred as a crop's face is.
    shape_std = np.geomspace(5.8e5, 1.3e4, 40)
    shape_mean = np.clip(rng.normal(0, 0.25, 40) * shape_std, -3.5e5, 0.5e5)
    exp_std = np.geomspace(1.6, 0.16, 10)
    exp_mean = rng.normal(0, 0.4, 10)
    tex_std = np.geomspace(5e3, 50.0, 40)
    pose_mean = np.array([4.6e-4, 0, 0, 60.0, 0, 4.6e-4, 0, 74.0, 0, 0, 4.6e-4, -66.0])
    pose_std = np.array([1.7e-4, 7e-5, 4e-4, 3.0, 1.2e-4, 5e-5, 8e-5, 3.0, 4e-4, 1.2e-4, 1.7e-4, 3.0])
    param_mean = np.concatenate([pose_mean, shape_mean, exp_mean, np.zeros(40)])
    param_std = np.concatenate([pose_std, shape_std, exp_std, tex_std])

    # Bases scaled so one standard deviation moves the face by millimetres, as in the BFM.
    shp_amp = 9000.0 * 0.9 ** np.arange(40)
    w_shp = _smooth_fields(rng, mean_shape, 40, shp_amp) / shape_std
    lower = np.exp(-((mean_shape[:, 1] / 98000.0 + 0.5) / 0.35) ** 2)   # mouth and jaw
    w_exp = _smooth_fields(rng, mean_shape, 10, 4000.0 * 0.85 ** np.arange(10), lower) / exp_std
    # u is the mean shape minus the mean-parameter deformation, so p = mean gives the face above.
    u = mean_shape.reshape(-1) - w_shp @ shape_mean - w_exp @ exp_mean
    tensors = {"u": u[:, None], "w_shp": w_shp, "w_exp": w_exp,
               "param_mean": param_mean, "param_std": param_std}
    return {k: v.astype(np.float32) for k, v in tensors.items()}, tri


# ----------------------------------------------------------------------------- network weights

def _he_init(module: nn.Module, rng: np.random.Generator) -> None:
    """He-normal weights, small biases, BatchNorm affine near identity; numpy RNG for determinism."""
    for name, param in module.named_parameters():
        shape = tuple(param.shape)
        if name.endswith("weight") and param.dim() > 1:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith("weight"):  # BatchNorm gamma
            value = 1.0 + 0.1 * rng.normal(size=shape)
        else:
            value = 0.05 * rng.normal(size=shape)
        param.data.copy_(torch.from_numpy(value.astype(np.float32)))


def _calibrate(module: nn.Module, inputs: list[torch.Tensor], layers: list[nn.Module],
               targets: list[float]) -> None:
    """Rescale each listed layer in turn so its output has the target std and zero mean over the
    calibration inputs (data-dependent init), then record BatchNorm running statistics."""
    seen: dict[int, torch.Tensor] = {}
    for layer, target in zip(layers, targets):
        hook = layer.register_forward_hook(lambda m, i, o: seen.__setitem__(id(m), o.detach()))
        with torch.no_grad():
            module.eval()
            outs = []
            for x in inputs:
                module(x)
                outs.append(seen[id(layer)])
            out = torch.cat(outs)
            factor = target / out.std().clamp_min(1e-8)
            channel_mean = out.mean(dim=[d for d in range(out.dim()) if d != 1]) * factor
            # Scale weight and bias together (output scales by factor), then centre each channel.
            layer.weight.mul_(factor)
            if layer.bias is not None:
                layer.bias.mul_(factor).sub_(channel_mean)
        hook.remove()
    _record_batchnorm(module, inputs)


def _record_batchnorm(module: nn.Module, inputs: list[torch.Tensor]) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    module.train()
    with torch.no_grad():
        for x in inputs:
            module(x)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    module.eval()


def build_networks(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts of the five release networks (encoder, heads, generator, image3D, pose)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    # Calibration inputs: normalised-fbank-like noise with some temporal smoothness.
    fb = rng.normal(size=(4, 64, 1000))
    fb = (fb + np.roll(fb, 1, axis=2) + np.roll(fb, 2, axis=2)) / np.sqrt(3)
    fbank = [torch.from_numpy(fb[i:i + 2].astype(np.float32)) for i in (0, 2)]

    encoder = VoiceEmbedNet()
    _he_init(encoder, rng)
    _record_batchnorm(encoder, fbank)
    with torch.no_grad():
        emb = torch.cat([encoder(x) for x in fbank] + [nn.functional.normalize(
            torch.from_numpy(rng.normal(size=(12, 64)).astype(np.float32)), dim=1)])

    heads = SupervisedHeads()
    _he_init(heads, rng)
    _calibrate(heads, [emb], [heads.classifier_scale[1], heads.classifier_shape[1], heads.classifier_exp[1]],
               [0.5, 0.5, 0.5])

    generator = FaceGenerator()
    _he_init(generator, rng)
    convs = [m for m in generator.model if isinstance(m, nn.ConvTranspose2d)]
    _calibrate(generator, [emb[:, :, None, None]], convs, [1.0] * 5 + [0.45])
    with torch.no_grad():
        upsample = AlignCornersUpsample(64, IMAGE_SIZE)
        images = [upsample(generator(emb[i:i + 8, :, None, None])) for i in (0, 8)]

    def mobilenet(net: nn.Module, backbone: MobileNetV2) -> nn.Module:
        _he_init(net, rng)
        # Trained MobileNets keep the residual branches small (low gamma on each block's last
        # BatchNorm); with unit gammas a random network amplifies float32 rounding ~100-fold.
        for block in backbone.features:
            if isinstance(block, InvertedResidual):
                block.conv[-1].weight.data.mul_(0.25)
        _record_batchnorm(net, images)
        _calibrate(net, images, [getattr(backbone, name)[1] for name in
                                 ("classifier_ori", "classifier_shape", "classifier_exp", "classifier_texture")],
                   [1.0] * 4)  # normalised 3DMM parameters are z-scores: std ~1
        return net

    image3d = Image3D()
    mobilenet(image3d, image3d.backbone)
    pose = MobileNetV2()
    mobilenet(pose, pose)
    return {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
            for name, net in (("encoder", encoder), ("heads", heads), ("generator", generator),
                              ("image3d", image3d), ("pose", pose))}


# ----------------------------------------------------------------------------- writing the pack

def write_pack(root: str | Path, seed: int = 0, progress: Callable[[str], None] = print) -> Path:
    """Write a complete release-layout folder under ``root`` and return it."""
    from scipy.io import savemat

    root = Path(root)
    models = root / "pretrained_models"
    (models / "supervised_64").mkdir(parents=True, exist_ok=True)
    (root / "train.configs").mkdir(parents=True, exist_ok=True)

    step(progress, "synthetic pack: building the 3DMM (53215-vertex face-like mesh)")
    rng = np.random.default_rng(seed + 1)
    morph, tri = morphable_tensors(rng)
    savemat(str(root / "train.configs" / "tri.mat"), {"tri": (tri.T + 1).astype(np.int32)})

    step(progress, "synthetic pack: initialising and calibrating the networks (untrained)")
    nets = build_networks(seed)
    torch.save(nets["encoder"], models / "voice_embedding.pth")
    torch.save(nets["heads"], models / "supervised_64" / f"generator_{EPOCH}.pth")
    torch.save(nets["generator"], models / f"generator_{EPOCH}.pth")
    torch.save(nets["image3d"], models / f"image3D_{EPOCH}.pth")

    step(progress, "synthetic pack: writing 2D-to-3D-pretrained.tar")
    state = {f"module.IGM.backbone.{k}": v for k, v in nets["pose"].items()}
    state.update({f"module.{k}": torch.from_numpy(v) for k, v in morph.items()})
    # A training-time module the release's file also carries and our loader must ignore.
    extra = np.random.default_rng(seed + 2).normal(0, 0.05, (64, 1280)).astype(np.float32)
    state["module.forwardDirection.fc.weight"] = torch.from_numpy(extra)
    torch.save({"state_dict": state}, models / "2D-to-3D-pretrained.tar")

    manifest = {"synthetic": True, "trained": False, "warning": WARNING, "seed": seed,
                "pack_version": PACK_VERSION, "epoch": EPOCH, "n_vertices": N_VERTICES,
                "n_triangles": int(tri.shape[0])}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"synthetic pack: written to {root}")
    return root


def read_manifest(root: str | Path) -> dict | None:
    """The synthetic pack's manifest, or None for a real release folder."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
