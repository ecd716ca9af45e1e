"""Load test of ``cmp-face serve``: latency against offered load, with and without batching.

    python benchmarks/serve_load.py --quick            # smoke test (about a minute)
    python benchmarks/serve_load.py                    # the full run (tens of minutes; a quiet machine)

For each server configuration (``--max-batch 8`` and ``--max-batch 1`` by default) the script
starts the real server on loopback (``python -m runtime.serve``) and drives it with
- an **open-loop** load: requests sent at fixed rates whatever the answers (as independent
  clients do), each rate for ``--seconds``; latency p50/p90/p99, errors, answered rate;
- a **closed-loop** load: a fixed number of clients, each sending its next request when the
  previous one is answered; throughput and latency;
- ``/predict`` with audio-file bodies (decode, VAD and log-mel, which do not batch), closed loop;
- the open loop again **under attack** (first configuration only, ``--no-attack`` skips it): beside
  the valid load, ``--stallers`` connections stalled in their headers or bodies and hostile
  requests at ``--hostile-share`` of the rate (benchmarks/hostile.py: FLAC bombs, garbage, absurd
  shapes, 1 GB declared bodies, resets mid-body). The verdict: at rates the server held without
  attack every valid request is answered 200; above, valid requests only ever get 503 with
  Retry-After.
Infer bodies are equal-length ``samples`` (INT16, binary tensor extension, binary outputs), cut
from real speech. "Held" means p99 under 100 ms, no error, and at least 95 % of the offered rate
answered. Batch sizes come from the server's own ``/metrics``. The load generator runs on the
same cores as the server: say so when quoting the numbers.

Writes ``serve_load.json``, ``serve_load.md`` and ``serve_load.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_process import ServerProcess  # noqa: E402

HELD_P99_MS = 100.0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models folder (default: the synthetic pack, built once)")
    ap.add_argument("--pipeline", default="supervised", choices=("supervised", "unsupervised"))
    ap.add_argument("--quick", action="store_true", help="smoke test: short steps, two rates, two concurrencies")
    ap.add_argument("--seconds", type=float, help="duration of each load step (default 10, 1.5 with --quick)")
    ap.add_argument("--rates", type=float, nargs="+", help="open-loop request rates per second")
    ap.add_argument("--concurrency", type=int, nargs="+", help="closed-loop client counts")
    ap.add_argument("--max-batch", type=int, nargs="+", default=[8, 1], help="server configurations to compare")
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--max-queue", type=int, help="the server's admission limit (default: the server's "
                                                   "own): beyond it requests are answered 503")
    ap.add_argument("--audio-seconds", type=float, default=6.0, help="length of each request's samples")
    ap.add_argument("--no-attack", dest="attack", action="store_false", help="skip the run under attack")
    ap.add_argument("--hostile-share", type=float, default=0.25,
                    help="hostile requests per valid request offered, under attack")
    ap.add_argument("--stallers", type=int, default=100, help="connections kept stalled, under attack")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<machine>/serve)")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (1.5 if args.quick else 10.0)
    args.rates = args.rates or ([4, 8] if args.quick else [2, 4, 8, 12, 16, 24, 32, 48, 64])
    args.concurrency = args.concurrency or ([1, 2] if args.quick else [1, 2, 4, 8, 16])
    return args


# ------------------------------------------------------------------------------ inputs and server


def speech(seconds: float) -> np.ndarray:
    """Real speech when the shared data is there, else the built-in voiced test signal."""
    from runtime.audio import load_audio

    wavs = sorted((ROOT.parent / "shared" / "data" / "voxceleb_wav").glob("*.wav"))
    parts = [load_audio(w) for w in wavs[:4]]
    if not parts:
        from runtime.demo_signal import demo_voice

        parts = [demo_voice(seconds)]
    x = np.concatenate(parts)
    n = int(seconds * 16000)
    return np.resize(x, n) if x.size < n else x[:n]


def infer_body(samples: np.ndarray) -> tuple[bytes, dict]:
    raw = samples.astype("<i2").tobytes()
    head = json.dumps({"inputs": [{"name": "samples", "datatype": "INT16", "shape": [1, samples.size],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def wav_body(samples: np.ndarray) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


class Server(ServerProcess):
    def __init__(self, models: Path, pipeline: str, max_batch: int, max_delay_ms: float, *options: str) -> None:
        super().__init__(models, "--pipeline", pipeline, "--max-batch", str(max_batch), "--max-delay-ms",
                         str(max_delay_ms), "--log-level", "warning", *options)

    def batch_sizes(self) -> dict[str, float]:
        """Cumulative batch-size histogram buckets and sum/count from /metrics."""
        import httpx

        out = {}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            m = re.match(r'cmp_serve_batch_size_(bucket\{le="([^"]+)"\}|sum|count) (\S+)', line)
            if m:
                out[m.group(2) or m.group(1)] = float(m.group(3))
        return out


def batch_summary(before: dict, after: dict) -> dict:
    n = after.get("count", 0) - before.get("count", 0)
    total = after.get("sum", 0) - before.get("sum", 0)
    buckets = {k: after[k] - before.get(k, 0) for k in after if k not in ("sum", "count")}
    return {"batches": int(n), "mean_size": total / n if n else None, "cumulative_buckets": buckets}


# ------------------------------------------------------------------------------ load


def _summary(latencies: list[float], codes: list[int], seconds: float) -> dict:
    ok = [lat for lat, c in zip(latencies, codes) if c == 200]
    q = np.percentile(ok, [50, 90, 99]) * 1e3 if ok else [float("nan")] * 3
    return {"sent": len(codes), "ok": len(ok), "errors": {str(c): codes.count(c) for c in set(codes) if c != 200},
            "answered_per_s": len(ok) / seconds, "p50_ms": float(q[0]), "p90_ms": float(q[1]), "p99_ms": float(q[2])}


async def _one(client, path: str, body: bytes, headers: dict, latencies: list, codes: list) -> None:
    started = time.perf_counter()
    try:
        r = await client.post(path, content=body, headers=headers)
        await r.aread()
        code = r.status_code
        if code == 503 and "retry-after" not in r.headers:
            code = "503 without Retry-After"
    except Exception:  # noqa: BLE001 - a lost request is a result here
        code = 0
    latencies.append(time.perf_counter() - started)
    codes.append(code)


async def open_loop(url: str, path: str, body: bytes, headers: dict, rate: float, seconds: float) -> dict:
    import httpx

    latencies, codes = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=512)) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, path, body, headers, latencies, codes)))
        await asyncio.gather(*tasks)
        elapsed = max(time.perf_counter() - start, seconds)
    return {"offered_per_s": rate, **_summary(latencies, codes, elapsed)}


async def attacked_open_loop(url: str, port: int, path: str, body: bytes, headers: dict, rate: float,
                             seconds: float, hostile_share: float, stallers: int) -> dict:
    """:func:`open_loop` with an :class:`benchmarks.hostile.Attack` beside it (started first, so
    that the stalled connections are in place)."""
    from benchmarks.hostile import Attack

    attack = Attack(port, path, max(hostile_share * rate, 0.5), stallers)
    attacking = asyncio.create_task(attack.run(seconds))
    await asyncio.sleep(0.5)
    row = await open_loop(url, path, body, headers, rate, seconds)
    return {**row, "attack": await attacking}


def attack_verdict(row: dict, held_without_attack: float | None) -> str:
    """'ok', or what the server did that it must not: below the held rate every valid request is
    answered 200; above it the only failure allowed is 503 with Retry-After."""
    if held_without_attack is not None and row["offered_per_s"] <= held_without_attack:
        return "ok" if not row["errors"] else f"valid requests failed below the held rate: {row['errors']}"
    bad = {code: n for code, n in row["errors"].items() if code != "503"}
    return "ok" if not bad else f"valid requests got {bad}"


async def closed_loop(url: str, path: str, body: bytes, headers: dict, clients: int, seconds: float) -> dict:
    import httpx

    latencies, codes = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=512)) as client:
        end = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < end:
                await _one(client, path, body, headers, latencies, codes)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, **_summary(latencies, codes, elapsed)}


def held(row: dict) -> bool:
    return (row["p99_ms"] < HELD_P99_MS and not row["errors"]
            and row["answered_per_s"] >= 0.95 * row["offered_per_s"])


def run_config(args, models: Path, max_batch: int, samples: np.ndarray, attack: bool = False) -> dict:
    server = Server(models, args.pipeline, max_batch, args.max_delay_ms,
                    *(["--max-queue", str(args.max_queue)] if args.max_queue else []))
    path = f"/v2/models/cmp_{args.pipeline}/infer"
    body, headers = infer_body(samples)
    audio = wav_body(samples)
    try:
        asyncio.run(closed_loop(server.url, path, body, headers, 1, min(args.seconds, 1.0)))  # warm-up
        result = {"max_batch": max_batch, "open_loop": [], "closed_loop": [], "predict_closed_loop": []}
        for rate in args.rates:
            before = server.batch_sizes()
            row = asyncio.run(open_loop(server.url, path, body, headers, rate, args.seconds))
            row["batch"] = batch_summary(before, server.batch_sizes())
            row["held"] = held(row)
            result["open_loop"].append(row)
            print(f"  max-batch {max_batch} open loop {rate:g}/s: p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms, "
                  f"answered {row['answered_per_s']:.1f}/s, errors {row['errors']}, "
                  f"mean batch {row['batch']['mean_size']}", file=sys.stderr)
        for clients in args.concurrency:
            before = server.batch_sizes()
            row = asyncio.run(closed_loop(server.url, path, body, headers, clients, args.seconds))
            row["batch"] = batch_summary(before, server.batch_sizes())
            result["closed_loop"].append(row)
            row2 = asyncio.run(closed_loop(server.url, "/predict", audio, {}, clients, args.seconds))
            result["predict_closed_loop"].append(row2)
            print(f"  max-batch {max_batch} closed loop {clients}: infer {row['answered_per_s']:.1f}/s "
                  f"p99 {row['p99_ms']:.1f} ms; /predict {row2['answered_per_s']:.1f}/s p99 {row2['p99_ms']:.1f} ms",
                  file=sys.stderr)
        rates = [r["offered_per_s"] for r in result["open_loop"] if r["held"]]
        result["highest_rate_held"] = max(rates) if rates else None
        if attack:
            result["under_attack"] = []
            for rate in args.rates:
                row = asyncio.run(attacked_open_loop(server.url, server.port, path, body, headers, rate, args.seconds,
                                                     args.hostile_share, args.stallers))
                row["verdict"] = attack_verdict(row, result["highest_rate_held"])
                result["under_attack"].append(row)
                print(f"  max-batch {max_batch} under attack {rate:g}/s: p50 {row['p50_ms']:.1f} p99 "
                      f"{row['p99_ms']:.1f} ms, answered {row['answered_per_s']:.1f}/s, errors {row['errors']}, "
                      f"hostile {row['attack']['hostile_answers']}: {row['verdict']}", file=sys.stderr)
        return result
    finally:
        server.stop()


# ------------------------------------------------------------------------------ reports


def markdown(doc: dict) -> str:
    lines = [f"# Serving load test ({'QUICK smoke run' if doc['quick'] else 'full run'})", "",
             f"{doc['machine']} · {doc['cores']} cores (load generator on the same cores) · pipeline "
             f"{doc['pipeline']} · {doc['audio_seconds']:g} s INT16 samples, binary outputs · "
             f"max delay {doc['max_delay_ms']:g} ms · max queue {doc.get('max_queue', 256)} · "
             f"{doc['seconds']:g} s per step", ""]
    for cfg in doc["configs"]:
        lines += [f"## --max-batch {cfg['max_batch']}: highest rate held (p99 < {HELD_P99_MS:g} ms) "
                  f"{cfg['highest_rate_held'] if cfg['highest_rate_held'] is not None else 'none'} /s", "",
                  "| offered /s | answered /s | p50 ms | p90 ms | p99 ms | errors | mean batch | held |",
                  "|---:|---:|---:|---:|---:|---|---:|---|"]
        for r in cfg["open_loop"]:
            mean = r["batch"]["mean_size"]
            lines.append(f"| {r['offered_per_s']:g} | {r['answered_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} "
                         f"| {r['p99_ms']:.1f} | {r['errors'] or '-'} | {'-' if mean is None else f'{mean:.2f}'} "
                         f"| {'yes' if r['held'] else 'no'} |")
        lines += ["", "| clients | infer /s | infer p50 / p99 ms | /predict (audio file) /s | /predict p50 / p99 ms |",
                  "|---:|---:|---|---:|---|"]
        for r, p in zip(cfg["closed_loop"], cfg["predict_closed_loop"]):
            lines.append(f"| {r['clients']} | {r['answered_per_s']:.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} "
                         f"| {p['answered_per_s']:.1f} | {p['p50_ms']:.1f} / {p['p99_ms']:.1f} |")
        lines.append("")
        if cfg.get("under_attack"):
            a0 = cfg["under_attack"][0]["attack"]
            lines += [f"### --max-batch {cfg['max_batch']} under attack: {a0['stallers']} stalled connections "
                      "(reopened when closed) and hostile requests at "
                      f"{doc['hostile_share']:g} x the valid rate", "",
                      "| valid offered /s | answered /s | p50 ms | p99 ms | valid errors | hostile /s "
                      "| stalled conns opened | hostile answers | verdict |",
                      "|---:|---:|---:|---:|---|---:|---:|---|---|"]
            for r in cfg["under_attack"]:
                a = r["attack"]
                answers = "; ".join(f"{k}: " + ", ".join(f"{c} x{n}" for c, n in sorted(v.items()))
                                    for k, v in a["hostile_answers"].items() if v)
                lines.append(f"| {r['offered_per_s']:g} | {r['answered_per_s']:.1f} | {r['p50_ms']:.1f} "
                             f"| {r['p99_ms']:.1f} | {r['errors'] or '-'} | {a['hostile_per_s']:g} "
                             f"| {a['stalled_connections_opened']} | {answers} | {r['verdict']} |")
            lines.append("")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cfg in doc["configs"]:
        x = [r["offered_per_s"] for r in cfg["open_loop"]]
        for key, style in (("p99_ms", "-o"), ("p50_ms", "--.")):
            ax.plot(x, [r[key] for r in cfg["open_loop"]], style, label=f"max-batch {cfg['max_batch']} {key[:3]}")
        if cfg.get("under_attack"):
            ax.plot([r["offered_per_s"] for r in cfg["under_attack"]], [r["p99_ms"] for r in cfg["under_attack"]],
                    ":x", label=f"max-batch {cfg['max_batch']} p99 under attack")
    ax.axhline(HELD_P99_MS, color="grey", lw=0.8)
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"cmp-face serve, {doc['machine']}" + (" (QUICK)" if doc["quick"] else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.models is None:
        from export.cache import synthetic_models

        args.models = synthetic_models(progress=lambda m: print(m, file=sys.stderr))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from benchmarks.machine import machine_name
    from benchmarks.report import results_folder, write_results
    from runtime.serve.pipeline import Limits

    machine = machine_name(cores, None)  # the same folder as the latency tables
    out = results_folder(args.out, machine, "serve", full_run=not args.quick)
    samples = speech(args.audio_seconds)
    doc = {"quick": args.quick, "machine": machine, "cores": cores, "pipeline": args.pipeline,
           "audio_seconds": args.audio_seconds, "max_delay_ms": args.max_delay_ms, "seconds": args.seconds,
           "hostile_share": args.hostile_share, "max_queue": args.max_queue or Limits().max_queue,
           "configs": [run_config(args, args.models, b, samples, attack=args.attack and i == 0)
                       for i, b in enumerate(args.max_batch)]}
    write_results(out, "serve_load", doc, markdown(doc), plot)
    held_rates = {c["max_batch"]: c["highest_rate_held"] for c in doc["configs"]}
    print(f"wrote {out}/serve_load.{{json,md,png}}; highest rate held per --max-batch: {held_rates}")
    failed = [f"{r['offered_per_s']:g}/s: {r['verdict']}" for c in doc["configs"] for r in c.get("under_attack", [])
              if r["verdict"] != "ok"]
    if failed:
        print("under attack the server failed valid requests: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
