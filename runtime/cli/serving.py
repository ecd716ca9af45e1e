"""``cmp-face serve`` and ``cmp-face triton-repo``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli.args import BOTH, add_execution, add_models, add_precision, add_workers, check_execution
from runtime.models_folder import PIPELINES
from runtime.plugins import Command
from runtime.runners.select import BACKENDS
from runtime.serve.pipeline import MAX_REQUEST_BATCH, Limits


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_serve(args: argparse.Namespace) -> int:
    from runtime.cache import resolve_models
    from runtime.serve.server import check_options, serve

    limits = Limits(max_body_bytes=args.max_body_bytes, max_audio_s=args.max_audio_s, max_queue=args.max_queue,
                    timeout_s=args.timeout_s, header_timeout_s=args.header_timeout_s,
                    body_timeout_s=args.body_timeout_s, max_json_bytes=args.max_json_bytes,
                    max_receiving_bytes=args.max_receiving_bytes)
    check_execution(args)
    check_options(args.port, args.max_batch, args.max_delay_ms, limits, args.workers, args.threads)
    models = resolve_models(args.models, args.release, args.pipeline, args.epoch, _progress)
    return serve(models, args.pipeline, args.backend, args.host, args.port, args.max_batch,
                 args.max_delay_ms, precision=args.precision, device=args.device, threads=args.threads,
                 frontend=args.frontend, limits=limits, workers=args.workers,
                 drain_timeout_s=args.drain_timeout_s, log_level=args.log_level)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    d = Limits()
    add_models(p, models_help="models folder written by 'cmp-face export' (default: the cached synthetic models, "
                              "UNTRAINED, or --release DIR)")
    add_execution(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: no "
                                                       "authentication, put a proxy in front for anything else)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    p.add_argument("--max-batch", type=int, help=f"utterances per model batch (1..{MAX_REQUEST_BATCH}; default 8 on a "
                                                  "GPU, 1 on the CPU, where batching does not pay)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a batch waits to fill up")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests admitted at once; more are answered 503 with Retry-After")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="largest request body")
    p.add_argument("--max-audio-s", type=float, default=d.max_audio_s, help="longest audio (seconds)")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help="per-request deadline from admission to answer (504 after)")
    p.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s,
                   help="a connection's request line and headers must arrive within this (else it is closed)")
    p.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="a request's body must arrive within this (408 after); slow senders never hold the "
                        "model work's admission slots")
    p.add_argument("--max-json-bytes", type=int, default=d.max_json_bytes,
                   help="largest JSON answer; larger ones are refused (400) before any model work: ask for binary "
                        "outputs")
    p.add_argument("--max-receiving-bytes", type=int,
                   help="body bytes being received by all requests together (503 beyond, after giving up bodies "
                        "arriving at under 1 MiB/s; default 4 bodies)")
    add_workers(p, "processes for audio decoding, VAD and log-mel (default: one per core)", "--cpu-workers")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, how long requests in flight may take to finish")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="what the server logs (default info: one access-log line per request)")


def run_triton_repo(args: argparse.Namespace) -> int:
    from runtime.atomic import check_writable
    from runtime.serve.triton_repo import write_repository

    check_execution(args)
    check_writable(args.output)
    pipelines = None if not args.pipeline or BOTH in args.pipeline else list(dict.fromkeys(args.pipeline))
    folders = write_repository(args.models, args.output, pipelines, args.backend, args.precision,
                               args.instances, args.device, args.max_batch, args.max_queue_delay_us,
                               fused=args.fused, ort_tensorrt=args.ort_tensorrt, engine_target=args.engine_target,
                               link=args.link)
    print(f"wrote {args.output}: {len(folders)} models ({', '.join(p.name for p in folders)}), "
          "each config.pbtxt validated against tritonclient's ModelConfig and its ONNX file")
    return 0


def add_triton_repo_arguments(p: argparse.ArgumentParser) -> None:
    add_models(p, release=False, required=True, pipelines="none")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="REPO")
    p.add_argument("--pipeline", action="append", choices=(*PIPELINES, BOTH),
                   help="pipeline(s) to include (repeatable; default, or both: every pipeline of the folder)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="onnxruntime (default): the ONNX files on Triton's onnxruntime backend; onnxruntime-trt: "
                        "the same with ONNX Runtime's TensorRT accelerator (GPU); tensorrt: the folder's TensorRT "
                        "engines as plans; auto: tensorrt when the folder has engines for --precision and the "
                        "device is a GPU, else onnxruntime")
    add_precision(p, default="fp32", help="which models of the folder are served (default fp32)")
    p.add_argument("--device", default="cpu", help="instance kind: cpu (default), gpu / cuda, cuda:N (that GPU) "
                                                   "or auto (Triton's KIND_AUTO); plans need a GPU")
    p.add_argument("--instances", type=int, default=1, help="instances per model")
    p.add_argument("--max-batch", type=int, default=32, help=f"max_batch_size of every model (1..{MAX_REQUEST_BATCH})")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay")
    p.add_argument("--fused", action="store_true", help="one voice2mesh model per pipeline instead of three steps")
    p.add_argument("--ort-tensorrt", action="store_true", help="the same as --backend onnxruntime-trt")
    p.add_argument("--engine-target", help="with several engines per graph: the GPU target to use (e.g. sm90)")
    p.add_argument("--link", action="store_true",
                   help="hard-link the model files from the models folder instead of copying them (same file "
                        "system; an edit of one then changes the other)")


SERVE = Command(
    "serve", "serve a pipeline over HTTP (Open Inference Protocol / KServe v2)", add_serve_arguments, run_serve,
    extra="serve",
    description="Serve models cmp_<pipeline> (samples) and cmp_<pipeline>_fbank (fbank) with the Open Inference "
                "Protocol REST API that Triton and KServe speak, plus POST /predict (an audio file -> JSON, or "
                "?format=obj|ply|png|npz) and GET /metrics (Prometheus). Binds 127.0.0.1 without authentication: "
                "put a proxy in front for anything else. SIGTERM/SIGINT finish the requests in flight and exit 0.")
TRITON_REPO = Command(
    "triton-repo", "write a Triton Inference Server model repository", add_triton_repo_arguments, run_triton_repo,
    extra="triton",
    description="One Triton model per graph (frontend, encoder, decoder_<pipeline>; or the fused "
                "voice2mesh_<pipeline> with --fused) and one ensemble per pipeline named cmp_<pipeline>, the model "
                "name 'cmp-face serve' uses: the same client works against both. VAD stays on the client side. "
                "Every config.pbtxt is validated offline before the folder appears.")
COMMANDS = (SERVE, TRITON_REPO)
