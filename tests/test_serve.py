"""``cmp-face serve``: the real server on loopback, driven by tritonclient.http (a client we did
not write) and plain HTTP (httpx). Two server processes: one with ordinary limits and a small
body/duration limit, one slow (a 3 s batching delay, a 0.5 s deadline, 2 requests admitted)
to reach the queue and deadline limits deterministically.

Tolerance: results equal the Predictor's for the same input to 1e-5 of the output's scale; the
server batches utterances, and a batched encoder product may round differently from a single one.
"""
from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.data import FBANKS, WAVS, requires
from tests.helpers.server import Server, error_of, speech, wav_bytes

httpx = pytest.importorskip("httpx")
th = pytest.importorskip("tritonclient.http")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 2_000_000
MAX_AUDIO_S = 12.0


@pytest.fixture(scope="module")
def server(models_dir):
    s = Server(models_dir, "--max-batch", "8", "--max-delay-ms", "30", "--max-body-bytes", str(MAX_BODY),
               "--max-audio-s", str(MAX_AUDIO_S))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def predictor(models_dir):
    from runtime.predictor import Predictor

    return Predictor(models_dir, "supervised", threads=1)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


# ------------------------------------------------------------------------------ protocol


def fused_graph_outputs(path: Path) -> list[dict]:
    """The protocol metadata the fused graph's outputs must have, read from the ONNX file here (all
    our outputs are float32 or uint8; symbolic dimensions are -1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    datatype = {"tensor(float)": "FP32", "tensor(uint8)": "UINT8"}
    return [{"name": o.name, "datatype": datatype[o.type], "shape": [d if isinstance(d, int) else -1 for d in o.shape]}
            for o in session.get_outputs()]


def test_health_and_metadata_match_the_fused_graph(server, models_dir):
    c = server.client()
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("cmp_supervised") and c.is_model_ready("cmp_supervised_fbank")
    assert not c.is_model_ready("cmp_nope")
    meta = c.get_model_metadata("cmp_supervised")
    assert meta["outputs"] == fused_graph_outputs(models_dir / "voice2mesh_supervised.onnx")
    assert meta["inputs"] == [{"name": "samples", "datatype": "FP32", "shape": [-1, -1]}]
    assert c.get_model_metadata("cmp_supervised_fbank")["inputs"] == [
        {"name": "fbank", "datatype": "FP32", "shape": [-1, -1, 64]}]
    with pytest.raises(Exception) as err:
        c.get_model_metadata("cmp_nope")
    assert "Request for unknown model: 'cmp_nope' is not found" in str(err.value)


def test_tritonclient_binary_int16_batch_equals_predictor(server, predictor):
    voice = speech(4.0)
    batch = np.stack([voice[:30000], voice[20000:50000]])
    inp = th.InferInput("samples", list(batch.shape), "INT16")
    inp.set_data_from_numpy(batch)
    result = server.client().infer("cmp_supervised", [inp])  # no outputs named: all, as binary
    assert [o["name"] for o in result.get_response()["outputs"]] == ["embedding", "params", "vertices"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    for k in range(2):
        want = predictor.predict(batch[k], sample_rate=16000, vad=False)
        for name in ("embedding", "params", "vertices"):
            got = result.as_numpy(name)[k]
            assert got.dtype == np.float32
            _close(got, getattr(want, name))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(server, predictor, algorithm):
    voice = speech(2.0)
    inp = th.InferInput("samples", [1, voice.size], "INT16")
    inp.set_data_from_numpy(voice[None])
    result = server.client().infer("cmp_supervised", [inp], request_compression_algorithm=algorithm)
    _close(result.as_numpy("params")[0], predictor.predict(voice, sample_rate=16000, vad=False).params)
    import gzip

    bomb = gzip.compress(b" " * (MAX_BODY + 10))  # a small body that inflates beyond the limit
    r = httpx.post(f"{server.url}/v2/models/cmp_supervised/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert error_of(r) == f"the gzip request body inflates beyond this server's limit of {MAX_BODY} bytes"
    r = httpx.post(f"{server.url}/v2/models/cmp_supervised/infer", content=b"x", headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    assert error_of(r) == "Content-Encoding 'br' is not supported: send the request uncompressed, gzip or deflate"


def test_json_fp32_samples_and_requested_outputs(server, predictor):
    voice = speech(2.0)
    inp = th.InferInput("samples", [1, voice.size], "FP32")
    inp.set_data_from_numpy(voice[None].astype(np.float32), binary_data=False)  # int16-scale values
    out = th.InferRequestedOutput("params", binary_data=False)
    result = server.client().infer("cmp_supervised", [inp], outputs=[out])
    entries = result.get_response()["outputs"]
    assert [(e["name"], e["datatype"], e["shape"]) for e in entries] == [("params", "FP32", [1, 51])]
    assert "data" in entries[0]
    _close(result.as_numpy("params")[0], predictor.predict(voice, sample_rate=16000, vad=False).params)


def test_sample_rate_and_vad_parameters(server, predictor):
    voice = np.concatenate([np.zeros(8000, np.int16), speech(3.0)[::2]])  # 8 kHz with a silent lead
    inp = th.InferInput("samples", [1, voice.size], "INT16")
    inp.set_data_from_numpy(voice[None])
    result = server.client().infer("cmp_supervised", [inp], parameters={"sample_rate": 8000, "vad": True})
    want = predictor.predict(voice, sample_rate=8000, vad=True)
    _close(result.as_numpy("vertices")[0], want.vertices)


@requires(FBANKS, "release fbank .npy files")
def test_fbank_model_equals_predictor(server, predictor):
    fbank = np.load(FBANKS[0]).astype(np.float32)
    inp = th.InferInput("fbank", [1, *fbank.shape], "FP32")
    inp.set_data_from_numpy(fbank[None])
    result = server.client().infer("cmp_supervised_fbank", [inp])
    want = predictor.predict(fbank)
    _close(result.as_numpy("embedding")[0], want.embedding)
    _close(result.as_numpy("vertices")[0], want.vertices)


@requires(WAVS, "VoxCeleb WAV files")
def test_client_helper_matches_the_cli_path(server, predictor):
    """The documented client (VAD on the client, FP32 samples as Triton's ensemble declares them)
    gives what the CLI's Predictor gives for the same file."""
    from runtime.serve.client import infer, prepare_samples

    out = infer(f"127.0.0.1:{server.port}", prepare_samples(WAVS[0]))
    want = predictor.predict(WAVS[0])
    assert sorted(out) == ["embedding", "params", "vertices"]
    _close(out["vertices"][0], want.vertices)


# ------------------------------------------------------------------------------ /predict


@requires(WAVS, "VoxCeleb WAV files")
def test_predict_raw_and_multipart_equal_predictor(server, predictor):
    wav = WAVS[0]
    want = predictor.predict(wav)  # VAD on, like the CLI
    raw = httpx.post(f"{server.url}/predict", content=wav.read_bytes(), timeout=30)
    form = httpx.post(f"{server.url}/predict", files={"audio": (wav.name, wav.read_bytes(), "audio/wav")},
                      timeout=30)
    for r in (raw, form):
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["untrained"] is True and doc["pipeline"] == "supervised"
        _close(np.array(doc["params"], np.float32), want.params)
        _close(np.array(doc["embedding"], np.float32), want.embedding)
        assert {"audio", "vad", "fbank", "queue", "model", "total"} <= set(doc["timings_ms"])


def test_predict_formats(server):
    body = wav_bytes(speech(3.0))
    obj = httpx.post(f"{server.url}/predict?format=obj", content=body, timeout=30)
    assert obj.status_code == 200 and obj.text.startswith("v ")
    assert obj.text.count("\nv ") + 1 == 53215
    png = httpx.post(f"{server.url}/predict?format=png", content=body, timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    import cv2

    assert cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR).shape == (512, 512, 3)
    npz = np.load(io.BytesIO(httpx.post(f"{server.url}/predict?format=npz", content=body, timeout=30).content))
    assert sorted(npz.files) == ["embedding", "params", "vertices"] and npz["vertices"].shape == (53215, 3)
    ply = httpx.post(f"{server.url}/predict?format=ply", content=body, timeout=30)
    assert ply.content.startswith(b"ply\nformat binary_little_endian 1.0\n")


# ------------------------------------------------------------------------------ bad input and limits


def test_bad_audio_answers_the_cli_message(server):
    from runtime.audio import load_audio
    from runtime.errors import InputError, NoSpeechError
    from runtime.vad import remove_silence

    garbage = b"RIFF\x10\x00\x00\x00WAVEjunk"
    with pytest.raises(InputError) as expected:
        load_audio(garbage, name="the request's audio")
    r = httpx.post(f"{server.url}/predict", content=garbage)
    assert r.status_code == 400 and error_of(r) == str(expected.value)
    silence = np.zeros(16000, np.int16)
    with pytest.raises(NoSpeechError) as expected:
        remove_silence(silence)
    r = httpx.post(f"{server.url}/predict", content=wav_bytes(silence))
    assert r.status_code == 400 and error_of(r) == str(expected.value)
    r = httpx.post(f"{server.url}/predict", content=b"")
    assert r.status_code == 400 and error_of(r) == ("the request holds no audio: send an audio file as the body "
                                                  "or as a form file")
    r = httpx.post(f"{server.url}/predict?format=gif", content=b"x")
    assert r.status_code == 400 and error_of(r) == "format must be one of json, obj, ply, png, npz, got 'gif'"


def _infer(server, doc: dict, model: str = "cmp_supervised", binary: bytes = b""):
    head = json.dumps(doc).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=head + binary, headers=headers, timeout=30)


@pytest.mark.parametrize("doc, binary, message", [
    ({"inputs": [{"name": "audio", "datatype": "INT16", "shape": [1, 2], "data": [1, 2]}]}, b"",
     "model 'cmp_supervised' takes one input named 'samples', got 'audio'"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 3], "data": [1, 2]}]}, b"",
     "input 'samples': 'data' holds 2 values, shape [1, 3] needs 3"),
    ({"inputs": [{"name": "samples", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}, b"",
     "input 'samples': datatype must be INT16 or FP32, got int32"),
    ({"inputs": [{"name": "samples", "datatype": ["FP32"], "shape": [1, 2], "data": [1, 2]}]}, b"",
     "input 'samples': unsupported datatype ['FP32']"),
    ({"inputs": [{"name": "samples", "datatype": {"a": 1}, "shape": [1, 2], "data": [1, 2]}]}, b"",
     "input 'samples': unsupported datatype {'a': 1}"),
    ({"inputs": [{"name": "samples", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]},
     np.array([np.nan, 1], np.float32).tobytes(), "input 'samples': contains NaN or infinite values"),
    ({"inputs": [{"name": "samples", "datatype": "FP32", "shape": [1, 2], "data": [0.5, -40000.0]}]}, b"",
     "input 'samples': values are int16-scale (-32768 to 32767), got a magnitude of 40000 (float audio in "
     "[-1, 1]? multiply it by 32768)"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 4], "parameters": {"binary_data_size": 6}}]},
     b"\0" * 6, "input 'samples': binary_data_size 6 does not match shape [1, 4] of INT16 (8 bytes)"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 2], "data": [1, 2]}],
      "outputs": [{"name": "mesh"}]}, b"",
     "unexpected inference output 'mesh' for model 'cmp_supervised' (it has embedding, params, vertices)"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 2], "data": [1, 2]}],
      "parameters": {"vad": "yes"}}, b"", "parameter 'vad' must be true or false, got 'yes'"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 2], "data": [1, 2]}],
      "parameters": {"sample_rate": 10}}, b"", "absurd sample rate: 10 Hz (supported: 4000 to 384000 Hz)"),
    ({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [33, 1], "data": [0] * 33}]}, b"",
     "input 'samples': batch of 33 exceeds the limit of 32"),
])
def test_bad_infer_requests_answer_400(server, doc, binary, message):
    r = _infer(server, doc, binary=binary)
    assert r.status_code == 400 and error_of(r) == message


@pytest.mark.parametrize("datatype", ["INT16", "FP32"])
def test_samples_without_signal_answer_the_predictors_message(server, predictor, datatype):
    from runtime.errors import InputError

    from runtime.fbank import check_signal

    flat = np.full(16000, 7, np.int16)
    with pytest.raises(InputError) as expected:
        if datatype == "INT16":
            predictor.predict(flat, sample_rate=16000, vad=False)
        else:  # FP32 is used as given: the Predictor's check, on the float values
            check_signal(flat.astype(np.float32))
    doc = {"inputs": [{"name": "samples", "datatype": datatype, "shape": [1, 16000], "data": [7] * 16000}]}
    r = _infer(server, doc)
    assert r.status_code == 400 and error_of(r) == str(expected.value)
    assert error_of(r).startswith("no signal in the audio: all 16000 samples are 7")


def test_malformed_bodies_and_unknown_routes(server):
    r = httpx.post(f"{server.url}/v2/models/cmp_supervised/infer", content=b"{not json")
    assert r.status_code == 400 and error_of(r).startswith("the request header is not valid JSON")
    r = httpx.post(f"{server.url}/v2/models/cmp_supervised/infer", content=b"{}", headers={
        "Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and error_of(r) == "Inference-Header-Content-Length 99 does not fit the 2-byte body"
    fbank = {"inputs": [{"name": "fbank", "datatype": "FP32", "shape": [1, 100, 64], "data": [1e6] * 6400}]}
    r = _infer(server, fbank, model="cmp_supervised_fbank")
    assert r.status_code == 400 and "is not a normalised fbank value" in error_of(r)
    fbank = {"inputs": [{"name": "fbank", "datatype": "FP32", "shape": [1, 2, 64], "data": [0.5] * 128}]}
    r = _infer(server, fbank, model="cmp_supervised_fbank")
    assert r.status_code == 400 and error_of(r) == ("0.01 s of features (2 frames) is too short: the encoder needs at "
                                                    "least 63 frames (0.62 s) to see one window; give a few seconds "
                                                    "of voice")
    r = httpx.get(f"{server.url}/v2/models/cmp_supervised/versions/7")
    assert r.status_code == 404 and error_of(r).startswith("Request for unknown model: 'cmp_supervised' version 7")
    r = httpx.get(f"{server.url}/v2/models/cmp_supervised/infer")
    assert r.status_code == 405 and error_of(r) == "method GET is not allowed on /v2/models/cmp_supervised/infer"


def test_size_and_duration_limits(server):
    r = httpx.post(f"{server.url}/predict", content=b"\0" * (MAX_BODY + 1))
    assert r.status_code == 413
    assert error_of(r) == f"request body of {MAX_BODY + 1} bytes is larger than this server's limit of {MAX_BODY} bytes"

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(3):
            yield b"\0" * (MAX_BODY // 2)

    r = httpx.post(f"{server.url}/predict", content=chunks())
    assert r.status_code == 413 and error_of(r) == f"request body is larger than this server's limit of {MAX_BODY} bytes"
    n = int(13 * 16000)
    r = httpx.post(f"{server.url}/predict", content=wav_bytes(np.zeros(n, np.int16)))
    assert r.status_code == 413
    assert error_of(r) == (f"audio is too long: the request's audio declares {n} frames at 16000 Hz (13.000 s), "
                           "the limit is 12 s (raise the server's --max-audio-s to accept it)")
    doc = {"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, 8000 * 13],
                       "parameters": {"binary_data_size": 2 * 8000 * 13}}], "parameters": {"sample_rate": 8000}}
    r = _infer(server, doc, binary=b"\0" * (2 * 8000 * 13))
    assert r.status_code == 413 and error_of(r).startswith("audio of 13.0 s (104000 samples)")
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_concurrent_requests_are_batched_and_exact(server, predictor):
    voice = speech(3.0)
    rows = [voice[i * 1000:i * 1000 + 24000] for i in range(6)]
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        inp = th.InferInput("samples", [1, rows[i].size], "INT16")
        inp.set_data_from_numpy(rows[i][None])
        results[i] = server.client().infer("cmp_supervised", [inp]).as_numpy("params")[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, row in enumerate(rows):
        _close(results[i], predictor.predict(row, sample_rate=16000, vad=False).params)


def test_metrics(server):
    text = httpx.get(f"{server.url}/metrics").text
    assert 'cmp_serve_requests_total{code="200",endpoint="/v2/models/{name}/infer"}' in text
    assert 'cmp_serve_errors_total{code="400",endpoint="/v2/models/{name}/infer"}' in text
    assert 'cmp_serve_errors_total{code="413",endpoint="/predict"}' in text
    for name in ("cmp_serve_batch_size_count", 'cmp_serve_stage_seconds_count{stage="fbank"}',
                 'cmp_serve_stage_seconds_count{stage="model"}', "cmp_serve_queue_depth",
                 'cmp_serve_request_seconds_bucket{endpoint="/predict",le="0.1"}'):
        assert name in text
    sizes = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("cmp_serve_batch_size_sum")]
    assert sizes and sizes[0] >= 6  # the utterances of the tests above went through batches
    assert '"POST /v2/models/cmp_supervised/infer" 200' in server.output()  # the access log


def test_sigterm_drains_in_flight_requests_and_exits_0(server):
    body = wav_bytes(speech(8.0))
    answers = []
    t = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{server.url}/predict", content=body, timeout=30)))
    t.start()
    with httpx.Client(base_url=server.url) as http:
        _wait_for_metric(http, "cmp_serve_inflight_requests 1.0")  # admitted, not answered yet
    server.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert server.proc.wait(30) == 0, server.output()
    assert answers and answers[0].status_code == 200 and "params" in answers[0].json()


# ------------------------------------------------------------------------------ queue and deadline


@pytest.fixture(scope="module")
def slow_server(models_dir):
    s = Server(models_dir, "--max-batch", "8", "--max-delay-ms", "3000", "--max-queue", "2", "--timeout-s", "0.5",
               "--body-timeout-s", "1", "--header-timeout-s", "2")
    yield s
    s.stop()


def test_full_queue_answers_503_and_deadline_504(slow_server):
    body = wav_bytes(speech(2.0))
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(httpx.post(f"{slow_server.url}/predict", content=body,
                                                                         timeout=30))) for _ in range(2)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=slow_server.url) as http:
        _wait_for_metric(http, "cmp_serve_inflight_requests 2.0")
        # both admitted requests hold their slots until the batch window ends (3 s)
        r = http.post("/predict", content=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert error_of(r) == "server busy: 2 requests in flight, the limit is 2; retry later"
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [504, 504]
        assert error_of(answers[0]) == "request deadline of 0.5 s exceeded"
        _wait_for_metric(http, "cmp_serve_inflight_requests 0.0")  # their work ended with the window
        assert http.get("/v2/health/ready").status_code == 200


def test_slow_upload_is_cut_at_the_body_deadline_and_never_admitted(slow_server):
    """A client that stops sending its body gets 408 at the body deadline; it was never admitted."""
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock, \
            httpx.Client(base_url=slow_server.url) as http:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nRIFF")
        sock.settimeout(10)
        time.sleep(0.3)
        assert "cmp_serve_inflight_requests 0.0" in http.get("/metrics").text
        answer = ""
        while "}" not in answer:  # headers and body may come in separate segments
            chunk = sock.recv(4096).decode()
            assert chunk, f"connection closed after {answer!r}"
            answer += chunk
        assert answer.startswith("HTTP/1.1 408")
        assert '{"error":"the request body did not arrive within this server\'s limit of 1 s"}' in answer


def _wait_for_metric(http, line: str) -> None:
    deadline = time.monotonic() + 20
    while line not in http.get("/metrics").text:
        assert time.monotonic() < deadline, f"metrics never showed {line!r}"
        time.sleep(0.005)


# ------------------------------------------------------------------------------ the model stage in-process


@pytest.mark.parametrize("pipeline, frontend", [("unsupervised", "numpy"), ("supervised", "fused")])
def test_served_pipeline_equals_predictor(models_dir, pipeline, frontend):
    """What the HTTP tests do not start a server for: the unsupervised pipeline's outputs (image,
    pose) and the fused-graph frontend, through the same prepare/run path the server uses."""
    from runtime.predictor import Predictor
    from runtime.serve.pipeline import Limits, ServedPipeline
    from runtime.stages import Stages

    predictor = Predictor(models_dir, pipeline, threads=1, frontend=frontend)
    served = ServedPipeline(predictor, Limits())
    assert served.outputs == fused_graph_outputs(models_dir / f"voice2mesh_{pipeline}.onnx")
    voice = speech(3.0)
    batch = np.stack([voice[:20000], voice[5000:25000]])
    items = served.request_inputs().samples(batch, None, False, Stages())
    assert [kind for kind, _ in items] == (["samples"] * 2 if frontend == "fused" else ["fbank"] * 2)
    rows = served.run(items)
    out = served.stack(rows, served.output_names)
    for k in range(2):
        want = predictor.predict(batch[k], sample_rate=16000, vad=False)
        _close(out["vertices"][k], want.vertices)
        _close(out["params"][k], want.params)
        if pipeline == "unsupervised":
            _close(out["pose_R"][k], want.pose_R)
            _close(out["vertices_frontal"][k], want.vertices_frontal)
            # uint8 display image: truncation may move a value by 1 when batching rounds differently
            face = served.prediction(rows[k]).face_image.astype(int)
            assert face.shape == (120, 120, 3) and np.abs(face - want.face_image).max() <= 1


@pytest.mark.parametrize("options, message", [
    (dict(port=70000), "--port must be between 0 and 65535, got 70000"),
    (dict(max_batch=33), "--max-batch must be between 1 and 32, got 33"),
    (dict(max_delay_ms=-1), "--max-delay-ms must be between 0 and 10000, got -1"),
    (dict(workers=0), "--workers must be between 1 and 256, got 0"),
    (dict(threads=0), "--threads must be between 1 and 256, got 0"),
])
def test_serve_options_are_checked_before_models_open(tmp_path, options, message):
    from runtime.errors import InputError
    from runtime.serve import serve

    with pytest.raises(InputError) as err:
        serve(tmp_path / "no-models", **options)  # the folder is never looked at
    assert str(err.value) == message


# ------------------------------------------------------------------------------ the batcher alone


def test_batcher_groups_concurrent_requests_up_to_max_batch():
    from runtime.serve.batcher import Batcher

    seen: list[list[int]] = []

    def run(items):
        seen.append(list(items))
        return [x * 10 for x in items]

    async def main():
        b = Batcher(run, max_batch=4, max_delay_s=0.05)
        b.start()
        loop = asyncio.get_running_loop()
        far = loop.time() + 10
        out = await asyncio.gather(b.submit([1], far), b.submit([2, 3], far), b.submit([4, 5], far),
                                   b.submit([6], far))
        await b.stop()
        return [o.results for o in out]

    assert asyncio.run(main()) == [[10], [20, 30], [40, 50], [60]]
    # [4, 5] would overflow the first batch of 4: it starts the next one (a request is never split)
    assert seen == [[1, 2, 3], [4, 5, 6]]


def test_load_report_held_rule():
    """benchmarks/serve_load.py: a rate is held when p99 < 100 ms, nothing failed and >= 95 % of
    the offered rate was answered."""
    from benchmarks.serve_load import _summary, held

    latencies = [0.01] * 99 + [0.2]  # p99 interpolates to 11.9 ms
    row = {"offered_per_s": 10.0, **_summary(latencies, [200] * 100, 10.0)}
    assert row["p99_ms"] == pytest.approx(11.9) and held(row)
    assert not held({"offered_per_s": 10.0, **_summary(latencies, [200] * 99 + [503], 10.0)})
    assert not held({"offered_per_s": 11.0, **_summary(latencies, [200] * 100, 10.0)})  # 10/s answered of 11
    assert not held({"offered_per_s": 10.0, **_summary([0.01] * 90 + [0.2] * 10, [200] * 100, 10.0)})


def test_load_report_attack_verdict():
    """Under attack: at rates held without attack every valid request must be 200; above them
    only 503 (with Retry-After: a 503 without it is recorded under its own name) is allowed."""
    from benchmarks.serve_load import attack_verdict

    assert attack_verdict({"offered_per_s": 8.0, "errors": {}}, 8.0) == "ok"
    assert attack_verdict({"offered_per_s": 8.0, "errors": {"503": 2}}, 8.0) == \
        "valid requests failed below the held rate: {'503': 2}"
    assert attack_verdict({"offered_per_s": 16.0, "errors": {"503": 40}}, 8.0) == "ok"
    assert attack_verdict({"offered_per_s": 16.0, "errors": {"503": 4, "503 without Retry-After": 1, "504": 1}},
                          8.0) == "valid requests got {'503 without Retry-After': 1, '504': 1}"
    assert attack_verdict({"offered_per_s": 2.0, "errors": {"0": 1}}, None) == "valid requests got {'0': 1}"


def test_hostile_flac_bomb_hides_its_length_and_decodes_to_its_frames():
    from benchmarks.hostile import silent_flac_hiding_its_length
    from runtime.audio import load_audio

    data = silent_flac_hiding_its_length(50000)
    assert int.from_bytes(data[18:26], "big") & ((1 << 36) - 1) == 0  # total samples: unknown
    assert load_audio(data).shape == (50000,)
