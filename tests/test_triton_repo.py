"""``cmp-face triton-repo``: repositories for both backends pass the offline validation
(tritonclient's ModelConfig protobuf plus our checks), and each check refuses what it should."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.errors import InputError, ModelError

pytest.importorskip("tritonclient")
from runtime.serve import triton_repo as tr  # noqa: E402


@pytest.fixture(scope="module")
def repo(models_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    tr.write_repository(models_dir, out)
    return out


def _signature(models_dir: Path, graph: str):
    return tr.onnx_signature(models_dir / f"{graph}.onnx")


def test_onnxruntime_repository_layout_and_configs(repo, models_dir):
    names = tr.validate_repository(repo)
    assert names == ["cmp_supervised", "cmp_unsupervised", "decoder_supervised", "decoder_unsupervised",
                     "encoder", "frontend"]
    for graph in ("frontend", "encoder", "decoder_supervised"):
        assert (repo / graph / "1" / "model.onnx").read_bytes() == (models_dir / f"{graph}.onnx").read_bytes()
    pb2 = tr.model_config_pb2()
    enc = tr.parse_config(repo / "encoder" / "config.pbtxt")
    assert (enc.backend, enc.max_batch_size) == ("onnxruntime", 32)
    assert [(i.name, pb2.DataType.Name(i.data_type), list(i.dims)) for i in enc.input] == [("fbank", "TYPE_FP32", [64, -1])]
    assert enc.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in enc.instance_group] == [(1, "KIND_CPU")]
    warm = enc.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs["fbank"].dims) == [64, 1000] and warm.inputs["fbank"].random_data
    front = tr.parse_config(repo / "frontend" / "config.pbtxt")
    assert list(front.model_warmup[0].inputs["samples"].dims) == [6 * 16000]
    ens = tr.parse_config(repo / "cmp_supervised" / "config.pbtxt")
    assert ens.platform == "ensemble" and (repo / "cmp_supervised" / "1").is_dir()
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["frontend", "encoder", "decoder_supervised"]


@pytest.mark.parametrize("pipeline", ["supervised", "unsupervised"])
def test_ensemble_answers_the_fused_graphs_outputs(repo, models_dir, pipeline):
    """The contract shared with 'cmp-face serve': cmp_<pipeline> takes samples and gives exactly
    the outputs of voice2mesh_<pipeline>.onnx (names, order, datatypes, dims)."""
    pb2 = tr.model_config_pb2()
    ens = tr.parse_config(repo / f"cmp_{pipeline}" / "config.pbtxt")
    inputs, outputs = _signature(models_dir, f"voice2mesh_{pipeline}")
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in ens.input] == \
        [(t.name, t.data_type, t.shape[1:]) for t in inputs]
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in ens.output] == \
        [(t.name, t.data_type, t.shape[1:]) for t in outputs]


def test_fused_gpu_repository(models_dir, tmp_path):
    out = tmp_path / "fused"
    tr.write_repository(models_dir, out, ["unsupervised"], device="gpu", instances=2, fused=True, ort_tensorrt=True)
    assert tr.validate_repository(out) == ["cmp_unsupervised", "voice2mesh_unsupervised"]
    config = tr.parse_config(out / "voice2mesh_unsupervised" / "config.pbtxt")
    pb2 = tr.model_config_pb2()
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [(2, "KIND_GPU")]
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"


@pytest.fixture()
def engines_dir(models_dir, tmp_path) -> Path:
    """The models folder's ONNX files beside stand-in engines named as export/to_trt.py names them
    (Triton loads plans, we only place them: their bytes do not matter here)."""
    folder = tmp_path / "models"
    folder.mkdir()
    for f in models_dir.iterdir():
        (folder / f.name).symlink_to(f)
    for graph in ("frontend", "encoder", "decoder_supervised", "decoder_unsupervised"):
        (folder / f"{graph}_fp32_sm90.engine").write_bytes(f"plan of {graph}".encode())
    return folder


def test_tensorrt_repository(engines_dir, tmp_path):
    out = tmp_path / "trt"
    tr.write_repository(engines_dir, out, backend="tensorrt", device="gpu")
    assert tr.validate_repository(out, engines_dir) == ["cmp_supervised", "cmp_unsupervised", "decoder_supervised",
                                                         "decoder_unsupervised", "encoder", "frontend"]
    assert (out / "encoder" / "1" / "model.plan").read_bytes() == b"plan of encoder"
    config = tr.parse_config(out / "encoder" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.optimization.cuda.graphs
    with pytest.raises(InputError, match="TensorRT plans run on GPU instances: use --device gpu"):
        tr.write_repository(engines_dir, tmp_path / "cpu", backend="tensorrt")
    (engines_dir / "encoder_fp32_ampere-plus.engine").write_bytes(b"another")
    with pytest.raises(ModelError, match="several engines for encoder \\(fp32\\): encoder_fp32_ampere-plus.engine, "
                                         "encoder_fp32_sm90.engine; choose the serving GPU's with --engine-target"):
        tr.write_repository(engines_dir, tmp_path / "two", backend="tensorrt", device="gpu")
    tr.write_repository(engines_dir, tmp_path / "sm90", backend="tensorrt", device="gpu", engine_target="sm90")


def test_tensorrt_without_engines_names_the_build_command(models_dir, tmp_path):
    with pytest.raises(ModelError) as err:
        tr.write_repository(models_dir, tmp_path / "r", backend="tensorrt", device="gpu")
    assert str(err.value) == (f"{models_dir}: no TensorRT engine frontend_fp32_<target>.engine: build the engines "
                              f"first (python export/to_trt.py --models {models_dir} --precision fp32), or use "
                              "--backend onnxruntime")
    assert not (tmp_path / "r").exists()


def test_missing_precision_and_foreign_output_folder(models_dir, tmp_path):
    with pytest.raises(ModelError, match="nope: models folder not found"):
        tr.write_repository(tmp_path / "nope", tmp_path / "r")
    with pytest.raises(ModelError, match=r"encoder_int8.onnx: not found \(the int8 encoder graph\); export it first"):
        tr.write_repository(models_dir, tmp_path / "r", precision="int8")
    (tmp_path / "mine" / "encoder").mkdir(parents=True)
    with pytest.raises(InputError, match="mine: holds encoder, which cmp-face triton-repo did not write; choose "
                                         "another repository or remove them"):
        tr.write_repository(models_dir, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["encoder"]  # nothing written
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file: exists and is not a folder"):
        tr.write_repository(models_dir, tmp_path / "file")


def _broken(repo: Path, tmp_path: Path, model: str, old: str, new: str) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(repo, copy)
    path = copy / model / "config.pbtxt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.parametrize("model, old, new, problem", [
    ("encoder", "max_batch_size: 32", "max_batch_size: 32\nbogus_field: 1",
     'no field named "bogus_field"'),
    ("encoder", 'name: "encoder"', 'name: "encoder2"', "encoder: config name 'encoder2' differs from its folder"),
    ("encoder", "dims: [ 64, -1 ]", "dims: [ 64, 1000 ]",
     "encoder: inputs {'fbank': ('TYPE_FP32', [64, 1000])} differ from the ONNX file's "
     "{'fbank': ('TYPE_FP32', [64, -1])}"),
    ("decoder_supervised", "data_type: TYPE_FP32", "data_type: TYPE_FP16", "decoder_supervised: inputs"),
    ("cmp_supervised", 'model_name: "encoder"', 'model_name: "encoder_x"',
     "cmp_supervised: step model 'encoder_x' is not in the repository"),
    ("cmp_supervised", 'key: "embedding"\n        value: "embedding"', 'key: "embedding"\n        value: "emb"',
     "cmp_supervised: step decoder_supervised reads 'embedding', which no earlier step or ensemble input provides"),
    ("cmp_supervised", 'output_map {\n        key: "params"\n        value: "params"\n      }\n', "",
     "cmp_supervised: ensemble output 'params' is produced by no step"),
])
def test_validation_refuses(repo, tmp_path, model, old, new, problem):
    broken = _broken(repo, tmp_path, model, old, new)
    with pytest.raises(ModelError) as err:
        tr.validate_repository(broken)
    assert problem in str(err.value)


def test_validation_needs_versions_and_files(repo, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(repo, copy)
    (copy / "encoder" / "1" / "model.onnx").unlink()
    shutil.rmtree(copy / "cmp_supervised" / "1")
    with pytest.raises(ModelError) as err:
        tr.validate_repository(copy)
    assert "encoder: 1/model.onnx is missing" in str(err.value)
    assert "cmp_supervised: no version folder (e.g. cmp_supervised/1/)" in str(err.value)


def test_cli_parser_writes_a_repository(models_dir, tmp_path, capsys):
    from runtime.cli.shell import build_parser

    parser = build_parser()
    out = tmp_path / "repo"
    args = parser.parse_args(["triton-repo", "--models", str(models_dir), "-o", str(out), "--pipeline", "supervised",
                              "--fused", "--max-batch", "8"])
    assert args.command.run(args) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 2 models (cmp_supervised, voice2mesh_supervised)")
    assert tr.parse_config(out / "voice2mesh_supervised" / "config.pbtxt").max_batch_size == 8
    args = parser.parse_args(["serve", "--models", str(models_dir)])
    assert (args.host, args.port, args.max_batch, args.max_delay_ms) == ("127.0.0.1", 8000, None, 2.0)  # by device


# ------------------------------------------------------------------------------ a real Triton server

PYTRITON = "nvidia-pytriton==0.7.0"  # ships a real tritonserver binary with the python backend only
TOOLS = Path.home() / ".cache" / "cmp-deploy-tools"
# Triton has no onnxruntime backend here, so the test swaps each graph's backend for a python
# model that runs the same model.onnx with ONNX Runtime; the configs, the ensemble wiring, the
# warm-up and the protocol are Triton's own. DLPack both ways: the stub's numpy bridge predates
# numpy 2 and hands over empty or wrong buffers otherwise.
STAND_IN = '''import json
import os
import sys

sys.path[:0] = {paths!r}
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {{n: np.from_dlpack(pb_utils.get_input_tensor_by_name(request, n)) for n in self.inputs}}
            values = self.session.run(self.outputs, feeds)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor.from_dlpack(n, np.ascontiguousarray(v)) for n, v in zip(self.outputs, values)]))
        return responses
'''


def _tritonserver() -> Path:
    """tritonserver from the nvidia-pytriton wheel, fetched once into a cache (skip if impossible)."""
    import subprocess
    import sys
    import zipfile

    root = TOOLS / "nvidia-pytriton-0.7.0"
    binary = root / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        wheels = TOOLS / "wheels"
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PYTRITON, "-d",
                                  str(wheels)], capture_output=True, text=True, timeout=600)
        found = sorted(wheels.glob("nvidia_pytriton-0.7.0-*.whl"))
        if fetched.returncode or not found:
            pytest.skip(f"cannot fetch {PYTRITON} (a real tritonserver): {fetched.stderr.strip()[-200:]}")
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        zipfile.ZipFile(found[0]).extractall(tmp)
        tmp.rename(root)
    server = root / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
        "triton_python_backend_stub"
    if not stub.is_file():
        pytest.skip(f"{PYTRITON} has no python backend stub for Python {sys.version_info[:2]}")
    shutil.copyfile(stub, server / "backends" / "python" / stub.name)
    for exe in (binary, server / "backends" / "python" / stub.name):
        exe.chmod(0o755)
    return binary


@pytest.mark.slow
def test_real_tritonserver_serves_the_ensemble_like_the_predictor(models_dir, tmp_path):
    """A real tritonserver loads the generated repository (configs, warm-up, the 3-step
    ensemble) and answers cmp_supervised like the Predictor's fused-graph path, through the
    same client helper that talks to 'cmp-face serve'."""
    import os
    import signal
    import socket
    import subprocess
    import time

    import numpy as np
    import onnxruntime
    import tritonclient.http as th

    from runtime.demo_signal import demo_voice
    from runtime.predictor import Predictor
    from runtime.serve.client import infer

    binary = _tritonserver()
    repo = tmp_path / "repo"
    tr.write_repository(models_dir, repo, ["supervised"])
    paths = sorted({str(Path(m.__file__).parents[1]) for m in (np, onnxruntime)})
    for graph in ("frontend", "encoder", "decoder_supervised"):
        config = repo / graph / "config.pbtxt"
        config.write_text(config.read_text().replace('backend: "onnxruntime"', 'backend: "python"'))
        (repo / graph / "1" / "model.py").write_text(STAND_IN.format(paths=paths))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "triton.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "--model-repository", str(repo), "--http-port", str(port),
                                 "--grpc-port", "0", "--allow-grpc", "false", "--allow-metrics", "false",
                                 "--disable-auto-complete-config", "--allow-gpu-metrics", "false",
                                 "--backend-directory", str(binary.parents[1] / "backends")],
                                stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONNOUSERSITE": "1"})
    try:
        client = th.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            text = log.read_text(errors="replace")
            if "Failed to initialize Python stub" in text:
                pytest.skip(f"Triton's python backend stub cannot start here: {text[-300:]}")
            assert proc.poll() is None, f"tritonserver exited {proc.returncode}:\n{text[-3000:]}"
            try:
                if client.is_server_ready() and client.is_model_ready("cmp_supervised"):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert time.monotonic() < deadline, f"tritonserver not ready:\n{text[-3000:]}"
            time.sleep(0.5)
        meta = client.get_model_metadata("cmp_supervised")
        assert meta["platform"] == "ensemble"
        assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 64]},
                                   {"name": "params", "datatype": "FP32", "shape": [-1, 51]},
                                   {"name": "vertices", "datatype": "FP32", "shape": [-1, 53215, 3]}]
        samples = demo_voice(3.0)
        got = infer(f"127.0.0.1:{port}", samples)  # the same client helper as for 'cmp-face serve'
        want = Predictor(models_dir, "supervised", threads=1, frontend="fused").predict(
            samples, sample_rate=16000, vad=False)
        for name in ("embedding", "params", "vertices"):
            ref = getattr(want, name)
            np.testing.assert_allclose(got[name][0], ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_pipelines_from_a_crafted_manifest_are_refused_and_nothing_is_written(models_dir, tmp_path):
    import json

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("encoder.onnx", "frontend.onnx", "decoder_supervised.onnx", "triangles.npy"):
        (folder / name).symlink_to(models_dir / name)
    manifest = json.loads((models_dir / "models.json").read_text())
    manifest["pipelines"] = ["supervised", "../../victim"]
    (folder / "models.json").write_text(json.dumps(manifest))
    (tmp_path / "victim").mkdir()
    with pytest.raises(ModelError) as err:
        tr.write_repository(folder, tmp_path / "repo" / "inner")
    assert str(err.value) == (f"{folder / 'models.json'}: 'pipelines' must list some of supervised, unsupervised, "
                              "found ['supervised', '../../victim']")
    with pytest.raises(ModelError, match="^unknown pipeline '../x': choose one of supervised, unsupervised$"):
        tr.write_repository(models_dir, tmp_path / "repo", pipelines=["../x"])
    assert not (tmp_path / "repo").exists() and list((tmp_path / "victim").iterdir()) == []


def test_a_rerun_replaces_only_its_own_model_folders_and_copies_unless_asked_to_link(models_dir, tmp_path):
    repo = tmp_path / "shared"
    (repo / "someone_elses_model" / "1").mkdir(parents=True)
    (repo / "someone_elses_model" / "config.pbtxt").write_text('name: "someone_elses_model"\n')
    (repo / "NOTES.md").write_text("our serving notes\n")
    tr.write_repository(models_dir, repo, ["supervised"], fused=True)
    before = {p: p.read_bytes() for p in [repo / "NOTES.md", repo / "someone_elses_model" / "config.pbtxt"]}
    copy = repo / "voice2mesh_supervised" / "1" / "model.onnx"
    assert copy.stat().st_nlink == 1 and copy.stat().st_ino != (models_dir / "voice2mesh_supervised.onnx").stat().st_ino
    copy.write_bytes(b"edited in place")  # the models folder's file is not touched
    assert (models_dir / "voice2mesh_supervised.onnx").read_bytes()[:16] != b"edited in place"
    folders = tr.write_repository(models_dir, repo, ["supervised"], fused=True, max_batch=4)
    assert [p.name for p in folders] == ["cmp_supervised", "voice2mesh_supervised"]
    assert {p: p.read_bytes() for p in before} == before  # untouched
    assert tr.parse_config(repo / "voice2mesh_supervised" / "config.pbtxt").max_batch_size == 4
    assert copy.read_bytes() == (models_dir / "voice2mesh_supervised.onnx").read_bytes()
    assert sorted(p.name for p in repo.iterdir()) == [".cmp-triton-repo", "NOTES.md", "cmp_supervised",
                                                      "someone_elses_model", "voice2mesh_supervised"]
    tr.write_repository(models_dir, repo, ["supervised"], fused=True, link=True)
    assert copy.stat().st_ino == (models_dir / "voice2mesh_supervised.onnx").stat().st_ino


def test_int8_repository_serves_the_files_the_manifest_names(models_dir, tmp_path):
    """After a calibrate that kept the decoder FP32, triton-repo --precision int8 serves the INT8
    encoder, the FP32 decoder the manifest names and the FP32 frontend."""
    from tests.helpers.folders import int8_keeping_the_decoder_fp32

    m = int8_keeping_the_decoder_fp32(models_dir, tmp_path)
    written = tr.write_repository(m, tmp_path / "r", precision="int8", pipelines=["supervised"])
    assert sorted(p.name for p in written) == ["cmp_supervised", "decoder_supervised", "encoder", "frontend"]
    repo = tmp_path / "r"
    for model, source in (("encoder", "encoder_int8.onnx"), ("decoder_supervised", "decoder_supervised.onnx"),
                          ("frontend", "frontend.onnx")):
        assert (repo / model / "1" / "model.onnx").read_bytes() == (m / source).read_bytes(), model
