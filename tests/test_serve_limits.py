"""The server against hostile and careless clients (loopback, short limits): slow senders never lock
valid requests out, expensive answers are refused before any model work, client mistakes are 4xx,
hang-ups are 499 without a traceback, and no client can forge a log line."""
from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time

import numpy as np
import pytest

from tests.helpers.server import Server, error_of, speech, wav_bytes

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

HEADER_S = 2.0
BODY_S = 2.0


@pytest.fixture(scope="module")
def guarded(models_dir):
    s = Server(models_dir, "--max-queue", "4", "--header-timeout-s", str(HEADER_S), "--body-timeout-s", str(BODY_S),
               "--max-json-bytes", "10000000")
    yield s
    s.stop()


def _metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return found[0] if found else 0.0


def test_stalled_senders_never_lock_valid_requests_out(guarded):
    """100 connections: half stop inside their headers, half after the headers and 4 body bytes. A
    valid request is answered meanwhile; the header stallers are closed at the header deadline and
    the body stallers answered 408 at the body deadline, never having held an admission slot."""
    header_stallers, body_stallers = [], []
    try:
        for k in range(100):
            sock = socket.create_connection(("127.0.0.1", guarded.port))
            if k % 2:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le")
                header_stallers.append(sock)
            else:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nRIFF")
                body_stallers.append(sock)
        started = time.monotonic()
        r = httpx.post(f"{guarded.url}/predict", content=wav_bytes(speech(2.0)), timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 10
        assert _metric(guarded, "cmp_serve_inflight_requests") == 0.0
        for sock in header_stallers[:5]:
            sock.sendall(b"n")  # trickling bytes does not extend the header deadline
        time.sleep(HEADER_S + 1.0)
        for sock in header_stallers:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server, nothing answered
        for sock in body_stallers:
            sock.settimeout(5)
            answer = sock.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408"), answer
    finally:
        for sock in header_stallers + body_stallers:
            sock.close()
    assert httpx.get(f"{guarded.url}/v2/health/ready").status_code == 200


def test_bodies_that_stall_give_the_receiving_budget_up_to_a_valid_request(models_dir):
    """Two bodies nearly complete, then stalled, fill the receiving budget: a request arriving
    while they are fresh gets 503 (the budget is real), one arriving after they have been slow for
    a second gets 200, and the stalled body given up for it is answered 408."""
    from runtime.serve.app import MIN_BODY_RATE

    server = Server(models_dir, "--max-body-bytes", "1000000", "--max-receiving-bytes", "2000000",
                    "--body-timeout-s", "20")
    stallers = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"\0" * 999_990)
            stallers.append(sock)
        time.sleep(0.2)
        valid = wav_bytes(speech(2.0))
        r = httpx.post(f"{server.url}/predict", content=valid, timeout=10)
        assert (r.status_code, error_of(r)) == (503, "server busy receiving other requests; retry later")
        time.sleep(1.5)
        assert httpx.post(f"{server.url}/predict", content=valid, timeout=10).status_code == 200
        # the slowest one (the first) was given up, enough for the valid body; the other waits on
        ready, _, _ = select.select(stallers, [], [], 5)
        assert ready == stallers[:1]
        answer = stallers[0].recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert (f"the request body arrived at under {MIN_BODY_RATE // 1024} KiB/s while other requests waited "
                "for the server's receiving budget; send it faster or retry") in answer
    finally:
        for sock in stallers:
            sock.close()
        server.stop()


def test_an_answer_too_large_for_json_is_refused_before_any_model_work(guarded):
    fbank = np.random.default_rng(0).standard_normal((3, 250, 64)).astype(np.float32)

    def request(batch: int, binary: bool):
        doc = {"inputs": [{"name": "fbank", "datatype": "FP32", "shape": [batch, 250, 64],
                           "data": fbank[:batch].ravel().tolist()}], "parameters": {"binary_data_output": binary}}
        return httpx.post(f"{guarded.url}/v2/models/cmp_supervised_fbank/infer", content=json.dumps(doc), timeout=30)

    runs = _metric(guarded, 'cmp_serve_stage_seconds_count{stage="model"}')
    r = request(3, binary=False)  # 3 x 159,760 values: up to 12 MB of JSON, the limit is 10 MB
    assert r.status_code == 400
    assert error_of(r) == ("the JSON answer would take up to 12 MB, more than this server's limit of 10 MB: ask for "
                           "binary outputs (request parameter binary_data_output, or binary_data on each output; "
                           "tritonclient: binary_data=True)")
    assert _metric(guarded, 'cmp_serve_stage_seconds_count{stage="model"}') == runs  # no model ran
    assert request(3, binary=True).status_code == 200
    assert request(2, binary=False).status_code == 200


@pytest.mark.parametrize("shape, parameters, status, message", [
    ([10 ** 30], {}, 400, "input 'samples': dimension 1000000000000000000000000000000 in shape is larger than "
                          "2147483647"),
    ([0, 2 ** 40], {}, 400, "input 'samples': dimension 1099511627776 in shape is larger than 2147483647"),
    ([2 ** 31 - 1] * 3, {}, 413, "input 'samples': shape [2147483647, 2147483647, 2147483647] has "
                                 "9903520300447984150353281023 values, the limit is 33554432"),
    ([1] * 65, {}, 400, "input 'samples': shape has 65 dimensions, at most 8 are accepted"),
    ([1, 8000], {"sample_rate": int("9" * 400)}, 400,
     "parameter 'sample_rate' must be a finite number, got " + "9" * 60 + "... (400 characters)"),
    ([1, 8000], {"sample_rate": "16000"}, 400, "parameter 'sample_rate' must be a number, got '16000'"),
])
def test_client_mistakes_are_4xx_naming_the_reason(models_dir, guarded, shape, parameters, status, message):
    data = [0] * 8000 if shape == [1, 8000] else [0]
    doc = {"inputs": [{"name": "samples", "datatype": "INT16", "shape": shape, "data": data}], "parameters": parameters}
    r = httpx.post(f"{guarded.url}/v2/models/cmp_supervised/infer", content=json.dumps(doc), timeout=30)
    assert (r.status_code, error_of(r)) == (status, message)


def test_a_client_that_hangs_up_mid_body_is_499_without_a_traceback(guarded):
    before = _metric(guarded, 'cmp_serve_requests_total{code="499",endpoint="/predict"}')
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nRIFF....")
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
    deadline = time.monotonic() + 10
    while _metric(guarded, 'cmp_serve_requests_total{code="499",endpoint="/predict"}') != before + 1:
        assert time.monotonic() < deadline, "the hang-up was not counted as 499"
        time.sleep(0.05)
    assert _metric(guarded, 'cmp_serve_requests_total{code="500",endpoint="/predict"}') == 0.0
    assert "Traceback" not in guarded.output()


def test_log_lines_escape_what_clients_send(guarded):
    r = httpx.get(f"{guarded.url}/v2/models/x%0d%0aFORGED%20200%20OK%1b[31m/ready", timeout=10)
    assert r.status_code == 404
    time.sleep(0.3)
    log = guarded.output()
    assert not any(line.startswith("FORGED") for line in log.splitlines())
    assert re.search(r'"GET /v2/models/x\\r\\nFORGED 200 OK\\x1b\[31m/ready" 404', log), log[-2000:]


def test_absurd_header_lengths_are_quoted_short():
    from runtime.serve.protocol import ProtocolError, parse_infer_request

    for value, message in [("9" * 5000, f"Inference-Header-Content-Length is not an integer: '{'9' * 59}... (5002 "
                                        "characters)"),
                           ("9" * 100, f"Inference-Header-Content-Length {'9' * 60}... (100 characters) does not fit "
                                       "the 2-byte body")]:
        with pytest.raises(ProtocolError) as caught:
            parse_infer_request(b"{}", value, 10)
        assert (caught.value.status, caught.value.message) == (400, message)


def test_log_lines_escape_unicode_line_separators():
    from runtime.serve.app import printable

    assert printable("a\u2028b\u2029c\x85d") == "a\\u2028b\\u2029c\\x85d"


def test_the_second_binary_input_is_read_at_its_own_offset():
    from runtime.serve.protocol import HEADER_LENGTH, parse_infer_request

    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    b = np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4)
    head = json.dumps({"inputs": [
        {"name": "a", "datatype": "INT16", "shape": [2, 3], "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": b.nbytes}}]}).encode()
    req = parse_infer_request(head + a.tobytes() + b.tobytes(), str(len(head)), 100)
    assert np.array_equal(req.inputs["a"], a) and np.array_equal(req.inputs["b"], b)
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


def test_many_concurrent_valid_requests_all_succeed_while_slow_clients_wait(guarded):
    """No lock-out under load: 12 valid requests from 4 threads, next to 20 body stallers."""
    stallers = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", guarded.port))
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nRIFF")
        stallers.append(sock)
    codes: list[int] = []
    body = wav_bytes(speech(1.5))

    def client():
        for _ in range(3):
            codes.append(httpx.post(f"{guarded.url}/predict", content=body, timeout=30).status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for sock in stallers:
            sock.close()
    assert codes == [200] * 12  # 4 at once: within the 4 admission slots, whatever the stallers do


def test_json_made_of_containers_is_413_before_parsing(guarded):
    """``[[],[],...]``: json.loads would spend ~60 bytes per 3 bytes of body (900 MB for 32 MiB),
    and gzip makes such a body 1000 times smaller on the wire."""
    import gzip

    from runtime.serve.protocol import MAX_JSON_CONTAINERS, ProtocolError, parse_infer_request

    body = b"[" + b"[]," * MAX_JSON_CONTAINERS + b"[]]"
    with pytest.raises(ProtocolError) as caught:
        parse_infer_request(body, None, 100)
    found = MAX_JSON_CONTAINERS + 2  # the outer list, the M inner ones and the last
    message = (f"the request's JSON holds {found} lists, objects and strings, the limit is {MAX_JSON_CONTAINERS}: "
               "send tensor data as flat 'data' lists or as binary data")
    assert (caught.value.status, caught.value.message) == (413, message)
    packed = gzip.compress(body, 9)
    assert len(packed) < 20_000
    r = httpx.post(f"{guarded.url}/v2/models/cmp_supervised/infer", content=packed,
                   headers={"Content-Encoding": "gzip"}, timeout=30)
    assert (r.status_code, error_of(r)) == (413, message)
    # nested data, one list per row, stays well inside the limit
    rows = [[0] * 100 for _ in range(80)]
    doc = {"inputs": [{"name": "samples", "datatype": "INT16", "shape": [80, 100], "data": rows}]}
    assert parse_infer_request(json.dumps(doc).encode(), None, 10_000).inputs["samples"].shape == (80, 100)


def _peak_rss_mb(pid: int) -> dict[int, float]:
    """VmHWM (the peak resident set since start) of a process and its children, in MB."""
    psutil = pytest.importorskip("psutil")
    peaks = {}
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            with open(f"/proc/{p.pid}/status") as fh:
                peaks[p.pid] = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return peaks


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_hidden_length_flac_bombs_are_413_in_bounded_memory(guarded, tmp_path):
    """Two FLACs of 32 Mi silent frames (35 minutes, 64 MiB as 16-bit PCM, ~100 KB each) whose
    header hides the length, sent at once at the default limits (32 MiB body, 60 s): each is
    stopped while decoding at 60 s, and no server process (workers included) grows by 500 MB."""
    from benchmarks.hostile import silent_flac_hiding_its_length

    bomb = silent_flac_hiding_its_length(32 << 20)
    assert len(bomb) < 300_000
    before = _peak_rss_mb(guarded.proc.pid)
    assert len(before) >= 3  # the server and its two CPU workers
    answers: list = []

    def send():
        answers.append(httpx.post(f"{guarded.url}/predict", content=bomb, timeout=60))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [(r.status_code, error_of(r)) for r in answers] == [(413, (
        "audio is too long: the request's audio decodes to more than the limit of 60 s (decoding stopped after "
        "960001 frames at 16000 Hz; its header declares no length; raise the server's --max-audio-s to accept "
        "it)"))] * 2
    after = _peak_rss_mb(guarded.proc.pid)
    growth = {pid: after[pid] - before[pid] for pid in before if pid in after}
    print("peak RSS growth (MB):", growth)
    assert growth and max(growth.values()) < 500, growth
    assert httpx.post(f"{guarded.url}/predict", content=wav_bytes(speech(2.0)), timeout=30).status_code == 200
