"""The graphs of one pipeline, opened on one backend: what a :class:`runtime.Predictor` runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import ModelError
from runtime.models_folder import ModelsFolder, check_pipeline, check_precision
from runtime.runners import Backend, Runner, open_runner, select_backend

# Each graph's inputs and the outputs we rely on (the export's contract).
ENCODER_IO = (("fbank",), ("embedding",))
DECODER_IO = (("embedding",), ("params", "vertices"))
VOICE2MESH_IO = (("samples",), ("embedding", "params", "vertices"))


def _check_io(runner: Runner, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    have_in = tuple(i.name for i in runner.inputs)
    have_out = {o.name for o in runner.outputs}
    if have_in != inputs or not set(outputs) <= have_out:
        raise ModelError(f"{path}: unexpected inputs/outputs {have_in} -> {sorted(have_out)}; expected "
                         f"{inputs} -> {list(outputs)} (was it exported by cmp-deploy?)")


@dataclass
class PipelineGraphs:
    """The runners of one pipeline (``runtime.runners``: any backend), ready to run."""

    folder: ModelsFolder
    pipeline: str
    encoder: Runner
    decoder: Runner
    triangles: np.ndarray
    backend: Backend
    precision: str = "fp32"
    voice2mesh: Runner | None = None  # samples -> mesh in one graph, when asked for

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def manifest(self) -> dict:
        return self.folder.manifest

    @property
    def untrained(self) -> bool:
        return self.folder.untrained

    def describe(self) -> str:
        """What runs the graphs, e.g. "onnxruntime on cpu, fp32"."""
        return f"{self.backend}, {self.precision}"

    def close(self) -> None:
        for runner in (self.encoder, self.decoder, self.voice2mesh):
            if runner is not None:
                runner.close()

    @classmethod
    def open(cls, root: str | Path, pipeline: str = "supervised", device: str = "auto",
             threads: int | None = None, voice2mesh: bool = False, spinning: bool = False,
             backend: str = "auto", precision: str = "fp32", cuda_graph: bool = False) -> "PipelineGraphs":
        check_pipeline(pipeline)
        folder = ModelsFolder.read(root)
        folder.require_pipelines([pipeline])
        check_precision(precision)  # an unknown precision is refused before anything else
        chosen = select_backend(backend, device, folder.root)
        graphs = ["encoder", f"decoder_{pipeline}"] + ([f"voice2mesh_{pipeline}"] if voice2mesh else [])
        files = folder.require_files(precision, graphs, cpu=chosen.device == "cpu")

        def runner(graph: str, io: tuple[tuple[str, ...], tuple[str, ...]]) -> Runner:
            opened = open_runner(folder.root, graph, chosen, precision, threads=threads, spinning=spinning,
                                 cuda_graph=cuda_graph, file=files[graph])
            _check_io(opened, folder.root / files[graph], *io)
            return opened

        encoder = runner("encoder", ENCODER_IO)
        decoder = runner(f"decoder_{pipeline}", DECODER_IO)
        triangles = folder.triangles()
        fused = runner(f"voice2mesh_{pipeline}", VOICE2MESH_IO) if voice2mesh else None
        return cls(folder, pipeline, encoder, decoder, triangles, chosen, precision, fused)
