"""The ASGI application: Open Inference Protocol (KServe v2) REST, ``POST /predict``, metrics.

A request that runs a model goes:

1. **receive** (event loop): its body, by ``Limits.body_timeout_s`` (408 after), at most
   ``max_body_bytes``, counted against ``receiving_budget`` for all bodies in flight (503 beyond):
   a slow sender holds a connection and a few bytes, never a slot of the model work;
2. **admit**: at most ``max_queue`` requests with a complete body at once (503 with
   ``Retry-After`` beyond), each with a deadline of ``timeout_s`` (504);
3. **CPU stage** in a worker process (:mod:`runtime.serve.workers`: decompress, parse, decode
   audio, VAD, log-mel), **model stage** in a batch (:mod:`runtime.serve.batcher`), **answer**
   (stack, encode, render) on a thread: the event loop never computes.

Errors use the protocol's shape, ``{"error": "<one line>"}``; our own errors (bad audio, no
speech) carry the same message the CLI prints after ``cmp-face: error:``. Client mistakes are
4xx; a client that hangs up is counted as 499; every log line escapes what a client sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.errors import CmpError, InputError, LimitError
from runtime.serve.batcher import Batcher, DeadlineExceeded
from runtime.serve.metrics import Metrics
from runtime.serve.pipeline import Parsed, ServedPipeline
from runtime.serve.protocol import HEADER_LENGTH, ProtocolError, encode_infer_response
from runtime.serve.workers import CpuWorkers
from runtime.stages import Stages
from runtime.version import __version__

log = logging.getLogger("cmp_face.serve")
FORMATS = {"json": "application/json", "obj": "text/plain", "ply": "application/octet-stream",
           "png": "image/png", "npz": "application/octet-stream"}
CLIENT_CLOSED = 499  # nginx's code for a client that closed the connection before the answer
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")  # and the Unicode line separators


def printable(text: object) -> str:
    """A client-supplied value for a log line: control characters (and backslashes) escaped, so no
    request can forge or break a line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii")
                        if m.group() != "\\" else "\\\\", str(text))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message.replace("\n", " ")}, status, headers)


def _endpoint(path: str) -> str:
    """A bounded label for metrics: the route, not the URL (model names are user input)."""
    if path.startswith("/v2/models/"):
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return f"/v2/models/{{name}}/{tail}" if tail in ("infer", "ready") else "/v2/models/{name}"
    return path if path in ("/v2", "/v2/health/live", "/v2/health/ready", "/predict", "/metrics") else "other"


class _Guard:
    """Pure ASGI middleware: body size limit and budget, one access-log line and the metrics per
    request; a bug answers 500 and the server lives on."""

    def __init__(self, app, state: "ServerState") -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status, sent, received = [CLIENT_CLOSED], [0], [0]
        state = self.state
        limit = state.limits.max_body_bytes

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        body = _Body(state)

        async def receive_limited():
            message = await body.next(receive)
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received[0] += chunk
                body.add(chunk, complete=not message.get("more_body", False))
                if received[0] > limit:
                    raise ProtocolError(413, f"request body is larger than this server's limit of {limit} bytes")
                if state.receiving > state.limits.receiving_budget:
                    state.evict_slow_bodies(keep=body)
                if state.receiving > state.limits.receiving_budget:
                    raise ProtocolError(503, "server busy receiving other requests; retry later", {"Retry-After": "1"})
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await error_response(413, f"request body of {int(declared)} bytes is larger than this "
                                          f"server's limit of {limit} bytes")(scope, receive, send_counted)
            else:
                await self.app(scope, receive_limited, send_counted)
        except ClientDisconnect:
            pass  # nothing to answer: counted as 499
        except Exception as exc:  # a bug: answered 500 with the protocol's shape
            log.error("internal error on %s %s:\n%s", printable(scope["method"]), printable(scope["path"]),
                      "".join(traceback.format_exception(exc)))
            if sent[0] == 0 and status[0] == CLIENT_CLOSED:
                await error_response(500, f"internal error: {type(exc).__name__}: {exc}")(scope, receive, send_counted)
        finally:
            body.release()
            seconds = time.perf_counter() - started
            endpoint = _endpoint(scope["path"])
            m = state.metrics
            m.requests.labels(endpoint, str(status[0])).inc()
            if status[0] >= 400:
                m.errors.labels(endpoint, str(status[0])).inc()
            m.latency.labels(endpoint).observe(seconds)
            client = scope.get("client") or ("-", 0)
            log.info('%s "%s %s" %d %dB %.1fms', printable(client[0]), printable(scope["method"]),
                     printable(scope["path"]), status[0], sent[0], seconds * 1e3)


#: A body being received may be given up for another request's when the receiving budget is
#: full and it has lately arrived at under MIN_BODY_RATE (a leaky bucket: it drains at that rate
#: and holds at most one second of it), so that holding the budget costs a slow sender bandwidth
#: (Apache's mod_reqtimeout has the same idea: MinRate).
MIN_BODY_RATE = 1 << 20  # bytes per second
_BUCKET = float(MIN_BODY_RATE)  # one second's worth: also the grace of a new body


class _Body:
    """One request body being received: its bytes counted in ``state.receiving`` until released,
    and the eviction of a slow one (its next receive raises 408)."""

    def __init__(self, state: "ServerState") -> None:
        self.state = state
        self.held = 0
        self.level = _BUCKET
        self.last: float | None = None
        self.evicted = asyncio.Event()

    def add(self, n: int, complete: bool) -> None:
        now = time.monotonic()
        if self.last is None:
            self.last = now
            self.state.receivers.add(self)
        self.level = min(_BUCKET, self.level - MIN_BODY_RATE * (now - self.last) + n)
        self.last = now
        self.held += n
        self.state.receiving += n
        if complete:  # what a finished body holds is the request's memory: never given up
            self.state.receivers.discard(self)

    def release(self) -> None:
        self.state.receiving -= self.held
        self.held = 0
        self.state.receivers.discard(self)

    def slowness(self, now: float) -> float:
        """> 0 when the body has lately arrived at under MIN_BODY_RATE (the bytes it is behind)."""
        return MIN_BODY_RATE * (now - self.last) - self.level if self.last is not None else 0.0

    async def next(self, receive) -> dict:
        if self.evicted.is_set():
            raise self._stalled()
        if self not in self.state.receivers:  # nothing held yet, or the body is complete: never given up
            return await receive()
        message = asyncio.ensure_future(receive())
        evicted = asyncio.ensure_future(self.evicted.wait())
        try:
            await asyncio.wait((message, evicted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            evicted.cancel()
            if not message.done():
                message.cancel()
        if message.cancelled() or not message.done():
            raise self._stalled()
        return message.result()

    def _stalled(self) -> ProtocolError:
        return ProtocolError(408, f"the request body arrived at under {MIN_BODY_RATE // 1024} KiB/s while other "
                                  "requests waited for the server's receiving budget; send it faster or retry")


class ServerState:
    """What the handlers share: the served pipeline, the batcher, the CPU workers, the limits."""

    def __init__(self, served: ServedPipeline, max_batch: int, max_delay_ms: float, workers: CpuWorkers,
                 answer_threads: int = 2) -> None:
        self.served = served
        self.limits = served.limits
        self.metrics = Metrics()
        self.max_batch = max_batch
        self.max_delay_ms = max_delay_ms
        self.workers = workers
        self.inputs = served.request_inputs()
        self.answer_threads = answer_threads
        self.batcher: Batcher | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.inflight = 0
        self.receiving = 0  # body bytes received by requests still running
        self.receivers: set[_Body] = set()  # the bodies holding part of it
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.answer_threads, thread_name_prefix="cmp-answer")
        self.batcher = Batcher(self.served.run, self.max_batch, self.max_delay_ms / 1e3, self._on_batch)
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
        self.workers.stop()

    def evict_slow_bodies(self, keep: _Body) -> None:
        """Give up the slowest bodies (lately under MIN_BODY_RATE) until the receiving budget holds."""
        now = time.monotonic()
        slow = sorted(((b.slowness(now), id(b), b) for b in self.receivers if b is not keep), reverse=True)
        for behind, _, body in slow:
            if self.receiving <= self.limits.receiving_budget or behind <= 0:
                break
            log.info("gave up a slow request body (%d bytes held) for another request", body.held)
            body.evicted.set()
            body.release()

    # ------------------------------------------------------------------ stages
    def _on_batch(self, size: int, waits: list[float]) -> None:
        self.metrics.batch_size.observe(size)
        for w in waits:
            self.metrics.stage.labels("queue").observe(w)

    async def answer(self, fn: Callable, *args) -> Any:
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

    async def model(self, parsed: Parsed, deadline: float) -> tuple[list, Stages]:
        """The batched model stage; the request's stage times so far, with queue and model added."""
        self.metrics.queue_depth.set(self.batcher.depth + 1)
        done = await self.batcher.submit(parsed.items, deadline)
        self.metrics.queue_depth.set(self.batcher.depth)
        self.metrics.stage.labels("model").observe(done.run_s)
        stages = Stages()
        stages.update(parsed.stages, queue=done.wait_s * 1e3, model=done.run_s * 1e3)
        return done.results, stages

    def observe(self, stages: dict[str, float]) -> None:
        self.metrics.observe_stages({k: v for k, v in stages.items() if k not in ("queue", "model")})


# ---------------------------------------------------------------------------------- the app


def _query_flag(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise InputError(f"query parameter '{name}' must be true or false, got {printable(value)!r}")


def create_app(served: ServedPipeline, workers: CpuWorkers, max_batch: int = 8, max_delay_ms: float = 2.0,
               answer_threads: int = 2) -> Starlette:
    """The server's ASGI application around an opened :class:`ServedPipeline` and its started
    CPU workers."""
    state = ServerState(served, max_batch, max_delay_ms, workers, answer_threads)
    limits = served.limits

    def model_of(request: Request) -> str:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in served.model_names:
            raise ProtocolError(404, f"Request for unknown model: '{printable(name)[:200]}' is not found "
                                     f"(this server has {', '.join(served.model_names)})")
        if version not in (None, "", "1"):
            raise ProtocolError(404, f"Request for unknown model: '{name}' version {printable(version)[:50]} is "
                                     "not found (this server has version 1)")
        return name

    async def body_of(request: Request, reader=None) -> bytes:
        """The whole body by the body deadline (408), before the request is admitted."""
        try:
            return await asyncio.wait_for(reader or request.body(), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(408, f"the request body did not arrive within this server's limit of "
                                     f"{limits.body_timeout_s:g} s") from None

    async def server_metadata(request: Request) -> Response:
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
            raise ProtocolError(415, f"Content-Encoding {printable(encoding)[:50]!r} is not supported: send the "
                                     "request uncompressed, gzip or deflate")
        received = time.perf_counter()
        body = await body_of(request)
        receive_ms = (time.perf_counter() - received) * 1e3

        async def work(deadline: float) -> Response:
            parsed: Parsed = await state.workers.run(state.inputs, "infer", name, body, header_length, encoding)
            rows, stages = await state.model(parsed, deadline)
            req = parsed.request

            def answer():
                outputs = served.stack(rows, req.outputs or served.output_names)
                out = encode_infer_response(name, req, outputs, parsed.notes)
                stages.lap("encode")
                return out

            data, headers = await state.answer(answer)
            state.observe(stages | {"receive": receive_ms})
            return Response(data, 200, headers)

        return await state.admitted(work)

    async def predict(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {printable(fmt)[:50]!r}")
        vad = _query_flag(request.query_params.get("vad"), "vad", True)
        received = time.perf_counter()
        data = await body_of(request, _audio_body(request))
        receive_ms = (time.perf_counter() - received) * 1e3

        async def work(deadline: float) -> Response:
            parsed: Parsed = await state.workers.run(state.inputs, "audio_file", data, vad)
            rows, stages = await state.model(parsed, deadline)
            result = served.prediction(rows[0])
            body = await state.answer(_encode_prediction, result, fmt, stages, parsed.notes, receive_ms)
            state.observe(stages | {"receive": receive_ms})
            return Response(body, 200, media_type=FORMATS[fmt])

        return await state.admitted(work)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        state.metrics.queue_depth.set(state.batcher.depth if state.batcher else 0)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def on_protocol_error(request: Request, exc: ProtocolError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    async def on_our_error(request: Request, exc: CmpError) -> Response:
        # Input problems are the client's (400, 413 past a limit); a model problem is ours (500).
        status = 413 if isinstance(exc, LimitError) else 400 if isinstance(exc, InputError) else 500
        return error_response(status, str(exc))

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
    return error_response(404, f"no such endpoint: {printable(request.method)} {printable(request.url.path)[:200]}")


async def _not_allowed(request: Request, exc) -> Response:
    return error_response(405, f"method {printable(request.method)} is not allowed on {request.url.path}")


async def _audio_body(request: Request) -> bytes:
    """The audio file of a ``/predict`` request: the raw body, or the first file of a form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=1, max_fields=16)
        except (ProtocolError, ClientDisconnect):
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


def _encode_prediction(result, fmt: str, stages: Stages, notes: list[str], receive_ms: float) -> bytes:
    """One prediction as JSON, a mesh file, a rendering or an npz (answer thread)."""
    if fmt == "json":
        stages.lap("encode")
        timings = {k: round(v, 3) for k, v in (stages | {"receive": receive_ms}).items()}
        timings["total"] = round(sum(timings.values()), 3)
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
