"""export/to_trt.py and runtime/engines.py without TensorRT or a GPU: profiles, the dry run's
trtexec lines, sidecars and every refusal, and the TensorRT names our code uses checked against
NVIDIA's own 10.x and 11.x bindings (their compiled module's strings)."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from export import to_trt
from export.to_trt import Options, plan
from runtime.engines import Gpu, check_engine, find_engine, read_sidecar, runtime_accepts
from runtime.models_folder import sidecar_file as sidecar_path
from runtime.errors import EngineError, InputError, ModelError
from runtime.profiles import Profile, ShapeRange, derive_profiles, select_profile
from tests.helpers.engines import A100, H100, H200, T4, TRT10, make_engine
from tests.helpers.tiny_graphs import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def models(tmp_path) -> Path:
    return write_tiny_models(tmp_path / "models")


# ------------------------------------------------------------------ profiles
def test_encoder_profiles_cover_tiled_frames_up_to_the_serving_limit():
    batch1, batch32 = derive_profiles("encoder", [("fbank", ["batch", 64, "frames"])], max_seconds=60)
    assert (batch1.name, batch32.name) == ("batch1", "batch32")
    # 1000 frames: the release tiles every shorter utterance to exactly this; 60 s -> int(960000/160 + 1)
    assert batch1.shapes["fbank"] == ShapeRange((1, 64, 1000), (1, 64, 1000), (1, 64, 6001))
    assert batch32.shapes["fbank"] == ShapeRange((1, 64, 1000), (8, 64, 1000), (32, 64, 6001))


def test_sample_and_embedding_profiles():
    batch1, batch32 = derive_profiles("voice2mesh_supervised", [("samples", ["batch", "num_samples"])], 30)
    assert batch1.shapes["samples"] == ShapeRange((1, 1), (1, 160000), (1, 480000))
    assert batch32.shapes["samples"] == ShapeRange((1, 1), (8, 160000), (32, 480000))
    short = derive_profiles("frontend", [("samples", [None, -1])], 4)[0].shapes["samples"]
    assert short == ShapeRange((1, 1), (1, 64000), (1, 64000))  # the optimum never exceeds the limit
    batch1, batch32 = derive_profiles("decoder_supervised", [("embedding", ["batch", 64])])
    assert batch1.shapes["embedding"] == ShapeRange((1, 64), (1, 64), (1, 64))
    assert batch32.shapes["embedding"] == ShapeRange((1, 64), (8, 64), (32, 64))


def test_profile_derivation_refuses_what_it_cannot_size():
    assert len(derive_profiles("decoder_supervised", [("embedding", [1, 64])])) == 1  # fixed batch: one profile
    with pytest.raises(ModelError) as e:
        derive_profiles("encoder", [("fbank", ["batch", "mels", "frames"])])
    assert str(e.value) == ("encoder: input 'fbank' has a dynamic axis 1 ('mels') that cmp-deploy cannot size: only "
                            "the batch axis and the time axis of 'samples' (axis 1) or 'fbank' (axis 2) may be dynamic")
    for bad in (0, -1, float("nan"), 601):
        with pytest.raises(InputError, match=r"max_seconds must be a number of seconds in \(0, 600\]"):
            derive_profiles("encoder", [("fbank", ["batch", 64, "frames"])], bad)


def test_select_profile_and_its_refusals():
    profiles = derive_profiles("encoder", [("fbank", ["batch", 64, "frames"])], 60)
    rebuild = "python export/to_trt.py --models m --precision fp16 --graphs encoder"
    assert select_profile(profiles, {"fbank": (1, 64, 1000)}, "E", rebuild) == 0
    assert select_profile(profiles, {"fbank": (1, 64, 6001)}, "E", rebuild) == 0
    assert select_profile(profiles, {"fbank": (5, 64, 1733)}, "E", rebuild) == 1
    with pytest.raises(InputError) as e:
        select_profile(profiles, {"fbank": (1, 64, 7501)}, "E", rebuild)
    assert str(e.value) == ("E: 75.0 s of speech (7501 frames) is longer than the 60.0 s it was built for; split the "
                            "audio, or rebuild with a larger --max-seconds: " + rebuild)
    with pytest.raises(InputError) as e:
        select_profile(profiles, {"fbank": (1, 64, 999)}, "E", rebuild)
    assert str(e.value) == ("E: input 'fbank' has 999 frames, fewer than the 1000 it accepts (the release tiles every "
                            "utterance to at least 1000 frames: runtime.fbank.normalise)")
    with pytest.raises(InputError, match="^E: a batch of 33 is larger than the 32 it was built for; split the batch$"):
        select_profile(profiles, {"fbank": (33, 64, 1000)}, "E", rebuild)
    with pytest.raises(InputError, match="^E: input 'fbank' has shape 1x40x1000, expected Nx64xN$"):
        select_profile(profiles, {"fbank": (1, 40, 1000)}, "E", rebuild)
    with pytest.raises(InputError, match="^E takes inputs fbank; got samples$"):
        select_profile(profiles, {"samples": (1, 16000)}, "E", rebuild)
    samples = derive_profiles("voice2mesh_supervised", [("samples", ["batch", "num_samples"])], 60)
    with pytest.raises(InputError, match=r"^V: 61\.0 s of speech \(976000 samples\) is longer than the 60\.0 s"):
        select_profile(samples, {"samples": (2, 976000)}, "V", rebuild)


def test_profiles_survive_json_and_reject_nonsense():
    profiles = derive_profiles("encoder", [("fbank", ["batch", 64, "frames"])])
    assert [Profile.from_json(json.loads(json.dumps(p.to_json()))) for p in profiles] == profiles
    with pytest.raises(ValueError, match="inconsistent min/opt/max"):
        Profile.from_json({"name": "x", "shapes": {"fbank": {"min": [2], "opt": [1], "max": [3]}}})


# ------------------------------------------------------------------ planning and the dry run
def test_plan_names_the_command_that_makes_a_missing_precision(models):
    with pytest.raises(ModelError) as e:
        plan(models, Options(precision="fp16"))
    assert str(e.value) == (f"{models}/encoder_fp16.onnx: not found; make the FP16 models first with: cmp-face "
                            f"calibrate --models {models} --precision fp16")
    with pytest.raises(ModelError) as e:
        plan(models, Options(precision="int8"), ["decoder_supervised"])
    assert str(e.value) == (f"{models}/decoder_supervised_int8.onnx: not found; make the INT8 models first with: "
                            f"cmp-face calibrate --models {models} --audio SPEECH_DIR")
    with pytest.raises(ModelError, match="holds no unsupervised decoder"):
        plan(models, Options(precision="fp32"), pipeline="unsupervised")
    (models / "frontend.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="frontend.onnx: not a readable ONNX file"):
        plan(models, Options(precision="fp32"), ["frontend"])
    with pytest.raises(ModelError, match="/voice2mesh_unsupervised.onnx: not found \\(this models folder has no "
                                         "voice2mesh_unsupervised graph\\)$"):
        plan(models, Options(precision="fp32"), ["voice2mesh_unsupervised"])
    with pytest.raises(ModelError, match="^unknown graph ../encoder: choose from encoder, frontend, decoder_supervised"):
        plan(models, Options(precision="fp32"), ["../encoder"])


def test_dry_run_writes_the_equivalent_trtexec_lines(models, capsys):
    assert to_trt.main(["--models", str(models), "--precision", "fp32", "--dry-run", "--max-seconds", "30",
                        "--hardware-compat", "same-cc", "--version-compatible"]) == 0
    out = capsys.readouterr().out
    assert "profile batch1: fbank 1x64x1000 .. 1x64x1000 .. 1x64x3001" in out
    assert f"wrote {models}/trtexec.sh (3 trtexec commands)" in out
    script = models / "trtexec.sh"
    assert os.access(script, os.X_OK)
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    commands = [line for line in lines if line.startswith("trtexec ")]
    common = ("--stronglyTyped --skipInference --memPoolSize=workspace:4096M --builderOptimizationLevel=3 "
              "--timingCacheFile=trtexec-timing.cache --hardwareCompatibilityLevel=sameComputeCapability "
              "--versionCompatible")
    assert commands == [
        f"trtexec --onnx=encoder.onnx --saveEngine=encoder_fp32_${{TARGET}}.engine {common} "
        "--profile=0 --minShapes=fbank:1x64x1000 --optShapes=fbank:1x64x1000 --maxShapes=fbank:1x64x3001 "
        "--profile=1 --minShapes=fbank:1x64x1000 --optShapes=fbank:8x64x1000 --maxShapes=fbank:32x64x3001",
        f"trtexec --onnx=decoder_supervised.onnx --saveEngine=decoder_supervised_fp32_${{TARGET}}.engine {common} "
        "--profile=0 --minShapes=embedding:1x64 --optShapes=embedding:1x64 --maxShapes=embedding:1x64 "
        "--profile=1 --minShapes=embedding:1x64 --optShapes=embedding:8x64 --maxShapes=embedding:32x64",
        f"trtexec --onnx=voice2mesh_supervised.onnx --saveEngine=voice2mesh_supervised_fp32_${{TARGET}}.engine "
        f"{common} --profile=0 --minShapes=samples:1x1 --optShapes=samples:1x160000 --maxShapes=samples:1x480000 "
        "--profile=1 --minShapes=samples:1x1 --optShapes=samples:8x160000 --maxShapes=samples:32x480000",
    ]
    assert any(line.startswith('TARGET="${TARGET:-sm$(nvidia-smi') for line in lines)
    # ampere+ engines are named for the family, not for the GPU that builds them
    assert to_trt.main(["--models", str(models), "--precision", "fp32", "--dry-run", "--graphs", "encoder",
                        "--hardware-compat", "ampere+"]) == 0
    text = script.read_text()
    assert 'TARGET="ampere-plus"' in text and "--hardwareCompatibilityLevel=ampere+" in text
    assert "--versionCompatible" not in text and len([x for x in text.splitlines() if x.startswith("trtexec")]) == 1


def _run_script(*args: str, block: tuple[str, ...] = ("tensorrt", "torch")) -> subprocess.CompletedProcess:
    """export/to_trt.py in a subprocess where importing the ``block``ed modules fails."""
    return subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv = ['to_trt.py', *sys.argv[1:]]; "
                           f"sys.modules.update(dict.fromkeys({list(block)!r})); "
                           "runpy.run_path('export/to_trt.py', run_name='__main__')", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_and_the_missing_tensorrt_line_in_a_subprocess(models):
    done = subprocess.run([sys.executable, "export/to_trt.py", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0 and "--hardware-compat" in done.stdout and "--dry-run" in done.stdout
    done = _run_script("--models", str(models), "--precision", "fp32")  # no TensorRT, no torch importable
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "to_trt.py: error: TensorRT is not installed: building engines needs it: pip install --extra-index-url "
        "https://pypi.nvidia.com tensorrt-cu13 (or use an NGC TensorRT container); python export/to_trt.py --dry-run "
        "writes trtexec command lines instead"]
    done = _run_script("--models", str(models), "--precision", "fp32", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert (models / "trtexec.sh").is_file()


def test_network_flags_ask_for_strong_typing_and_nothing_else():
    v10 = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1, EXPLICIT_BATCH=0))
    assert to_trt.network_flags(v10) == 1 << 1
    assert to_trt.network_flags(SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace())) == 0


# ------------------------------------------------------------------ sidecars and refusals
def test_sidecar_records_the_build_and_models_json_lists_the_engine(models):
    engine = make_engine(models, options=Options(precision="fp32", max_seconds=30, hardware_compat="same-cc"))
    assert engine.name == "encoder_fp32_sm90.engine"
    data = json.loads((models / "encoder_fp32_sm90.json").read_text())
    assert data["format"] == 1 and data["graph"] == "encoder" and data["precision"] == "fp32"
    assert data["tensorrt"] == {"version": TRT10, "version_compatible": False, "strongly_typed": True}
    assert data["gpu"] == {"name": "NVIDIA H200", "compute_capability": "9.0"}
    assert data["hardware_compatibility"] == "same_compute_capability" and data["max_seconds"] == 30
    import hashlib
    assert data["onnx"] == {"file": "encoder.onnx",
                            "sha256": hashlib.sha256((models / "encoder.onnx").read_bytes()).hexdigest()}
    assert data["engine"]["size"] == len(b"serialized plan of encoder")
    assert [p["name"] for p in data["profiles"]] == ["batch1", "batch32"]
    assert data["profiles"][1]["shapes"]["fbank"] == {"min": [1, 64, 1000], "opt": [8, 64, 1000],
                                                      "max": [32, 64, 3001]}
    assert data["build"]["workspace_mib"] == 4096 and data["build"]["seconds"] == 1.2
    assert data["rebuild"] == (f"python export/to_trt.py --models {models} --precision fp32 --graphs encoder "
                               "--max-seconds 30 --hardware-compat same-cc")
    listed = json.loads((models / "models.json").read_text())["engines"]["encoder_fp32_sm90.engine"]
    assert listed["sidecar"] == "encoder_fp32_sm90.json" and listed["sha256"] == data["engine"]["sha256"]
    assert "encoder.onnx" in json.loads((models / "models.json").read_text())["files"]  # nothing else lost
    car = check_engine(engine, H200, TRT10)
    assert car.profiles[0].shapes["fbank"].max == (1, 64, 3001) and car.max_seconds == 30


def test_every_refusal_names_the_rebuild_command(models):
    rebuild = f"python export/to_trt.py --models {models} --precision fp32 --graphs encoder"
    engine = make_engine(models)
    where = f"{engine}: "

    def refusal(gpu=H200, version=TRT10, lean=False) -> str:
        with pytest.raises(EngineError) as e:
            check_engine(engine, gpu, version, lean)
        return str(e.value)

    assert refusal(gpu=H100) == (where + "built for NVIDIA H200 (compute capability 9.0), this GPU is NVIDIA H100 "
                                 f"80GB HBM3 (compute capability 9.0); rebuild it here with: {rebuild} (engines built "
                                 "with --hardware-compat ampere+ run on any Ampere or newer GPU)")
    same_name = Gpu("NVIDIA H200", (8, 9))  # a same-named device of another compute capability
    assert refusal(gpu=same_name) == (where + "built for NVIDIA H200 (compute capability 9.0), this GPU is NVIDIA "
                                      f"H200 (compute capability 8.9); rebuild it here with: {rebuild} (engines built "
                                      "with --hardware-compat ampere+ run on any Ampere or newer GPU)")
    assert refusal(version="10.13.0.36") == (
        where + "built with TensorRT 10.13.0.35, this is TensorRT 10.13.0.36 (an engine loads only in the exact "
        f"TensorRT version that built it, unless built with --version-compatible); rebuild it with: {rebuild}")
    assert refusal(lean=True) == (
        where + "built without --version-compatible, so the lean TensorRT runtime cannot load it; install the full "
        "tensorrt package (pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13 (or use an NGC "
        f"TensorRT container)), or rebuild it with: {rebuild} --version-compatible")

    sidecar = sidecar_path(engine)
    good = sidecar.read_text()
    sidecar.write_text(good[:-20])
    assert refusal().startswith(where + "sidecar encoder_fp32_sm90.json is corrupt (")
    assert refusal().endswith(f"); rebuild it with: {rebuild}")
    sidecar.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "gpu"}))
    assert refusal() == where + f"sidecar encoder_fp32_sm90.json is corrupt (missing or malformed field 'gpu'); " \
                                f"rebuild it with: {rebuild}"
    sidecar.unlink()
    assert refusal() == (where + "no sidecar encoder_fp32_sm90.json beside it, so the GPU, TensorRT version and model "
                         f"it was built for are unknown; rebuild it with: {rebuild}")
    sidecar.write_text(good)
    check_engine(engine, H200, TRT10)

    engine.write_bytes(b"serialized plan of encodeR")  # same size, other bytes
    assert refusal() == (where + "the engine file changed since it was built (it does not match the sha256 in "
                         f"encoder_fp32_sm90.json); rebuild it with: {rebuild}")
    engine.write_bytes(b"serialized plan of encoder")
    onnx_path = models / "encoder.onnx"
    original = onnx_path.read_bytes()
    onnx_path.write_bytes(original + b"\0")
    assert refusal() == where + f"encoder.onnx changed since the engine was built from it (sha256 differs); " \
                                f"rebuild it with: {rebuild}"
    onnx_path.unlink()
    assert refusal() == (where + "its source model encoder.onnx is missing, so the engine cannot be checked against "
                         f"the models; restore it (or export the models again), then rebuild: {rebuild}")
    onnx_path.write_bytes(original)
    check_engine(engine, H200, TRT10)
    engine.unlink()
    assert refusal() == where + f"engine not found; build it with: {rebuild}"


def test_hardware_and_version_compatible_engines_are_accepted_where_tensorrt_allows(models):
    ampere = make_engine(models, options=Options(precision="fp32", hardware_compat="ampere+"))
    assert ampere.name == "encoder_fp32_ampere-plus.engine"
    for gpu in (H200, H100, A100):
        check_engine(ampere, gpu, TRT10)
    with pytest.raises(EngineError) as e:
        check_engine(ampere, T4, TRT10)
    assert str(e.value) == (
        f"{ampere}: built for Ampere or newer GPUs (--hardware-compat ampere+, compute capability 8.0 or higher), "
        f"this GPU is Tesla T4 (compute capability 7.5); rebuild it here with: python export/to_trt.py --models "
        f"{models} --precision fp32 --graphs encoder")
    same = make_engine(models, "decoder_supervised", options=Options(precision="fp32", hardware_compat="same-cc"))
    check_engine(same, H100, TRT10)
    with pytest.raises(EngineError, match=r"built for GPUs of compute capability 9\.0 \(--hardware-compat same-cc\), "
                                          r"this GPU is NVIDIA A100-SXM4-80GB \(compute capability 8\.0\)"):
        check_engine(same, A100, TRT10)
    vc = make_engine(models, "voice2mesh_supervised", options=Options(precision="fp32", version_compatible=True))
    for runtime in ("10.13.0.35", "10.16.1.11", "11.4.0.106"):
        check_engine(vc, H200, runtime)
        check_engine(vc, H200, runtime, lean=True)
    with pytest.raises(EngineError, match=r"built with TensorRT 10\.13\.0\.35, this is TensorRT 10\.12\.0\.36 \(a "
                                          r"version-compatible engine runs only on the same or a newer TensorRT"):
        check_engine(vc, H200, "10.12.0.36")
    assert not runtime_accepts("11.4.0.106", True, "10.16.1.11") and not runtime_accepts("10.13.0.35", False, "11.4")
    assert runtime_accepts("11.0.0.1", True, "11.4.0.106")


def test_find_engine_prefers_this_gpu_and_falls_back_to_portable_engines(models):
    with pytest.raises(EngineError) as e:
        find_engine(models, "encoder", "fp32", H200, TRT10)
    assert str(e.value) == (f"{models}: no fp32 TensorRT engine for encoder; build it with: python export/to_trt.py "
                            f"--models {models} --precision fp32 --graphs encoder")
    native = make_engine(models, gpu=A100)  # encoder_fp32_sm80.engine
    with pytest.raises(EngineError, match="built for NVIDIA A100-SXM4-80GB"):
        find_engine(models, "encoder", "fp32", H200, TRT10)
    portable = make_engine(models, options=Options(precision="fp32", hardware_compat="ampere+"))
    assert find_engine(models, "encoder", "fp32", H200, TRT10)[0] == portable
    assert find_engine(models, "encoder", "fp32", A100, TRT10)[0] == native  # its own target first
    assert read_sidecar(native).gpu == A100


# ------------------------------------------------------------------ NVIDIA's bindings vs our code
# label -> (pip requirement, wheel file prefix, compiled module inside)
WHEELS = {"10.13.0.35": ("tensorrt-cu12-bindings==10.13.0.35", "tensorrt_cu12_bindings", "tensorrt_bindings/tensorrt"),
          "11.4.0.106": ("tensorrt-cu13-bindings==11.4.0.106", "tensorrt_cu13_bindings", "tensorrt_bindings/tensorrt"),
          "lean 11.4.0.106": ("tensorrt-lean-cu13-bindings==11.4.0.106", "tensorrt_lean_cu13_bindings",
                              "tensorrt_lean_bindings/tensorrt_lean")}
WHEEL_CACHE = Path(os.environ.get("CMP_DEPLOY_TEST_CACHE", Path.home() / ".cache" / "cmp-deploy-test")) / "wheels"
# Names TensorRT 11 removed from the Python API (DEPLOY-NOTES A.1, migration guide): never in our code.
REMOVED_IN_11 = {
    "EXPLICIT_BATCH", "FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS", "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "int8_calibrator", "set_calibration_profile",
    "CALIBRATE_BEFORE_FUSION", "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32",
    "device_memory_size", "get_device_memory_size_for_profile", "create_execution_context_without_device_memory",
    "set_dynamic_range", "dynamic_range", "set_output_type", "has_implicit_batch_dimension",
    "all_shape_inputs_specified", "IAlgorithmSelector", "algorithm_selector", "WEIGHTLESS"}
SOURCES = ["export/to_trt.py", "runtime/engines.py", "runtime/runners/trt_runner.py"]
# Variables that hold TensorRT objects in those files: their attributes are TensorRT API names.
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "profile", "ctx", "t", "dtype"}
TRT_SELF = {"context", "engine", "runtime", "logger"}


def _bindings_strings(version: str) -> set[str]:
    """Every identifier-like string in the wheel's compiled module and its __init__.py. The linker
    stores a short string as the tail of a longer one ("INPUT" inside "CONDITIONAL_INPUT"), so a
    name counts as present when it ends one of these (see :func:`_present`)."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    spec, prefix, module = WHEELS[version]
    pattern = f"{prefix}-{spec.split('==')[1]}-*.whl"
    wheel = next(WHEEL_CACHE.glob(pattern), None)
    if wheel is None:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d",
                               str(WHEEL_CACHE)], capture_output=True, text=True, timeout=300)
        wheel = next(WHEEL_CACHE.glob(pattern), None)
        if wheel is None:
            pytest.skip(f"cannot fetch {spec} from PyPI ({(done.stderr.strip().splitlines() or ['?'])[-1]})")
    with zipfile.ZipFile(wheel) as z:
        blob = z.read(f"{module}.so") + z.read(f"{module.rsplit('/', 1)[0]}/__init__.py")
    return {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]*", blob)}


def _rooted_at_trt(node) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "trt"


def _present(name: str, strings: set[str]) -> bool:
    return name in strings or any(s.endswith(name) for s in strings)


# The functions of export/to_trt.py that touch TensorRT (elsewhere ``parser`` is argparse's).
TO_TRT_FUNCTIONS = {"network_flags", "progress_monitor", "_tensors", "build_engine"}


def _tensorrt_names() -> dict[str, set[str]]:
    """TensorRT API names our sources use, found with ``ast``: attribute chains rooted at the module
    (``trt.X.Y``), attributes of variables holding TensorRT objects, and ``getattr(trt..., "NAME")``."""
    found: dict[str, set[str]] = {}
    for source in SOURCES:
        tree = ast.parse((ROOT / source).read_text())
        if source == "export/to_trt.py":
            tree = ast.Module([f for f in tree.body if getattr(f, "name", None) in TO_TRT_FUNCTIONS], [])
        names = found.setdefault(source, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                root = node.value
                if isinstance(base, ast.Name) and base.id == "trt":
                    names.add(node.attr)
                elif isinstance(root, ast.Name) and root.id in TRT_OBJECTS:
                    names.add(node.attr)
                elif (isinstance(root, ast.Attribute) and isinstance(root.value, ast.Name) and root.value.id == "self"
                      and root.attr in TRT_SELF):
                    names.add(node.attr)
            if isinstance(node, ast.ClassDef) and any(_rooted_at_trt(b) for b in node.bases):
                # a subclass of a TensorRT interface: its methods are TensorRT's callback names
                names |= {f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"}
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                first = node.args[0]
                while isinstance(first, ast.Attribute):
                    first = first.value
                if isinstance(first, ast.Name) and first.id == "trt":
                    names.add(node.args[1].value)
    return found


def test_our_tensorrt_names_exist_in_both_10_and_11_bindings():
    used = _tensorrt_names()
    everything = set().union(*used.values())
    # the walk really sees the builder and runner code
    assert {"create_network", "STRONGLY_TYPED", "set_memory_pool_limit", "build_serialized_network",
            "execute_async_v3", "set_tensor_address", "set_input_shape", "IProgressMonitor", "step_complete",
            "phase_start", "phase_finish"} <= everything
    strings = {v: _bindings_strings(v) for v in WHEELS}
    # reading the strings works: what DEPLOY-NOTES F checked by hand
    for removed in ("EXPLICIT_BATCH", "IInt8EntropyCalibrator2"):
        assert _present(removed, strings["10.13.0.35"]) and not _present(removed, strings["11.4.0.106"])
    assert not _present("build_serialized_network", strings["lean 11.4.0.106"])  # a runtime, no builder
    for version, have in strings.items():
        # the lean runtime runs engines only: it must carry every name of the runner, not the builder's
        sources = ["runtime/runners/trt_runner.py"] if version.startswith("lean") else SOURCES
        missing = {s: sorted(n for n in used[s] if not _present(n, have)) for s in sources}
        assert not any(missing.values()), f"not in TensorRT {version}'s bindings: {missing}"


def test_no_name_that_tensorrt_11_removed_appears_in_our_code():
    used = _tensorrt_names()
    assert {source: sorted(names & REMOVED_IN_11) for source, names in used.items()} == {s: [] for s in SOURCES}


# ------------------------------------------------------------------ the build, against a stand-in TensorRT
def fake_builder(version: str = "11.4.0.106", parses: bool = True, builds: bool = True,
                 cache_ok: bool = True) -> tuple:
    """A ``tensorrt`` module with the builder calls build_engine makes; ``log`` records them."""
    import types

    log: list = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    trt.HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="ampere+", SAME_COMPUTE_CAPABILITY="same-cc")
    trt.BuilderFlag = SimpleNamespace(VERSION_COMPATIBLE="version-compatible")
    trt.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})

    def tensor(name, shape):
        return SimpleNamespace(name=name, shape=shape, dtype=SimpleNamespace(name="FLOAT"))

    class Network:
        def __init__(self, inputs, outputs):
            self.inputs, self.outputs = inputs, outputs
            self.num_inputs, self.num_outputs = len(inputs), len(outputs)

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            import onnx

            model = onnx.load(path)
            dims = lambda v: tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim)  # noqa: E731
            self.network.__init__([tensor(v.name, dims(v)) for v in model.graph.input],
                                  [tensor(v.name, dims(v)) for v in model.graph.output])
            return parses

        def get_error(self, i):
            return SimpleNamespace(desc=lambda: "UNSUPPORTED_NODE: ReduceMean")

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            log.append(("set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

    class Config:
        progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            log.append(("pool", pool, size))

        def set_flag(self, flag):
            log.append(("flag", flag))

        def add_optimization_profile(self, profile):
            log.append(("profile",))

        def create_timing_cache(self, data):
            if data and not cache_ok:
                raise RuntimeError("corrupt timing cache")
            log.append(("timing cache", bytes(data)))
            return data

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return SimpleNamespace(serialize=lambda: b"timings v2")

        def __setattr__(self, name, value):
            log.append(("set", name, value))
            object.__setattr__(self, name, value)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(("network flags", flags))
            return Network([], [])

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = config.progress_monitor
            monitor.phase_start("Building engine", None, 3)
            for step in range(3):
                assert monitor.step_complete("Building engine", step) is True
            monitor.phase_finish("Building engine")
            return b"serialized plan of " + network.inputs[0].name.encode() if builds else None

    trt.Builder, trt.OnnxParser = Builder, Parser
    return trt, log


def test_build_engine_asks_tensorrt_for_a_strongly_typed_build_and_writes_what_it_promises(models):
    trt, log = fake_builder()
    options = Options(precision="fp32", max_seconds=20, version_compatible=True, hardware_compat="same-cc")
    job = plan(models, options, ["encoder"])[0]
    (models / "trt-timing-11.4.0.106-sm90.cache").write_bytes(b"timings v1")
    messages: list[str] = []
    engine = to_trt.build_engine(trt, job, options, models, H200, messages.append)
    assert engine == models / "encoder_fp32_sm90.engine" and engine.read_bytes() == b"serialized plan of fbank"
    assert ("network flags", 1 << 1) in log  # strongly typed; nothing else
    assert [e for e in log if e[0] == "flag"] == [("flag", "version-compatible")]  # never FP16/INT8 flags
    assert ("pool", "workspace", 4096 << 20) in log and ("set", "builder_optimization_level", 3) in log
    assert ("set", "hardware_compatibility_level", "same-cc") in log
    assert [e for e in log if e[0] == "set_shape"] == [
        ("set_shape", "fbank", (1, 64, 1000), (1, 64, 1000), (1, 64, 2001)),
        ("set_shape", "fbank", (1, 64, 1000), (8, 64, 1000), (32, 64, 2001))]
    assert ("timing cache", b"timings v1") in log  # the persisted cache was loaded ...
    assert (models / "trt-timing-11.4.0.106-sm90.cache").read_bytes() == b"timings v2"  # ... and updated
    car = check_engine(engine, H200, "11.4.0.106")
    assert car.data["io"] == {"inputs": [{"name": "fbank", "dtype": "FLOAT", "shape": [-1, 64, -1]}],
                              "outputs": [{"name": "embedding", "dtype": "FLOAT", "shape": [-1, 64]}]}
    assert car.rebuild.endswith("--graphs encoder --max-seconds 20 --hardware-compat same-cc --version-compatible")
    assert messages[-1].startswith("  wrote encoder_fp32_sm90.engine (0.0 MB, ")
    assert json.loads((models / "models.json").read_text())["engines"]["encoder_fp32_sm90.engine"]["tensorrt"] \
        == "11.4.0.106"


def test_build_failures_are_one_line_errors(models):
    job = plan(models, Options(precision="fp32"), ["encoder"])[0]
    with pytest.raises(EngineError, match=r"encoder\.onnx: TensorRT cannot parse it \(UNSUPPORTED_NODE: ReduceMean\)$"):
        to_trt.build_engine(fake_builder(parses=False)[0], job, Options(precision="fp32"), models, H200)
    with pytest.raises(EngineError, match=r"encoder\.onnx: TensorRT could not build an engine \(see its messages "
                                          r"above\)$"):
        to_trt.build_engine(fake_builder(builds=False)[0], job, Options(precision="fp32"), models, H200)
    assert not list(models.glob("*.engine")) and not list(models.glob(".*"))  # nothing half-written
    (models / f"trt-timing-{'11.4.0.106'}-sm90.cache").write_bytes(b"\x00garbage")
    messages: list[str] = []
    to_trt.build_engine(fake_builder(cache_ok=False)[0], job, Options(precision="fp32"), models, H200,
                        messages.append)
    assert messages[0] == "  trt-timing-11.4.0.106-sm90.cache is damaged or from another GPU: starting a new timing cache"


def test_the_command_builds_every_graph_with_a_stand_in_tensorrt(models, monkeypatch, capsys):
    trt, _ = fake_builder(version=TRT10)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("export.to_trt.current_gpu", lambda device=0: A100)
    assert to_trt.main(["--models", str(models), "--precision", "fp32", "--hardware-compat", "ampere+"]) == 0
    out = capsys.readouterr().out
    assert f"building on NVIDIA A100-SXM4-80GB (compute capability 8.0) with TensorRT {TRT10}" in out
    built = sorted(p.name for p in models.glob("*.engine"))
    assert built == ["decoder_supervised_fp32_ampere-plus.engine", "encoder_fp32_ampere-plus.engine",
                     "voice2mesh_supervised_fp32_ampere-plus.engine"]
    for name in built:  # each fits any Ampere or newer GPU with this TensorRT
        check_engine(models / name, H200, TRT10)
    assert sorted(json.loads((models / "models.json").read_text())["engines"]) == built


def test_a_folder_without_manifest_is_refused_before_any_build(models):
    (models / "models.json").unlink()
    with pytest.raises(ModelError) as e:
        plan(models, Options(precision="fp32"), ["encoder"])
    assert str(e.value) == (f"{models}/models.json: not found; is {models} a models folder written by 'cmp-face "
                            "export' (or python export/to_onnx.py)?")
    with pytest.raises(ModelError, match=r"^/nonexistent: models folder not found$"):
        plan(Path("/nonexistent"), Options(precision="fp32"))


def test_an_onnx_file_changed_in_size_with_its_old_mtime_restored_is_caught(models):
    """The ONNX hash comes from models.json while size and mtime match its record; a change of size
    alone (the mtime put back) must still make the engine's source differ."""
    engine = make_engine(models)
    onnx_file = models / "encoder.onnx"
    st = onnx_file.stat()
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    os.utime(onnx_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(EngineError, match=r"encoder\.onnx changed since the engine was built from it"):
        check_engine(engine, H200, TRT10)


def test_int8_dry_run_follows_the_manifest_where_calibration_kept_a_graph_fp32(models_dir, tmp_path, capsys):
    """calibrate kept the decoder FP32 (no INT8 layer met the bar) and the frontend is FP32 by
    design: the INT8 engines are built from the files models.json names for them."""
    from tests.helpers.folders import int8_keeping_the_decoder_fp32

    m = int8_keeping_the_decoder_fp32(models_dir, tmp_path)
    assert to_trt.main(["--models", str(m), "--precision", "int8", "--dry-run", "--pipeline", "supervised"]) == 0
    assert f"wrote {m}/trtexec.sh (3 trtexec commands)" in capsys.readouterr().out
    commands = [line.split()[1:3] for line in (m / "trtexec.sh").read_text().splitlines()
                if line.startswith("trtexec ")]
    assert commands == [["--onnx=encoder_int8.onnx", "--saveEngine=encoder_int8_${TARGET}.engine"],
                        ["--onnx=decoder_supervised.onnx", "--saveEngine=decoder_supervised_int8_${TARGET}.engine"],
                        ["--onnx=voice2mesh_supervised_int8.onnx",
                         "--saveEngine=voice2mesh_supervised_int8_${TARGET}.engine"]]
    assert to_trt.main(["--models", str(m), "--precision", "int8", "--dry-run", "--graphs", "frontend"]) == 0
    assert [line.split()[1] for line in (m / "trtexec.sh").read_text().splitlines()
            if line.startswith("trtexec ")] == ["--onnx=frontend.onnx"]
