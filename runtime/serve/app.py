"""The ASGI application: Open Inference Protocol (KServe v2) REST, ``POST /predict``, metrics.

Every request that runs a model is admitted first (at most ``Limits.max_queue`` at once: the
next one is answered 503 with ``Retry-After`` at once, so memory stays bounded), then reads its
body (at most ``Limits.max_body_bytes``), runs its CPU stages on a bounded thread pool, waits
for a batch (:mod:`runtime.serve.batcher`) and encodes its answer on the pool again, so the
event loop never computes. A request past its deadline is answered 504; its work still
finishes (a thread cannot be interrupted) and holds its admission slot until then.
Errors use the protocol's shape, ``{"error": "<one line>"}``; our own errors (bad audio, no
speech) carry the same message the CLI prints after ``cmp-face: error:``.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.errors import CmpError, InputError
from runtime.serve.batcher import Batcher, DeadlineExceeded
from runtime.serve.metrics import Metrics
from runtime.serve.pipeline import ServedPipeline
from runtime.serve.protocol import (HEADER_LENGTH, ProtocolError, decompress, encode_infer_response,
                                    parse_infer_request)
from runtime.stages import Stages

log = logging.getLogger("cmp_face.serve")
FORMATS = {"json": "application/json", "obj": "text/plain", "ply": "application/octet-stream",
           "png": "image/png", "npz": "application/octet-stream"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message.replace("\n", " ")}, status, headers)


def _endpoint(path: str) -> str:
    """A bounded label for metrics: the route, not the URL (model names are user input)."""
    if path.startswith("/v2/models/"):
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return f"/v2/models/{{name}}/{tail}" if tail in ("infer", "ready") else "/v2/models/{name}"
    return path if path in ("/v2", "/v2/health/live", "/v2/health/ready", "/predict", "/metrics") else "other"


class _Guard:
    """Pure ASGI middleware: body size limit, one access-log line and the metrics per request."""

    def __init__(self, app, state: "ServerState") -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status, sent = [500], [0]

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        limit = self.state.limits.max_body_bytes
        received = [0]

        async def receive_limited():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise ProtocolError(413, f"request body is larger than this server's limit of {limit} bytes")
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await error_response(413, f"request body of {int(declared)} bytes is larger than this "
                                          f"server's limit of {limit} bytes")(scope, receive, send_counted)
            else:
                await self.app(scope, receive_limited, send_counted)
        except Exception as exc:  # a bug: answered 500 with the protocol's shape; the server lives on
            log.error("internal error on %s %s:\n%s", scope["method"], scope["path"],
                      "".join(traceback.format_exception(exc)))
            if sent[0] == 0 and status[0] == 500:
                await error_response(500, f"internal error: {type(exc).__name__}: {exc}")(scope, receive, send_counted)
        finally:
            seconds = time.perf_counter() - started
            endpoint = _endpoint(scope["path"])
            m = self.state.metrics
            m.requests.labels(endpoint, str(status[0])).inc()
            if status[0] >= 400:
                m.errors.labels(endpoint, str(status[0])).inc()
            m.latency.labels(endpoint).observe(seconds)
            client = scope.get("client") or ("-", 0)
            log.info('%s "%s %s" %d %dB %.1fms', client[0], scope["method"], scope["path"], status[0],
                     sent[0], seconds * 1e3)


class ServerState:
    """What the handlers share: the served pipeline, the batcher, the CPU pool, the limits."""

    def __init__(self, served: ServedPipeline, max_batch: int, max_delay_ms: float, cpu_workers: int) -> None:
        self.served = served
        self.limits = served.limits
        self.metrics = Metrics()
        self.max_batch = max_batch
        self.max_delay_ms = max_delay_ms
        self.cpu_workers = cpu_workers
        self.batcher: Batcher | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.inflight = 0
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.cpu_workers, thread_name_prefix="cmp-cpu")
        self.batcher = Batcher(self._run_batch, self.max_batch, self.max_delay_ms / 1e3, self._on_batch)
        self.batcher.start()
        await asyncio.get_running_loop().run_in_executor(self.pool, self.served.warm_up)
        self.ready = True

    async def stop(self) -> None:
        """After the HTTP server has drained: finish admitted work (a request answered 504 may
        still be computing), bounded by one request deadline, then release the threads."""
        self.ready = False
        until = time.monotonic() + self.limits.timeout_s
        while self.inflight and time.monotonic() < until:
            await asyncio.sleep(0.01)
        if self.inflight:
            log.warning("stopping with %d requests still computing", self.inflight)
        if self.batcher:
            await self.batcher.stop(max(0.0, until - time.monotonic()))
        if self.pool:
            self.pool.shutdown(wait=not self.inflight, cancel_futures=True)

    # ------------------------------------------------------------------ helpers
    def _run_batch(self, items: list) -> list:
        return self.served.run(items)

    def _on_batch(self, size: int, waits: list[float]) -> None:
        self.metrics.batch_size.observe(size)
        for w in waits:
            self.metrics.stage.labels("queue").observe(w)

    async def cpu(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _release(self, task: asyncio.Task) -> None:
        self.inflight -= 1
        self.metrics.inflight.set(self.inflight)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure after a 504 is not "never retrieved"

    async def admitted(self, work: Callable[[float], Any]) -> Any:
        """Run ``work(deadline)`` if there is room, within the request's deadline."""
        if not self.ready:
            raise ProtocolError(503, "server is not ready (starting or shutting down)", {"Retry-After": "1"})
        if self.inflight >= self.limits.max_queue:
            raise ProtocolError(503, f"server busy: {self.inflight} requests in flight, the limit is "
                                     f"{self.limits.max_queue}; retry later", {"Retry-After": "1"})
        timeout = self.limits.timeout_s
        loop = asyncio.get_running_loop()
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        task = asyncio.ensure_future(work(loop.time() + timeout))
        task.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.TimeoutError, DeadlineExceeded):
            raise ProtocolError(504, f"request deadline of {timeout:g} s exceeded") from None

    async def batch(self, items: list, deadline: float, stages: Stages) -> list:
        self.metrics.queue_depth.set(self.batcher.depth + 1)
        done = await self.batcher.submit(items, deadline)
        self.metrics.queue_depth.set(self.batcher.depth)
        stages["queue"] = done.wait_s * 1e3
        stages["model"] = done.run_s * 1e3
        stages.restart()
        self.metrics.stage.labels("model").observe(done.run_s)
        return done.results


# ---------------------------------------------------------------------------------- parameters


def _number_param(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"parameter '{name}' must be a number, got {value!r}")
    return float(value)


def _infer_options(params: dict, audio: bool) -> tuple[float | None, bool]:
    """The request parameters ``sample_rate`` and ``vad`` (others, e.g. the client's
    ``binary_data_output``, are the protocol's or ignored, as Triton ignores unknown ones)."""
    from runtime.audio import MAX_RATE, MIN_RATE

    sample_rate, vad = params.get("sample_rate"), params.get("vad", False)
    if not audio and (sample_rate is not None or "vad" in params):
        raise InputError("parameters 'sample_rate' and 'vad' apply to audio ('samples') models only")
    if sample_rate is not None:
        sample_rate = _number_param(sample_rate, "sample_rate")
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise InputError(f"absurd sample rate: {sample_rate:g} Hz (supported: {MIN_RATE} to {MAX_RATE} Hz)")
    if not isinstance(vad, bool):
        raise InputError(f"parameter 'vad' must be true or false, got {vad!r}")
    return sample_rate, vad


def _query_flag(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise InputError(f"query parameter '{name}' must be true or false, got {value!r}")


# ---------------------------------------------------------------------------------- the app


def create_app(served: ServedPipeline, max_batch: int = 8, max_delay_ms: float = 2.0,
               cpu_workers: int = 2) -> Starlette:
    """The server's ASGI application around an opened :class:`ServedPipeline`."""
    state = ServerState(served, max_batch, max_delay_ms, cpu_workers)

    def model_of(request: Request) -> str:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in served.model_names:
            raise ProtocolError(404, f"Request for unknown model: '{name}' is not found "
                                     f"(this server has {', '.join(served.model_names)})")
        if version not in (None, "", "1"):
            raise ProtocolError(404, f"Request for unknown model: '{name}' version {version} is not found "
                                     "(this server has version 1)")
        return name

    async def server_metadata(request: Request) -> Response:
        from runtime import __version__

        return JSONResponse({"name": "cmp-face", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": state.ready}, 200 if state.ready else 503)

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(served.metadata(model_of(request)))

    async def model_ready(request: Request) -> Response:
        model_of(request)
        return JSONResponse({"name": request.path_params["name"], "ready": state.ready},
                            200 if state.ready else 503)

    async def infer(request: Request) -> Response:
        name = model_of(request)
        header_length = request.headers.get(HEADER_LENGTH)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise ProtocolError(415, f"Content-Encoding {encoding!r} is not supported: send the request "
                                     "uncompressed, gzip or deflate")

        async def work(deadline: float) -> Response:
            stages = Stages()
            body = await _within(request.body(), deadline)
            stages.lap("receive")
            if encoding != "identity":  # tritonclient's request_compression_algorithm
                body = await state.cpu(decompress, body, encoding, state.limits.max_body_bytes)
            req = await state.cpu(parse_infer_request, body, header_length, state.limits.max_body_bytes)
            audio = name == served.name
            wanted_input = "samples" if audio else "fbank"
            if set(req.inputs) != {wanted_input}:
                raise InputError(f"model '{name}' takes one input named '{wanted_input}', got "
                                 f"{', '.join(repr(k) for k in req.inputs)}")
            for out in req.outputs or []:
                if out not in served.output_names:
                    raise InputError(f"unexpected inference output '{out}' for model '{name}' "
                                     f"(it has {', '.join(served.output_names)})")
            sample_rate, vad = _infer_options(req.parameters, audio)
            stages.lap("parse")
            if audio:
                items = await state.cpu(served.prepare_samples, req.inputs["samples"], sample_rate, vad, stages)
            else:
                items = await state.cpu(served.prepare_fbank, req.inputs["fbank"], stages)
            rows = await state.batch(items, deadline, stages)
            outputs = served.stack(rows, req.outputs or served.output_names)
            body, headers = await state.cpu(encode_infer_response, name, req, outputs)
            stages.lap("encode")
            state.metrics.observe_stages({k: v for k, v in stages.items() if k not in ("queue", "model")})
            return Response(body, 200, headers)

        return await state.admitted(work)

    async def predict(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        vad = _query_flag(request.query_params.get("vad"), "vad", True)

        async def work(deadline: float) -> Response:
            stages = Stages()
            data = await _within(_audio_body(request), deadline)
            stages.lap("receive")
            items, notes = await state.cpu(served.prepare_audio_file, data, vad, stages)
            rows = await state.batch(items, deadline, stages)
            result = served.prediction(rows[0])
            body = await state.cpu(_encode_prediction, result, fmt, stages, notes)
            state.metrics.observe_stages({k: v for k, v in stages.items() if k not in ("queue", "model")})
            return Response(body, 200, media_type=FORMATS[fmt])

        return await state.admitted(work)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        state.metrics.queue_depth.set(state.batcher.depth if state.batcher else 0)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def on_protocol_error(request: Request, exc: ProtocolError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    async def on_our_error(request: Request, exc: CmpError) -> Response:
        # Input problems are the client's (400); a model problem is ours (500).
        return error_response(400 if isinstance(exc, InputError) else 500, str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
              Route("/metrics", metrics), Route("/predict", predict, methods=["POST"])]
    for base in (model, versioned):
        routes += [Route(base, model_metadata), Route(base + "/ready", model_ready),
                   Route(base + "/infer", infer, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ProtocolError: on_protocol_error, CmpError: on_our_error,
                                        404: _not_found, 405: _not_allowed})
    app.state.server = state
    app.add_middleware(_Guard, state=state)
    return app


async def _not_found(request: Request, exc) -> Response:
    return error_response(404, f"no such endpoint: {request.method} {request.url.path}")


async def _not_allowed(request: Request, exc) -> Response:
    return error_response(405, f"method {request.method} is not allowed on {request.url.path}")


async def _within(awaitable, deadline: float):
    """Receive the body by the request's deadline: a client that sends slowly must not hold its
    admission slot after its 504 (computations, unlike reading, cannot be interrupted)."""
    return await asyncio.wait_for(awaitable, max(0.0, deadline - asyncio.get_running_loop().time()))


async def _audio_body(request: Request) -> bytes:
    """The audio file of a ``/predict`` request: the raw body, or the first file of a form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=1, max_fields=16)
        except ProtocolError:
            raise
        except Exception as exc:  # the multipart parser's own errors
            raise InputError(f"the multipart form cannot be read: {exc}") from None
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise InputError("the multipart form holds no file: send the audio as a file field")
        data = await files[0].read()
        await form.close()
    else:
        data = await request.body()
    if not data:
        raise InputError("the request holds no audio: send an audio file as the body or as a form file")
    return data


def _encode_prediction(result, fmt: str, stages: Stages, notes: list[str]) -> bytes:
    """One prediction as JSON, a mesh file, a rendering or an npz (CPU pool)."""
    if fmt == "json":
        stages.lap("encode")
        timings = {k: round(v, 3) for k, v in stages.items()}
        timings["total"] = round(sum(stages.values()), 3)
        doc = {"pipeline": result.pipeline, "untrained": result.untrained,
               "params": result.params.tolist(), "embedding": result.embedding.tolist(),
               "n_vertices": int(result.vertices.shape[0]), "timings_ms": timings, "warnings": notes}
        return json.dumps(doc).encode()
    if fmt == "png":
        import cv2

        ok, data = cv2.imencode(".png", result.render())
        stages.lap("render")
        return data.tobytes()
    if fmt == "npz":
        buf = io.BytesIO()
        np.savez(buf, **result.arrays())
        return buf.getvalue()
    with tempfile.TemporaryDirectory(prefix="cmp-serve-") as tmp:  # the mesh writers write files
        path = Path(tmp) / f"mesh.{fmt}"
        (result.write_obj if fmt == "obj" else result.write_ply)(path)
        return path.read_bytes()
