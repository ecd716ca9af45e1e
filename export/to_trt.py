"""Build TensorRT engines from the ONNX files of a models folder (no torch).

    python export/to_trt.py --models MODELS                     # FP16 engines of every pipeline
    python export/to_trt.py --models MODELS --precision int8 --graphs encoder
    python export/to_trt.py --models MODELS --dry-run           # check, print the plan, write trtexec.sh

One code path for TensorRT 10.x (10.12+) and 11.x: the precision is what the ONNX file carries
(``<graph>.onnx`` FP32, ``<graph>_fp16.onnx`` FP16 with FP32 islands, ``<graph>_int8.onnx`` Q/DQ),
built as a strongly typed network; the FP16/INT8 builder flags (removed in 11.x) are never used.
Each engine gets a JSON sidecar (TensorRT version, GPU, precision, profiles, source sha256, build
options) that the runtime checks before it loads the engine (runtime/engines.py).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.atomic import replacing, write_json  # noqa: E402
from runtime.cli.args import add_models, add_precision  # noqa: E402
from runtime.cli.shell import program  # noqa: E402
from runtime.engines import BUILD_SCRIPT, HARDWARE_COMPAT, SIDECAR_FORMAT, Gpu, rebuild_command  # noqa: E402
from runtime.errors import CmpError, EngineError, ModelError  # noqa: E402
from runtime.models_folder import (PIPELINES, PRECISION_COMMANDS, ModelsFolder,  # noqa: E402
                                   engine_file, engine_target, graphs, onnx_file, sha256, sidecar_file)
from runtime.plugins import Command  # noqa: E402
from runtime.profiles import DEFAULT_MAX_SECONDS, Profile, check_max_seconds, derive_profiles  # noqa: E402
from runtime.runners.cuda import current_gpu, import_tensorrt  # noqa: E402

DEFAULT_WORKSPACE_MIB = 4096
DEFAULT_OPT_LEVEL = 3  # TensorRT's own default
TRTEXEC_SCRIPT = "trtexec.sh"


@dataclass(frozen=True)
class Options:
    precision: str = "fp16"
    max_seconds: float = DEFAULT_MAX_SECONDS
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    opt_level: int = DEFAULT_OPT_LEVEL
    hardware_compat: str = "none"      # a key of HARDWARE_COMPAT: none, same-cc, ampere+
    version_compatible: bool = False
    timing_cache: Path | None = None   # None: <models>/trt-timing-<TensorRT version>-<target>.cache

    def cli(self) -> tuple[str, ...]:
        """The non-default options as command-line words (for rebuild commands)."""
        words: list[str] = []
        if self.max_seconds != DEFAULT_MAX_SECONDS:
            words += ["--max-seconds", f"{self.max_seconds:g}"]
        if self.workspace_mib != DEFAULT_WORKSPACE_MIB:
            words += ["--workspace", str(self.workspace_mib)]
        if self.opt_level != DEFAULT_OPT_LEVEL:
            words += ["--opt-level", str(self.opt_level)]
        if self.hardware_compat != "none":
            words += ["--hardware-compat", self.hardware_compat]
        if self.version_compatible:
            words.append("--version-compatible")
        return tuple(words)


@dataclass
class Job:
    """One engine to build: a graph's ONNX file, its inputs and profiles."""

    graph: str
    onnx: Path
    inputs: list[tuple[str, list]]  # (name, dims): int or a symbolic name
    profiles: list[Profile] = field(default_factory=list)


# ------------------------------------------------------------------ planning (no TensorRT)
def graph_inputs(path: Path) -> list[tuple[str, list]]:
    """The real inputs (not initializers) of an ONNX file with their dims, weights not loaded."""
    try:
        import onnx
    except ImportError:
        raise CmpError("reading the ONNX files needs the onnx package: pip install onnx") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    weights = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]
        inputs.append((value.name, dims))
    return inputs


def default_graphs(folder: ModelsFolder, pipeline: str) -> list[str]:
    chosen = list(folder.pipelines) if pipeline == "both" else [pipeline]
    folder.require_pipelines(chosen)
    return graphs(chosen, frontend=False)


def plan(models: Path, options: Options, graph_names: list[str] | None = None, pipeline: str = "both") -> list[Job]:
    """Check the inputs and derive each engine's profiles; nothing is built."""
    models = Path(models)
    folder = ModelsFolder.read(models)  # engines are listed there once built
    wanted = graph_names or default_graphs(folder, pipeline)
    known = graphs(PIPELINES)
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise ModelError(f"unknown graph {', '.join(unknown)}: choose from {', '.join(known)}")
    jobs = []
    for graph in dict.fromkeys(wanted):
        path = models / folder.precision_file(graph, options.precision)  # calibration may keep a graph FP32
        if not path.is_file():
            if options.precision != "fp32" and (models / onnx_file(graph, "fp32")).is_file():
                make = PRECISION_COMMANDS[options.precision].format(models=shlex.quote(str(models)))
                raise ModelError(f"{path}: not found; make the {options.precision.upper()} models first with: {make}")
            raise ModelError(f"{path}: not found (this models folder has no {graph} graph)")
        inputs = graph_inputs(path)
        jobs.append(Job(graph, path, inputs, derive_profiles(graph, inputs, options.max_seconds)))
    return jobs


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def describe(jobs: list[Job], options: Options) -> list[str]:
    """The plan in human words, one block per engine."""
    lines = [f"TensorRT engines ({options.precision}, strongly typed, serving limit {options.max_seconds:g} s of "
             f"speech, workspace {options.workspace_mib} MiB, optimisation level {options.opt_level}, hardware "
             f"compatibility {options.hardware_compat}{', version-compatible' if options.version_compatible else ''}):"]
    for job in jobs:
        lines.append(f"  {job.onnx.name} -> {engine_file(job.graph, options.precision, '<target>')}")
        for p in job.profiles:
            shapes = "; ".join(f"{n} {_dims(r.min)} .. {_dims(r.opt)} .. {_dims(r.max)}" for n, r in p.shapes.items())
            lines.append(f"    profile {p.name}: {shapes}")
    return lines


def trtexec_command(job: Job, options: Options, target: str = "${TARGET}") -> str:
    """The trtexec command line equivalent to building ``job`` (paths relative to the models folder)."""
    words = ["trtexec", f"--onnx={job.onnx.name}",
             f"--saveEngine={engine_file(job.graph, options.precision, target)}",
             "--stronglyTyped",  # required for typed builds on 10.x; a no-op on 11.x
             "--skipInference", f"--memPoolSize=workspace:{options.workspace_mib}M",
             f"--builderOptimizationLevel={options.opt_level}", "--timingCacheFile=trtexec-timing.cache"]
    if options.hardware_compat == "ampere+":
        words.append("--hardwareCompatibilityLevel=ampere+")
    elif options.hardware_compat == "same-cc":
        words.append("--hardwareCompatibilityLevel=sameComputeCapability")
    if options.version_compatible:
        words.append("--versionCompatible")
    for index, profile in enumerate(job.profiles):
        words.append(f"--profile={index}")
        for key in ("min", "opt", "max"):
            spec = ",".join(f"{n}:{_dims(getattr(r, key))}" for n, r in profile.shapes.items())
            words.append(f"--{key}Shapes={spec}")
    return " ".join(words)


def trtexec_script(jobs: list[Job], options: Options, models: Path) -> str:
    target = ('TARGET="ampere-plus"' if options.hardware_compat == "ampere+" else
              'TARGET="${TARGET:-sm$(nvidia-smi -i 0 --query-gpu=compute_cap --format=csv,noheader | tr -d .)}"')
    header = [
        "#!/bin/sh",
        f"# trtexec builds equivalent to: {BUILD_SCRIPT} --models {shlex.quote(str(models))} "
        f"--precision {options.precision} --graphs {','.join(j.graph for j in jobs)} {' '.join(options.cli())}".rstrip(),
        "# Written by --dry-run for machines with trtexec (a TensorRT container). Engines built here have no",
        "# JSON sidecar, and cmp-deploy's runtime refuses an engine without one: where TensorRT's Python",
        "# package is installed, build with the command above instead.",
        "set -e",
        'cd "$(dirname "$0")"',
        target,
    ]
    return "\n".join(header + [trtexec_command(job, options) for job in jobs]) + "\n"


def write_trtexec_script(jobs: list[Job], options: Options, models: Path) -> Path:
    path = Path(models) / TRTEXEC_SCRIPT
    with replacing(path) as tmp:
        tmp.write_text(trtexec_script(jobs, options, models))
        tmp.chmod(0o755)
    return path


# ------------------------------------------------------------------ sidecar and manifest
def sidecar_data(job: Job, options: Options, engine: Path, tensorrt_version: str, gpu: Gpu,
                 io: dict | None = None, build_seconds: float | None = None) -> dict:
    """The JSON sidecar of a freshly written ``engine``."""
    level = HARDWARE_COMPAT[options.hardware_compat]
    return {
        "format": SIDECAR_FORMAT,
        "graph": job.graph,
        "precision": options.precision,
        "engine": {"file": engine.name, "sha256": sha256(engine), "size": engine.stat().st_size},
        "onnx": {"file": job.onnx.name, "sha256": sha256(job.onnx)},
        "tensorrt": {"version": tensorrt_version, "version_compatible": options.version_compatible,
                     "strongly_typed": True},
        "hardware_compatibility": level,
        "gpu": {"name": gpu.name, "compute_capability": gpu.cc},
        "max_seconds": options.max_seconds,
        "profiles": [p.to_json() for p in job.profiles],
        "io": io or {},
        "build": {"workspace_mib": options.workspace_mib, "optimization_level": options.opt_level,
                  "seconds": None if build_seconds is None else round(build_seconds, 1),
                  "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "rebuild": rebuild_command(engine.parent, job.graph, options.precision, options.cli()),
    }


# ------------------------------------------------------------------ building (TensorRT)
def network_flags(trt) -> int:
    """Strongly typed networks: opt-in on 10.x; always on in 11.x, where the flag is deprecated and
    ignored (passing it is what NVIDIA's 11.x samples do). Never EXPLICIT_BATCH (gone in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def progress_monitor(trt):
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per build phase (nested phases indented)."""
    from tqdm import tqdm

    class TqdmMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, tqdm] = {}
            self.depth: dict[str, int] = {}
            self.go_on = True

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                depth = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
                self.depth[phase_name] = depth
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{'  ' * depth}{phase_name}", position=depth,
                                             leave=False, file=sys.stderr, disable=None, dynamic_ncols=True)
            except KeyboardInterrupt:
                self.go_on = False

        def step_complete(self, phase_name, step):
            try:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.update(max(0, step - bar.n))
                return self.go_on
            except KeyboardInterrupt:
                self.go_on = False  # returning False makes TensorRT cancel the build
                return False

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return TqdmMonitor()


def _tensors(network, count: int, get) -> list[dict]:
    return [{"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)} for t in (get(i) for i in range(count))]


def build_engine(trt, job: Job, options: Options, models: Path, gpu: Gpu, progress=print) -> Path:
    """Build one engine with the TensorRT Python API; write it, its sidecar and the timing cache."""
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.onnx)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise EngineError(f"{job.onnx}: TensorRT cannot parse it ({errors or 'no details'})")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(n for n, _ in job.inputs):
        raise EngineError(f"{job.onnx}: TensorRT sees inputs {names}, the ONNX file declares "
                          f"{[n for n, _ in job.inputs]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.opt_level
    if options.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif options.hardware_compat == "same-cc":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)  # the plan then embeds its lean runtime
    for p in job.profiles:
        profile = builder.create_optimization_profile()
        for name, r in p.shapes.items():
            profile.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)

    target = engine_target(gpu.compute_capability, HARDWARE_COMPAT[options.hardware_compat])
    cache_path = options.timing_cache or models / f"trt-timing-{trt.__version__}-{target}.cache"
    cached = cache_path.read_bytes() if cache_path.is_file() else b""
    try:
        cache = config.create_timing_cache(cached)
        accepted = config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # a damaged cache file: TensorRT raises on it
        accepted = False
    if not accepted:
        progress(f"  {cache_path.name} is damaged or from another GPU: starting a new timing cache")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = progress_monitor(trt)
    config.progress_monitor = monitor

    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        if not monitor.go_on:
            raise CmpError("build cancelled")
        raise EngineError(f"{job.onnx}: TensorRT could not build an engine (see its messages above)")
    with replacing(cache_path) as tmp:  # keep the timings for the next build
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))

    engine = models / engine_file(job.graph, options.precision, target)
    with replacing(engine) as tmp:
        tmp.write_bytes(memoryview(plan_bytes))
    io = {"inputs": _tensors(network, network.num_inputs, network.get_input),
          "outputs": _tensors(network, network.num_outputs, network.get_output)}
    data = sidecar_data(job, options, engine, trt.__version__, gpu, io, time.perf_counter() - started)
    write_json(sidecar_file(engine), data)
    ModelsFolder.read(models).add_engine(data)
    progress(f"  wrote {engine.name} ({engine.stat().st_size / 1e6:.1f} MB, {data['build']['seconds']} s) "
             f"and {sidecar_file(engine).name}")
    return engine


# ------------------------------------------------------------------ command line
def _max_seconds(text: str) -> float:
    try:
        return check_max_seconds(float(text))
    except (ValueError, CmpError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_models(parser, release=False, required=True, pipelines="many")
    add_precision(parser, default="fp16", help="which ONNX files to build, as the folder's manifest lists them: "
                                               "<graph>.onnx (fp32), <graph>_fp16.onnx, <graph>_int8.onnx (default "
                                               "%(default)s)")
    parser.add_argument("--graphs", type=lambda s: [g for g in s.split(",") if g], metavar="G1,G2",
                        help="build these graphs instead (e.g. encoder,decoder_supervised,frontend)")
    parser.add_argument("--max-seconds", type=_max_seconds, default=DEFAULT_MAX_SECONDS, metavar="S",
                        help="serving limit: the longest speech (after VAD) the engines accept; longer input is "
                             "refused at run time (default %(default)g)")
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB", dest="workspace_mib",
                        help="builder workspace limit (default %(default)d MiB)")
    parser.add_argument("--opt-level", type=int, choices=range(6), default=DEFAULT_OPT_LEVEL, metavar="0-5",
                        help="builder optimisation level (default %(default)d)")
    parser.add_argument("--hardware-compat", choices=tuple(HARDWARE_COMPAT), default="none",
                        help="ampere+: engines for any Ampere or newer GPU; same-cc: for GPUs of this compute "
                             "capability (both slower than none, the default)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engines that newer TensorRT runtimes and the lean runtime (tensorrt_lean) can load")
    parser.add_argument("--timing-cache", type=Path, metavar="FILE",
                        help="timing cache to load and update (default: <models>/trt-timing-<version>-<target>.cache)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"check the inputs, print the plan and write the trtexec commands to {TRTEXEC_SCRIPT} "
                             "beside the models; needs no TensorRT")


def options_from(args: argparse.Namespace) -> Options:
    if args.workspace_mib <= 0:
        raise CmpError(f"--workspace must be a positive number of MiB, got {args.workspace_mib}")
    return Options(args.precision, args.max_seconds, args.workspace_mib, args.opt_level, args.hardware_compat,
                   args.version_compatible, args.timing_cache)


def run(args: argparse.Namespace, progress=print) -> list[Path]:
    options = options_from(args)
    models = Path(args.models)
    trt = None
    if not args.dry_run:
        trt, _ = import_tensorrt(builder=True)
    jobs = plan(models, options, args.graphs, args.pipeline)
    for line in describe(jobs, options):
        progress(line)
    if args.dry_run:
        path = write_trtexec_script(jobs, options, models)
        progress(f"dry run: nothing built; wrote {path} ({len(jobs)} trtexec command{'s' * (len(jobs) > 1)})")
        return [path]
    gpu = current_gpu()
    progress(f"building on {gpu.name} (compute capability {gpu.cc}) with TensorRT {trt.__version__}")
    return [build_engine(trt, job, options, models, gpu, progress) for job in jobs]


COMMAND = Command(
    "build-engines", "build TensorRT engines from a models folder", add_arguments, run, extra="gpu",
    prog="to_trt.py",
    description="Strongly typed TensorRT engines (10.x and 11.x) from the ONNX files of a models folder, each with "
                "a JSON sidecar the runtime checks before loading it; --dry-run writes trtexec command lines instead.")


main = program(COMMAND, "to_trt.py")


if __name__ == "__main__":
    sys.exit(main())
