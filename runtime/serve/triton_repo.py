"""A Triton Inference Server model repository from a models folder, and its offline validation.

Layout written (``cmp-face triton-repo --models DIR -o REPO``)::

    REPO/frontend/{config.pbtxt, 1/model.onnx}            samples [B, S] -> fbank [B, 64, T]
    REPO/encoder/{config.pbtxt, 1/model.onnx}             fbank -> embedding [B, 64]
    REPO/decoder_<pipeline>/{config.pbtxt, 1/model.onnx}  embedding -> params, vertices, ...
    REPO/cmp_<pipeline>/{config.pbtxt, 1/}                ensemble: samples -> the fused outputs

(``--fused``: one ``voice2mesh_<pipeline>`` model instead of the three steps.) The ensemble
is named like the model of ``cmp-face serve`` and takes the same ``samples`` (FP32, 16 kHz,
int16-scale, no VAD) and answers the same outputs, so one client works against both. With
``backend="tensorrt"`` each graph is a TensorRT plan (``model.plan``) copied from the models
folder's engines, with CUDA graphs on. Dims and datatypes come from the ONNX files (the
engines are built from them). No torch; onnxruntime reads the ONNX signatures.

:func:`validate_repository` parses every ``config.pbtxt`` into tritonclient's
``ModelConfig`` protobuf (unknown fields are refused) and checks what the parser cannot:
name = folder, version folders and model files, inputs/outputs equal the ONNX files', and the
ensemble's steps wired completely.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime.audio import SAMPLE_RATE
from runtime.dtypes import BY_ONNX
from runtime.errors import InputError, ModelError
from runtime.atomic import replacing
from runtime.models_folder import PRECISIONS, ModelsFolder, check_pipeline, engine_file, sha256
from runtime.runners.select import BACKENDS as RUNNER_BACKENDS
from runtime.runners.select import parse_device

# Triton backends (what runs each graph); 'cmp-face triton-repo --backend' also takes auto and onnxruntime-trt.
BACKENDS = ("onnxruntime", "tensorrt")
MAX_BATCH = 32  # the largest batch every graph and engine of a models folder takes (engine profiles end there)
WARMUP_SECONDS = 6        # real-shaped warm-up: 6 s of samples, the encoder's 1000+ frames
ENSEMBLE_VERSION = "1"


@dataclass
class Tensor:
    name: str
    data_type: str            # TYPE_FP32 ...
    shape: list[int]          # full shape, -1 for symbolic dims (batch included)


def onnx_signature(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """Inputs and outputs of an ONNX file, as ONNX Runtime reads them (remembered by content:
    hashing is faster than opening a session, and a repository's model.onnx is its source)."""
    digest = sha256(Path(path))
    if digest not in _SIGNATURES:
        _SIGNATURES[digest] = _read_signature(Path(path))
    return _SIGNATURES[digest]


_SIGNATURES: dict[str, tuple[list[Tensor], list[Tensor]]] = {}


def _read_signature(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    from runtime.runners.loaders import open_session

    session = open_session(path, ["CPUExecutionProvider"])

    def tensors(args) -> list[Tensor]:
        return [Tensor(a.name, BY_ONNX[a.type].triton, [d if isinstance(d, int) else -1 for d in a.shape])
                for a in args]

    return tensors(session.get_inputs()), tensors(session.get_outputs())


def _dims(shape: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _io_block(kind: str, tensors: list[Tensor]) -> str:
    items = [f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: {_dims(t.shape[1:])}\n  }}'
             for t in tensors]
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def _warmup_dims(t: Tensor) -> list[int]:
    """A real-shaped example of one (un-batched) input: 6 s of samples, or the encoder's frames."""
    frames = WARMUP_SECONDS * SAMPLE_RATE // 160 + 1
    known = {"samples": [WARMUP_SECONDS * SAMPLE_RATE], "fbank": [64, max(frames, 1000)]}
    if t.name in known:
        return known[t.name]
    return [d if d > 0 else 1 for d in t.shape[1:]]


def instance_kind(device: str) -> tuple[str, int | None]:
    """A device (runtime.runners' values) as a Triton instance kind and, for ``cuda:N``, the GPU."""
    kind, index = parse_device(device)
    explicit = ":" in str(device)
    return {"cpu": "KIND_CPU", "cuda": "KIND_GPU", "auto": "KIND_AUTO"}[kind], index if explicit else None


def model_config(name: str, backend: str, inputs: list[Tensor], outputs: list[Tensor], max_batch: int,
                 queue_delay_us: int, instances: int, device: str, ort_tensorrt: bool = False) -> str:
    kind, gpu = instance_kind(device)
    gpus = f"    gpus: [ {gpu} ]\n" if gpu is not None else ""
    text = [f'name: "{name}"\n',
            'backend: "onnxruntime"\n' if backend == "onnxruntime" else 'platform: "tensorrt_plan"\n',
            f"max_batch_size: {max_batch}\n", _io_block("input", inputs), _io_block("output", outputs),
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n",
            f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n{gpus}  }}\n]\n"]
    warm = "".join(f'    inputs {{\n      key: "{t.name}"\n      value {{\n        data_type: {t.data_type}\n'
                   f"        dims: {_dims(_warmup_dims(t))}\n        random_data: true\n      }}\n    }}\n"
                   for t in inputs)
    text.append(f'model_warmup [\n  {{\n    name: "real_shaped_batch1"\n    batch_size: 1\n{warm}  }}\n]\n')
    if backend == "tensorrt":
        text.append("optimization {\n  cuda {\n    graphs: true\n  }\n}\n")
    elif ort_tensorrt and kind == "KIND_GPU":
        text.append('optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n'
                    '      {\n        name: "tensorrt"\n      }\n    ]\n  }\n}\n')
    return "".join(text)


def ensemble_config(name: str, inputs: list[Tensor], outputs: list[Tensor], max_batch: int,
                    steps: list[tuple[str, list[Tensor], list[Tensor]]]) -> str:
    """Steps are chained by tensor name: each step's inputs and outputs keep their names."""
    blocks = []
    for model, step_in, step_out in steps:
        maps = "".join(f'      input_map {{\n        key: "{t.name}"\n        value: "{t.name}"\n      }}\n'
                       for t in step_in)
        maps += "".join(f'      output_map {{\n        key: "{t.name}"\n        value: "{t.name}"\n      }}\n'
                        for t in step_out)
        blocks.append(f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}')
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n' + _io_block("input", inputs)
            + _io_block("output", outputs) + "ensemble_scheduling {\n  step [\n" + ",\n".join(blocks) + "\n  ]\n}\n")


# ------------------------------------------------------------------------------------ writing


def _onnx_file(folder: ModelsFolder, graph: str, precision: str) -> Path:
    """The ONNX file that serves ``graph`` at ``precision``, as the folder's manifest lists it."""
    path = folder.root / folder.precision_file(graph, precision)
    if not path.is_file():
        raise ModelError(f"{path}: not found (the {precision} {graph} graph); export it first")
    return path


def _engine_file(models: Path, graph: str, precision: str, target: str | None) -> Path:
    """The engine ``<graph>_<precision>_<target>.engine`` (runtime.engines' naming) built from
    that ONNX file; with several targets in the folder, ``target`` chooses (e.g. ``sm90``)."""
    found = sorted(models.glob(engine_file(graph, precision, target or "*")))
    if not found:
        raise ModelError(f"{models}: no TensorRT engine {engine_file(graph, precision, target or '<target>')}: "
                         f"build the engines first (python export/to_trt.py --models {models} --precision "
                         f"{precision}), or use --backend onnxruntime")
    if len(found) > 1:
        raise ModelError(f"{models}: several engines for {graph} ({precision}): "
                         f"{', '.join(p.name for p in found)}; choose the serving GPU's with --engine-target")
    return found[0]


def _place(source: Path, target: Path, link: bool) -> None:
    """A copy of ``source`` (the repository's file must not alias the models folder's: an edit of
    one would change the other); a hard link when asked for (same file system, no copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


MARKER = ".cmp-triton-repo"  # lists the model folders cmp-face triton-repo wrote in a repository
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _ours(out: Path) -> set[str]:
    """The model folders an earlier run wrote in ``out`` (its marker's ``model:`` lines)."""
    try:
        text = (out / MARKER).read_text()
    except (OSError, UnicodeDecodeError):
        return set()
    return {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model:")}


def _inside(root: Path, path: Path) -> Path:
    """``path``, refused unless it resolves inside ``root`` (no write may leave the repository)."""
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{path}: resolves outside the repository {root}; refusing to write there")
    return path


def write_repository(models: str | os.PathLike, out: str | os.PathLike, pipelines: list[str] | None = None,
                     backend: str = "onnxruntime", precision: str = "fp32", instances: int = 1,
                     device: str = "cpu", max_batch: int = 32, queue_delay_us: int = 2000,
                     fused: bool = False, ort_tensorrt: bool = False, engine_target: str | None = None,
                     link: bool = False) -> list[Path]:
    """Write this models folder's Triton models into the repository ``out`` and return their folders.

    ``out`` may be a shared repository: only the model folders written here are replaced (each
    written beside, validated, then renamed into place; all of them, or none), every other entry
    is left as it is. A model folder of the same name that an earlier run did not write is refused.
    Files are copied (``link``: hard-linked) from the models folder."""
    models, out = Path(models), Path(out)
    if backend not in RUNNER_BACKENDS:
        raise InputError(f"unknown backend {backend!r}: choose one of {', '.join(RUNNER_BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    try:
        gpu_instances = instance_kind(device)[0] == "KIND_GPU"
    except ModelError as exc:
        raise InputError(str(exc)) from None
    if backend == "auto":  # plans where the folder has engines for this precision and the instances are GPUs
        has_engines = any(models.glob(engine_file("*", precision, engine_target or "*")))
        backend = "tensorrt" if gpu_instances and has_engines else "onnxruntime"
    elif backend == "onnxruntime-trt":
        backend, ort_tensorrt = "onnxruntime", True
    if backend == "tensorrt" and not gpu_instances:
        raise InputError("TensorRT plans run on GPU instances: use --device gpu")
    if not 1 <= instances <= 64 or not 1 <= max_batch <= MAX_BATCH or not 0 <= queue_delay_us <= 10_000_000:
        raise InputError(f"--instances 1..64, --max-batch 1..{MAX_BATCH}, --max-queue-delay-us 0..10^7 "
                         f"(got {instances}, {max_batch}, {queue_delay_us})")
    folder = ModelsFolder.read(models)
    pipelines = list(dict.fromkeys(check_pipeline(p) for p in pipelines)) if pipelines else list(folder.pipelines)
    folder.require_pipelines(pipelines)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")

    graphs = {}  # model name -> (graph file stem)
    ensembles = {}
    for p in pipelines:
        steps = [f"voice2mesh_{p}"] if fused else ["frontend", "encoder", f"decoder_{p}"]
        for g in steps:
            graphs[g] = g
        ensembles[f"cmp_{p}"] = steps
    names = [*graphs, *ensembles]
    assert all(_MODEL_NAME.match(n) for n in names), names  # from fixed graph and pipeline names
    earlier = _ours(out)
    foreign = [n for n in names if (out / n).exists() and n not in earlier]
    if foreign:
        raise InputError(f"{out}: holds {', '.join(foreign)}, which cmp-face triton-repo did not write; "
                         "choose another repository or remove them")
    signatures = {g: onnx_signature(_onnx_file(folder, g, precision)) for g in graphs}
    sources = {g: _onnx_file(folder, g, precision) if backend == "onnxruntime" else
               _engine_file(models, g, precision, engine_target) for g in graphs}
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()

    staging = _inside(root, out / f".cmp-triton-repo.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for g in graphs:
            inputs, outputs = signatures[g]
            model_dir = staging / g
            _place(sources[g], model_dir / "1" / ("model.onnx" if backend == "onnxruntime" else "model.plan"), link)
            (model_dir / "config.pbtxt").write_text(model_config(g, backend, inputs, outputs, max_batch,
                                                              queue_delay_us, instances, device, ort_tensorrt))
        for name, steps in ensembles.items():
            first_in = signatures[steps[0]][0]
            # The fused graph's outputs: every step's, except the frontend's fbank (an ensemble
            # tensor may feed a later step and be an output too: the embedding is both).
            outs = [t for s in steps if s != "frontend" for t in signatures[s][1]]
            (staging / name / ENSEMBLE_VERSION).mkdir(parents=True)
            (staging / name / "config.pbtxt").write_text(ensemble_config(
                name, first_in, outs, max_batch, [(s, *signatures[s]) for s in steps]))
        validate_repository(staging, models, precision)
        _swap_in(out, staging, names, earlier, models, backend, precision)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / n for n in sorted(names)]


def _swap_in(out: Path, staging: Path, names: list[str], earlier: set[str], models: Path, backend: str,
             precision: str) -> None:
    """Move the staged model folders into ``out``, replacing our own earlier ones; on a failure
    midway every replaced folder is put back."""
    backup = staging / ".replaced"
    backup.mkdir()
    moved: list[str] = []
    try:
        for name in names:
            if (out / name).exists():
                (out / name).rename(backup / name)
            moved.append(name)
            (staging / name).rename(out / name)
    except OSError:
        for name in reversed(moved):
            shutil.rmtree(out / name, ignore_errors=True)
            if (backup / name).exists():
                (backup / name).rename(out / name)
        raise
    marker = [f"models: {models.resolve()}", f"backend: {backend}", f"precision: {precision}"]
    marker += [f"model: {n}" for n in sorted(set(names) | (earlier & {p.name for p in out.iterdir()}))]
    with replacing(out / MARKER) as tmp:
        tmp.write_text("\n".join(marker) + "\n")


# ------------------------------------------------------------------------------------ validation


def model_config_pb2():
    """tritonclient's generated ``model_config_pb2`` module. ``tritonclient.grpc`` refuses to
    import without grpcio, so the file is loaded by path when that import fails."""
    try:
        from tritonclient.grpc import model_config_pb2 as module
        return module
    except ImportError:
        raise ModelError("validating a Triton repository needs tritonclient: pip install 'tritonclient[http]'") from None
    except RuntimeError:  # "The installation does not include grpc support"
        import tritonclient

        path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
        spec = importlib.util.spec_from_file_location("tritonclient_model_config_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def parse_config(path: Path):
    """``config.pbtxt`` -> ``inference.ModelConfig``; a syntax error or unknown field is a ModelError."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    try:
        return text_format.Parse(path.read_text(), pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelError(f"{path}: not a valid Triton model configuration ({exc})") from None


def _config_tensors(config, kind: str) -> dict[str, tuple[str, list[int]]]:
    pb2 = model_config_pb2()
    return {t.name: (pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, kind)}


def validate_repository(repo: str | os.PathLike, models: str | os.PathLike | None = None,
                        precision: str = "fp32") -> list[str]:
    """Check every model of ``repo``; raise ModelError listing every problem, else return the
    model names. ``models``: the folder whose ONNX files plans were built from (to check a
    plan's inputs and outputs; ONNX models are checked against their own file)."""
    repo = Path(repo)
    problems: list[str] = []
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / "config.pbtxt"
        if not path.is_file():
            problems.append(f"{folder.name}: no config.pbtxt")
            continue
        try:
            configs[folder.name] = parse_config(path)
        except ModelError as exc:
            problems.append(str(exc))
    for name, config in configs.items():
        folder = repo / name
        if config.name != name:
            problems.append(f"{name}: config name {config.name!r} differs from its folder")
        versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            problems.append(f"{name}: no version folder (e.g. {name}/1/)")
        if config.platform == "ensemble":
            problems += _check_ensemble(name, config, configs)
            continue
        filename = "model.onnx" if config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx" else \
            "model.plan" if config.backend == "tensorrt" or config.platform == "tensorrt_plan" else None
        if filename is None:
            problems.append(f"{name}: unexpected backend {config.backend!r} / platform {config.platform!r}")
            continue
        for v in versions:
            if not (v / filename).is_file():
                problems.append(f"{name}: {v.name}/{filename} is missing")
        source = None
        if filename == "model.onnx" and versions and (versions[0] / filename).is_file():
            source = versions[0] / filename
        elif filename == "model.plan" and models is not None:
            source = _onnx_file(ModelsFolder.read(models), name, precision)
        if source is not None:
            problems += _check_signature(name, config, *onnx_signature(source))
    if problems:
        raise ModelError(f"{repo}: invalid Triton repository:\n  " + "\n  ".join(problems))
    return sorted(configs)


def _check_signature(name: str, config, inputs: list[Tensor], outputs: list[Tensor]) -> list[str]:
    problems = []
    batched = config.max_batch_size > 0
    for kind, tensors in (("input", inputs), ("output", outputs)):
        declared = _config_tensors(config, kind)
        actual = {t.name: (t.data_type, t.shape[1:] if batched else t.shape) for t in tensors}
        if batched and any(t.shape[0] != -1 for t in tensors):
            problems.append(f"{name}: max_batch_size > 0 but the graph's first {kind} dimension is fixed")
        if declared != actual:
            problems.append(f"{name}: {kind}s {declared} differ from the ONNX file's {actual}")
    return problems


def _check_ensemble(name: str, config, configs: dict) -> list[str]:
    """Every step's model exists, its inputs all come from the ensemble's inputs or an earlier
    step, its map keys are real tensors of that model with the same types, and every ensemble
    output is produced."""
    problems = []
    available = _config_tensors(config, "input")
    wanted = _config_tensors(config, "output")
    steps = config.ensemble_scheduling.step
    if not steps:
        problems.append(f"{name}: ensemble without steps")
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
            continue
        m_in, m_out = _config_tensors(model, "input"), _config_tensors(model, "output")
        if set(step.input_map) != set(m_in):
            problems.append(f"{name}: step {step.model_name} maps inputs {sorted(step.input_map)}, "
                            f"the model takes {sorted(m_in)}")
        for key, value in step.input_map.items():
            if value not in available:
                problems.append(f"{name}: step {step.model_name} reads {value!r}, which no earlier step "
                                "or ensemble input provides")
            elif key in m_in and available[value] != m_in[key]:
                problems.append(f"{name}: {value!r} is {available[value]} but {step.model_name}.{key} "
                                f"takes {m_in[key]}")
        for key, value in step.output_map.items():
            if key not in m_out:
                problems.append(f"{name}: step {step.model_name} has no output {key!r}")
                continue
            available[value] = m_out[key]
    for out, spec in wanted.items():
        if out not in available:
            problems.append(f"{name}: ensemble output {out!r} is produced by no step")
        elif available[out] != spec:
            problems.append(f"{name}: ensemble output {out!r} is declared {spec}, its step gives {available[out]}")
    return problems
