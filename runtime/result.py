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
