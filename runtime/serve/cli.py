"""Argument parsers of ``cmp-face serve`` and ``cmp-face triton-repo`` (hooked into runtime/cli.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.serve.pipeline import MAX_REQUEST_BATCH, Limits


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.serve.server import serve

    limits = Limits(max_body_bytes=args.max_body_bytes, max_audio_s=args.max_audio_s,
                    max_queue=args.max_queue, timeout_s=args.timeout_s)
    return serve(args.models, args.pipeline, args.backend, args.host, args.port, args.max_batch,
                 args.max_delay_ms, precision=args.precision, device=args.device, threads=args.threads,
                 frontend=args.frontend, limits=limits, cpu_workers=args.cpu_workers,
                 drain_timeout_s=args.drain_timeout_s, log_level=args.log_level)


def add_serve_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``cmp-face serve``: the Open Inference Protocol server (see runtime.serve)."""
    d = Limits()
    p = sub.add_parser(
        "serve", parents=[common], help="serve a pipeline over HTTP (Open Inference Protocol / KServe v2)",
        description="Serve models cmp_<pipeline> (samples) and cmp_<pipeline>_fbank (fbank) with the "
                    "Open Inference Protocol REST API that Triton and KServe speak, plus POST /predict "
                    "(an audio file -> JSON, or ?format=obj|ply|png|npz) and GET /metrics (Prometheus). "
                    "Binds 127.0.0.1 without authentication: put a proxy in front for anything else. "
                    "SIGTERM/SIGINT finish the requests in flight and exit 0.")
    p.add_argument("--models", type=Path, required=True, metavar="DIR", help="models folder ('cmp-face export')")
    p.add_argument("--pipeline", choices=("supervised", "unsupervised"), default="supervised")
    p.add_argument("--backend", default=None, help="Predictor backend (default: the Predictor's)")
    p.add_argument("--precision", default=None, help="Predictor precision (default: the Predictor's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--frontend", choices=("numpy", "onnx"), default="numpy",
                   help="log-mel in numpy on the CPU pool (default), or samples through the fused graph")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    p.add_argument("--max-batch", type=int, default=8, help=f"utterances per model batch (1..{MAX_REQUEST_BATCH})")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a batch waits to fill up")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests admitted at once; more are answered 503 with Retry-After")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="largest request body")
    p.add_argument("--max-audio-s", type=float, default=d.max_audio_s, help="longest audio (seconds)")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help="per-request deadline (504 after)")
    p.add_argument("--cpu-workers", type=int, help="threads for audio decoding, VAD, log-mel, encoding "
                                                    "(default: min(4, CPUs))")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, how long requests in flight may take to finish")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(func=cmd_serve)
    return p
