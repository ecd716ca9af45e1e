"""TensorRT engines in a models folder: names, JSON sidecars, and the checks that refuse an engine
*before* TensorRT deserialises it. Imports neither torch nor TensorRT (``runtime.runners.cuda`` does).

TensorRT has no preflight check: ``deserialize_cuda_engine`` on a plan from another TensorRT
version or GPU logs an error and returns None (DEPLOY-NOTES A.3). So every engine carries a
sidecar ``<engine stem>.json`` written by ``export/to_trt.py``, and :func:`check_engine` compares
it with this machine first, naming the command that rebuilds the engine when it does not fit.

Files (named by :mod:`runtime.models_folder`): ``<graph>_<precision>_<target>.engine`` beside
``<graph>[_<precision>].onnx``, where the target is ``sm<major><minor>`` of the GPU that built it
(or ``ampere-plus`` for engines built with ``--hardware-compat ampere+``), e.g.
``encoder_fp16_sm90.engine`` + ``encoder_fp16_sm90.json``.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import EngineError
from runtime.models_folder import ENGINE_FILE, PRECISIONS, ModelsFolder, engine_file, engine_target, sha256, sidecar_file
from runtime.profiles import Profile

SIDECAR_FORMAT = 1
# --hardware-compat spellings -> what the sidecar records (TensorRT's enum names, lower case)
HARDWARE_COMPAT = {"none": "none", "same-cc": "same_compute_capability", "ampere+": "ampere_plus"}
BUILD_SCRIPT = "python export/to_trt.py"
INSTALL_TENSORRT = "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13 (or use an NGC TensorRT container)"
INSTALL_LEAN = "pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs"
INSTALL_CUDA_PYTHON = "pip install cuda-python"


def rebuild_command(models: Path, graph: str, precision: str, options: tuple[str, ...] = ()) -> str:
    return " ".join([BUILD_SCRIPT, "--models", shlex.quote(str(models)), "--precision", precision,
                     "--graphs", graph, *options])


def version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(version))
    if not parts:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return "{}.{}".format(*self.compute_capability)


# ------------------------------------------------------------------ sidecars
@dataclass(frozen=True)
class Sidecar:
    """What ``export/to_trt.py`` recorded about one engine (the JSON is kept in ``data``)."""

    graph: str
    precision: str
    onnx: str
    onnx_sha256: str
    engine_sha256: str
    engine_size: int
    tensorrt: str
    version_compatible: bool
    hardware_compat: str
    gpu: Gpu
    profiles: tuple[Profile, ...]
    max_seconds: float
    rebuild: str
    data: dict

    @classmethod
    def parse(cls, data) -> "Sidecar":
        """Validate the JSON of a sidecar; ValueError naming the first problem."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        try:
            trt, gpu, onnx, engine = data["tensorrt"], data["gpu"], data["onnx"], data["engine"]
            fields = dict(graph=data["graph"], precision=data["precision"], onnx=onnx["file"],
                          onnx_sha256=onnx["sha256"], engine_sha256=engine["sha256"], engine_size=engine["size"],
                          tensorrt=trt["version"], version_compatible=trt["version_compatible"],
                          hardware_compat=data["hardware_compatibility"], max_seconds=data["max_seconds"],
                          rebuild=data["rebuild"])
            cc = str(gpu["compute_capability"])
            gpu = Gpu(gpu["name"], tuple(int(x) for x in cc.split(".")))
            profiles = tuple(Profile.from_json(p) for p in data["profiles"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None
        types = {"graph": str, "precision": str, "onnx": str, "onnx_sha256": str, "engine_sha256": str,
                 "engine_size": int, "tensorrt": str, "version_compatible": bool, "hardware_compat": str,
                 "max_seconds": (int, float), "rebuild": str}
        for key, kind in types.items():
            if not isinstance(fields[key], kind) or (kind is int and isinstance(fields[key], bool)):
                raise ValueError(f"field {key!r} has the wrong type")
        if fields["precision"] not in PRECISIONS:
            raise ValueError(f"unknown precision {fields['precision']!r}")
        if fields["hardware_compat"] not in HARDWARE_COMPAT.values():
            raise ValueError(f"unknown hardware_compatibility {fields['hardware_compat']!r}")
        if len(gpu.compute_capability) != 2 or not profiles:
            raise ValueError("malformed gpu or profiles")
        version_tuple(fields["tensorrt"])
        return cls(gpu=gpu, profiles=profiles, data=data, **fields)


def read_sidecar(engine: Path) -> Sidecar:
    """The parsed sidecar of ``engine``; EngineError (with the rebuild command) when missing or corrupt."""
    engine = Path(engine)
    path = sidecar_file(engine)
    rebuild = _fallback_rebuild(engine)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EngineError(f"{engine}: no sidecar {path.name} beside it, so the GPU, TensorRT version and model it "
                          f"was built for are unknown; rebuild it with: {rebuild}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"{engine}: sidecar {path.name} is unreadable ({exc}); rebuild it with: {rebuild}") from None
    try:
        return Sidecar.parse(json.loads(text))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise EngineError(f"{engine}: sidecar {path.name} is corrupt ({exc}); rebuild it with: {rebuild}") from None


def _fallback_rebuild(engine: Path) -> str:
    """The rebuild command when only the engine's name is known."""
    match = ENGINE_FILE.match(engine.name)
    if match is None:
        return f"{BUILD_SCRIPT} --models {shlex.quote(str(engine.parent))}"
    options = ("--hardware-compat", "ampere+") if match["target"] == "ampere-plus" else ()
    return rebuild_command(engine.parent, match["graph"], match["precision"], options)


def runtime_accepts(built: str, version_compatible: bool, runtime: str) -> bool:
    """Whether TensorRT ``runtime`` may deserialise a plan built by TensorRT ``built``.

    Without version compatibility only the exact version that built it (major.minor.patch.build);
    a version-compatible plan also runs on newer runtimes of the same major version, and a 10.x
    one on 11.x (TensorRT 11 support matrix; DEPLOY-NOTES A.1)."""
    b, r = version_tuple(built), version_tuple(runtime)
    if not version_compatible:
        return b == r
    return (r[0] == b[0] and r >= b) or (b[0] == 10 and r[0] == 11)


def check_engine(engine: Path, gpu: Gpu, tensorrt_version: str, lean: bool = False) -> Sidecar:
    """Refuse ``engine`` unless it was built, from the ONNX file now in its folder, for this GPU and
    a TensorRT version that can load it; return its sidecar. Nothing is deserialised."""
    engine = Path(engine)
    if not engine.is_file():
        raise EngineError(f"{engine}: engine not found; build it with: {_fallback_rebuild(engine)}")
    car = read_sidecar(engine)
    rebuild = car.rebuild
    size = engine.stat().st_size
    if size != car.engine_size or sha256(engine) != car.engine_sha256:
        raise EngineError(f"{engine}: the engine file changed since it was built (it does not match the sha256 in "
                          f"{sidecar_file(engine).name}); rebuild it with: {rebuild}")
    onnx = engine.parent / car.onnx
    if not onnx.is_file():
        raise EngineError(f"{engine}: its source model {car.onnx} is missing, so the engine cannot be checked "
                          f"against the models; restore it (or export the models again), then rebuild: {rebuild}")
    if ModelsFolder.read(engine.parent).file_sha256(car.onnx) != car.onnx_sha256:
        raise EngineError(f"{engine}: {car.onnx} changed since the engine was built from it (sha256 differs); "
                          f"rebuild it with: {rebuild}")
    if lean and not car.version_compatible:
        raise EngineError(f"{engine}: built without --version-compatible, so the lean TensorRT runtime cannot load "
                          f"it; install the full tensorrt package ({INSTALL_TENSORRT}), or rebuild it with: "
                          f"{_with_option(rebuild, '--version-compatible')}")
    if not runtime_accepts(car.tensorrt, car.version_compatible, tensorrt_version):
        rule = ("a version-compatible engine runs only on the same or a newer TensorRT of the same major version, "
                "or on 11.x when built by 10.x" if car.version_compatible else
                "an engine loads only in the exact TensorRT version that built it, unless built with "
                "--version-compatible")
        raise EngineError(f"{engine}: built with TensorRT {car.tensorrt}, this is TensorRT {tensorrt_version} "
                          f"({rule}); rebuild it with: {rebuild}")
    here = f"this GPU is {gpu.name} (compute capability {gpu.cc})"
    if car.hardware_compat == "ampere_plus":
        if gpu.compute_capability < (8, 0):
            raise EngineError(f"{engine}: built for Ampere or newer GPUs (--hardware-compat ampere+, compute "
                              f"capability 8.0 or higher), {here}; rebuild it here with: "
                              f"{_without_option(rebuild, '--hardware-compat', 'ampere+')}")
    elif car.hardware_compat == "same_compute_capability":
        if gpu.compute_capability != car.gpu.compute_capability:
            raise EngineError(f"{engine}: built for GPUs of compute capability {car.gpu.cc} (--hardware-compat "
                              f"same-cc), {here}; rebuild it here with: "
                              f"{_without_option(rebuild, '--hardware-compat', 'same-cc')}")
    elif (gpu.name, gpu.compute_capability) != (car.gpu.name, car.gpu.compute_capability):
        raise EngineError(f"{engine}: built for {car.gpu.name} (compute capability {car.gpu.cc}), {here}; "
                          f"rebuild it here with: {rebuild} (engines built with --hardware-compat ampere+ run on "
                          "any Ampere or newer GPU)")
    return car


def _with_option(command: str, option: str) -> str:
    return command if option in command.split() else f"{command} {option}"


def _without_option(command: str, option: str, value: str) -> str:
    return command.replace(f" {option} {value}", "")


def find_engine(models: Path, graph: str, precision: str, gpu: Gpu, tensorrt_version: str,
                lean: bool = False) -> tuple[Path, Sidecar]:
    """The engine of ``graph`` at ``precision`` in ``models`` that this GPU and TensorRT can run.

    Candidates are ``<graph>_<precision>_*.engine``, this GPU's own target first; when none fits,
    the refusal of the first candidate is raised."""
    models = Path(models)
    candidates = [p for p in sorted(models.glob(f"{graph}_{precision}_*.engine"))
                  if (m := ENGINE_FILE.match(p.name)) and m["graph"] == graph]
    if not candidates:
        raise EngineError(f"{models}: no {precision} TensorRT engine for {graph}; build it with: "
                          f"{rebuild_command(models, graph, precision)}")
    own = engine_file(graph, precision, engine_target(gpu.compute_capability))
    candidates.sort(key=lambda p: p.name != own)
    first_error = None
    for path in candidates:
        try:
            return path, check_engine(path, gpu, tensorrt_version, lean)
        except EngineError as exc:
            first_error = first_error or exc
    raise first_error
