"""What a prediction returns: the mesh, the network outputs and per-stage timings."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def display_image(image_rgb_chw: np.ndarray) -> np.ndarray:
    """The release's display image: ``clamp(img, -1, 1) * 127.5 + 128``, truncated to uint8,
    RGB -> BGR, (120, 120, 3) HWC. float32 arithmetic, as the release."""
    x = np.clip(image_rgb_chw.astype(np.float32), -1.0, 1.0) * np.float32(127.5) + np.float32(128.0)
    return np.ascontiguousarray(x.astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1])


@dataclass
class Prediction:
    """One utterance's result.

    ``vertices`` is (N, 3) float32: for the supervised pipeline the scaled frontal mesh in 3DMM
    axes (x right, y up); for the unsupervised pipeline the mesh aligned to the 120x120 face
    image (x right, y down, as the release draws it). ``params`` are the raw network outputs
    (51 or 102 normalised 3DMM parameters). ``timings`` are milliseconds per stage.
    """

    pipeline: str
    embedding: np.ndarray
    params: np.ndarray
    vertices: np.ndarray
    triangles: np.ndarray
    untrained: bool = False
    face_image: np.ndarray | None = None      # (120, 120, 3) BGR uint8, unsupervised only
    pose_R: np.ndarray | None = None           # (3, 3)
    pose_offset: np.ndarray | None = None      # (3,)
    vertices_frontal: np.ndarray | None = None  # (N, 3) unaligned mesh, unsupervised only
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the input reader's warnings (e.g. truncated WAV)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written to ``result.npz``."""
        out = {"embedding": self.embedding, "params": self.params, "vertices": self.vertices}
        if self.pipeline == "unsupervised":
            out |= {"face_image": self.face_image, "pose_R": self.pose_R, "pose_offset": self.pose_offset,
                    "vertices_frontal": self.vertices_frontal}
        return out

    def save_npz(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, **self.arrays())
        return path

    # ------------------------------------------------------------------ drawing
    def render(self, size: int | None = None, background: np.ndarray | None = None) -> np.ndarray:
        """The lit mesh as a uint8 BGR image.

        Unsupervised: by default exactly the release's ``_overlap.png`` (the aligned mesh over
        the 120x120 generated face); with ``size`` the same scene at ``size`` pixels. Supervised:
        the frontal mesh centred and scaled into ``size`` (default 512) pixels.
        """
        from runtime.render import check_size, render_aligned, render_frontal, render_overlap

        if self.pipeline == "supervised":
            return render_frontal(self.vertices, self.triangles, check_size(size, 512), background)
        if size is None and background is None:
            return render_overlap(self.vertices, self.triangles, self.face_image)
        return render_aligned(self.vertices, self.triangles, check_size(size, self.face_image.shape[0]),
                              self.face_image if background is None else background)

    def image_vertices(self, size: int | None = None) -> np.ndarray:
        """``vertices`` in the pixel frame of :meth:`render` at ``size`` (float32 (N, 3), z toward
        the viewer)."""
        from runtime.render import FRAME, aligned_to_image, check_size, frontal_to_image

        if self.pipeline == "supervised":
            return frontal_to_image(self.vertices, check_size(size, 512))
        return aligned_to_image(self.vertices, check_size(size, FRAME))

    def depth(self, size: int | None = None) -> np.ndarray:
        """Float32 (size, size) depth map of the mesh as :meth:`render` draws it (larger z is
        nearer, -inf where the face does not cover the pixel)."""
        from runtime.render import FRAME, check_size, depth_map

        size = check_size(size, 512 if self.pipeline == "supervised" else FRAME)
        return depth_map(self.image_vertices(size), self.triangles, size)

    def overlay(self, image: np.ndarray, alpha: float = 0.6) -> np.ndarray:
        """Blend the lit mesh over a square uint8 BGR ``image`` (``alpha`` = mesh opacity)."""
        from Sim3DR.lighting import overlay

        from runtime.errors import InputError

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[0] != image.shape[1]:
            raise InputError(f"overlay: expected a square uint8 (H, H, 3) BGR image, got {image.dtype} {image.shape}")
        return overlay(image, self.render(size=image.shape[0], background=image), alpha)

    # ------------------------------------------------------------------ mesh files
    def write_obj(self, path: str | Path, colors: np.ndarray | None = None) -> Path:
        """Wavefront OBJ of ``vertices`` (optional per-vertex colours in [0, 1])."""
        from runtime.mesh_io import write_obj

        return write_obj(path, self.vertices, self.triangles, colors)

    def write_ply(self, path: str | Path, colors: np.ndarray | None = None) -> Path:
        """Binary little-endian PLY of ``vertices``."""
        from runtime.mesh_io import write_ply

        return write_ply(path, self.vertices, self.triangles, colors)

    def write_depth(self, path: str | Path, size: int | None = None) -> tuple[Path, Path]:
        """The depth map as a 16-bit PNG (0 empty, 1..65535 far..near) and a float32 ``.npy``."""
        from runtime.mesh_io import write_depth

        return write_depth(path, self.depth(size))
