"""Stand-in TensorRT engines: what export/to_trt.py writes, with a fake plan (no TensorRT here)."""
from __future__ import annotations

from pathlib import Path

from export.to_trt import Options, plan, sidecar_data
from runtime.atomic import write_json
from runtime.engines import Gpu
from runtime.models_folder import ModelsFolder, engine_file, engine_target, sidecar_file

H200 = Gpu("NVIDIA H200", (9, 0))
H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0))
A100 = Gpu("NVIDIA A100-SXM4-80GB", (8, 0))
T4 = Gpu("Tesla T4", (7, 5))
TRT10 = "10.13.0.35"


def make_engine(models: Path, graph: str = "encoder", gpu: Gpu = H200, version: str = TRT10,
                options: Options = Options(precision="fp32")) -> Path:
    """What build_engine writes, with a fake plan instead of TensorRT's."""
    job = plan(models, options, [graph])[0]
    level = {"none": "none", "same-cc": "same_compute_capability", "ampere+": "ampere_plus"}[options.hardware_compat]
    engine = models / engine_file(graph, options.precision, engine_target(gpu.compute_capability, level))
    engine.write_bytes(b"serialized plan of " + graph.encode())
    data = sidecar_data(job, options, engine, version, gpu, build_seconds=1.234)
    write_json(sidecar_file(engine), data)
    ModelsFolder.read(models).add_engine(data)
    return engine
