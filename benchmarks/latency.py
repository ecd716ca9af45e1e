"""Latency table of cmp-deploy against the release-style pipeline, per stage and end to end.

    python benchmarks/latency.py                 # full run (a few minutes), all backends found
    python benchmarks/latency.py --quick         # smoke test (seconds; CI runs it)
    python benchmarks/latency.py --models models/ --release CMP/ --audio voice.wav --threads 2

Writes ``latency.md``, ``latency.json`` and ``latency.png`` to ``--out`` (default
``benchmarks/results/<machine>/``). Every backend runs in a process of its own (peak memory
per backend); a backend that cannot run here is listed under "skipped" with the reason,
never given a row. Speed-ups are baseline p50 / backend p50 from the same run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import (available_cores, children_cpu, cpu_model, cpu_ticks, git_revision,  # noqa: E402
                                gpu_name, machine_name, ram_gib, untrained_models, versions, wait_idle)
from benchmarks.report import results_folder  # noqa: E402

NOISY = 0.05  # other processes' share of the CPUs above which a measurement is repeated
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS", "SIM3DR_NUM_THREADS")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", type=Path, help="ONNX models folder (default: the synthetic models, built "
                                                "once into the cache)")
    ap.add_argument("--release", type=Path, help="release-layout folder for the eager baseline (default: "
                                                 "the 'release' folder beside --models, as the cache lays out)")
    ap.add_argument("--quick", action="store_true", help="smoke test: few repetitions, tiny throughput grid")
    ap.add_argument("--threads", type=int, default=None, help="threads for every library (default: all cores)")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<machine>/)")
    ap.add_argument("--audio", type=Path, help="a real recording for the batch-1 rows (default: the synthetic "
                                               "demo voice)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the synthetic headline utterance")
    ap.add_argument("--no-baseline", action="store_true", help="skip the release-style baseline")
    ap.add_argument("--wait-idle", type=float, default=None, metavar="S",
                    help="before each backend, wait up to S seconds for a quiet machine (default 180, 0 with --quick)")
    ap.add_argument("--retries", type=int, default=None, metavar="N",
                    help="re-measure a backend up to N times when other processes used more than 5%% of the "
                         "CPUs meanwhile (default 2, 0 with --quick)")
    ap.add_argument("--stages-only", action="store_true", help="batch-1 rows only (no throughput grid)")
    ap.add_argument("--what-if", action="store_true",
                    help="also measure configurations that are not the shipped default (labelled so)")
    ap.add_argument("--only", nargs="*", metavar="ID", help="only these backend ids (e.g. ort-cpu-fp32)")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


# ----------------------------------------------------------------------------- inputs
def write_wav(path: Path, samples, rate: int, channels: int = 1) -> None:
    import numpy as np

    data = np.asarray(samples, dtype="<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(data.tobytes())


def prepare_inputs(args, tmp: Path, seconds_grid: list[float]) -> tuple[dict, dict]:
    """Write every input once; all backends read the same files."""
    import numpy as np
    import soxr

    from runtime.audio import load_audio
    from runtime.demo_signal import demo_voice
    from runtime.fbank import num_frames
    from runtime.vad import remove_silence

    if args.audio:
        x = load_audio(args.audio)
        desc = f"recording {args.audio.name}"
    else:
        x = demo_voice(args.seconds)
        desc = "synthetic demo voice (runtime.demo_signal.demo_voice)"
    np.save(tmp / "samples.npy", x)
    write_wav(tmp / "voice16k.wav", x, 16000)
    up = soxr.resample(x.astype(np.float64) / 32768.0, 16000, 44100, quality="HQ")
    st = np.clip(np.rint(np.stack([up, 0.9 * up], axis=1) * 32767), -32768, 32767).astype(np.int16)
    write_wav(tmp / "voice44k_stereo.wav", st.reshape(-1), 44100, channels=2)
    by_seconds = {}
    for s in seconds_grid:
        if args.audio:  # the recording, repeated or cut to s
            n = int(round(s * 16000))
            y = np.tile(x, -(-n // len(x)))[:n]
        else:
            y = demo_voice(s)
        np.save(tmp / f"samples_{s:g}s.npy", y)
        by_seconds[str(s)] = str(tmp / f"samples_{s:g}s.npy")
    voiced = remove_silence(x)
    info = {"description": desc, "seconds": len(x) / 16000, "voiced_seconds": len(voiced) / 16000,
            "fbank_frames": max(1000, num_frames(len(voiced))), "samples": int(len(x))}
    files = {"samples": str(tmp / "samples.npy"), "wav16": str(tmp / "voice16k.wav"),
             "wav44": str(tmp / "voice44k_stereo.wav"), "by_seconds": by_seconds}
    return files, info


# ----------------------------------------------------------------------------- run
def run_worker(backend, cfg: dict, tmp: Path, env: dict, idle_s: float) -> tuple[dict | None, str | None]:
    spec = tmp / f"spec-{backend.id}.json"
    result = tmp / f"result-{backend.id}.json"
    spec.write_text(json.dumps({"backend": backend.as_dict(), "config": cfg}))
    idle = wait_idle(idle_s) if idle_s > 0 else None
    busy0, total0 = cpu_ticks()
    child0, wall0 = children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "worker.py"), str(spec), str(result)],
                          env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    busy1, total1 = cpu_ticks()
    child = children_cpu() - child0
    # CPU time used by other processes while this backend was measured, as a share of the machine.
    foreign = max(0.0, (busy1 - busy0) - child) / (total1 - total0) if total1 > total0 else float("nan")
    if proc.returncode != 0 or not result.is_file():
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no error output"]
        sys.stderr.write(proc.stderr[-4000:])
        return None, f"the measurement process failed (exit {proc.returncode}): {tail[0][:300]}"
    res = json.loads(result.read_text())
    res["machine_load"] = {"other_processes_cpu_share": round(foreign, 4), "idle_wait": idle,
                           "worker_cpu_s": round(child, 2), "worker_wall_s": round(time.perf_counter() - wall0, 2)}
    print(f"  other processes used {100 * foreign:.1f}% of the CPUs while {backend.id} was measured", flush=True)
    return res, None


def parity(base_npz: str, ours_npz: str) -> dict:
    import numpy as np

    a, b = np.load(base_npz), np.load(ours_npz)
    out = {}
    for k in a.files:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if x.shape != y.shape:
            out[k] = f"shape {x.shape} vs {y.shape}"
        elif a[k].dtype == np.uint8:
            out[k] = f"{100.0 * (np.abs(x - y).max(axis=-1) > 0).mean():.3f}% pixels differ"
        else:
            rel = np.abs(x - y).max() / max(np.abs(x).max(), 1e-30)
            out[k] = f"max rel diff {rel:.1e}"
    return out


def assemble(args, backends, skipped, results, inputs_info, meta) -> dict:
    base_id = "release-style" if "release-style" in results else None
    base = results.get(base_id) if base_id else None
    stages, unavailable, throughput = [], [], []
    order = [b.id for b in backends if b.id in results]
    for bid in order:
        r = results[bid]
        for sid, s in r["stages"].items():
            row = {"stage": sid, "backend": bid, **s, "ratio": None}
            if base and bid != base_id and sid in base["stages"]:
                row["ratio"] = base["stages"][sid]["p50_ms"] / s["p50_ms"]
            stages.append(row)
        for sid, reason in r["unavailable"].items():
            unavailable.append({"stage": sid, "backend": bid, "reason": reason})
        for t in r["throughput"]:
            row = {"backend": bid, **t, "ratio": None}
            if base and bid != base_id:
                match = [u for u in base["throughput"] if (u["kind"], u["pipeline"], u["batch"], u["seconds"])
                         == (t["kind"], t["pipeline"], t["batch"], t["seconds"])]
                if match:
                    row["ratio"] = match[0]["p50_ms"] / t["p50_ms"]
            throughput.append(row)

    from benchmarks.report import TARGETS
    targets = []
    for name, sid, target, reference_ms in TARGETS:
        sid = sid.replace("512", str(args.render_size)) if sid == "render_512" else sid
        b = base["stages"].get(sid) if base else None
        entry = {"name": name, "stage": sid, "target_ms": target, "reference_release_ms": reference_ms,
                 "baseline_p50_ms": b["p50_ms"] if b else None, "ours": {}}
        for bid in order:
            if bid == base_id or sid not in results[bid]["stages"]:
                continue
            s = results[bid]["stages"][sid]
            entry["ours"][bid] = {"p50_ms": s["p50_ms"], "p90_ms": s["p90_ms"], "met": s["p50_ms"] <= target,
                                  "ratio": b["p50_ms"] / s["p50_ms"] if b else None}
        targets.append(entry)

    par = {}
    if base:
        for bid in order:
            if bid != base_id:
                par[bid] = parity(base["parity_file"], results[bid]["parity_file"])
    doc = {
        "schema": 1,
        **meta,
        "input": inputs_info,
        "baseline": base_id,
        "backends": [{**{k: v for k, v in b.as_dict().items() if k in ("id", "label", "kind", "precision",
                                                                       "providers", "device", "frontend",
                                                                       "spinning", "note")},
                      "peak_rss_mib": results[b.id]["peak_rss_mib"],
                      "peak_rss_batch1_mib": results[b.id].get("peak_rss_batch1_mib"), "threads": results[b.id]["threads"],
                      "torch_imported": results[b.id]["torch_imported"], "wall_s": results[b.id]["wall_s"],
                      "machine_load": results[b.id].get("machine_load")}
                     for b in backends if b.id in results],
        "skipped": skipped,
        "targets": targets,
        "stages": stages,
        "unavailable": unavailable,
        "throughput": throughput,
        "parity": par,
    }
    return doc


def main(argv=None) -> int:
    args = parse_args(argv)
    args.render_size = 512
    t_start = time.perf_counter()
    cores = available_cores()
    threads = args.threads or cores
    for var in THREAD_VARS:  # before numpy / onnxruntime are imported here and in the workers
        os.environ[var] = str(threads)
    load_start = os.getloadavg()

    from benchmarks.backends import discover

    if args.models is None:
        from export.cache import synthetic_models
        print("models: the synthetic pack (built once into the cache if needed)", flush=True)
        args.models = synthetic_models(progress=lambda m: print(f"  {m}", flush=True))
    args.models = args.models.resolve()
    release = args.release.resolve() if args.release else args.models.parent / "release"
    print(f"models {args.models}; baseline release folder {release}; threads {threads} of {cores} cores",
          flush=True)
    backends, skipped = discover(args.models, release, threads, want_baseline=not args.no_baseline,
                                 what_if=args.what_if)
    if args.only:
        for b in [b for b in backends if b.id not in args.only and b.kind != "baseline"]:
            skipped.append({"backend": b.id, "reason": "not selected (--only)"})
        backends = [b for b in backends if b.id in args.only or b.kind == "baseline"]
    for s in skipped:
        print(f"skipped {s['backend']}: {s['reason']}", flush=True)
    if not [b for b in backends if b.kind == "ours"]:
        print("error: no backend of ours can run here (see above)", file=sys.stderr)
        return 2

    if args.quick:
        seconds_grid, batches, e2e_seconds, e2e_batches = [3.0], [1, 2], [3.0], [2]
    else:
        seconds_grid, batches, e2e_seconds, e2e_batches = [3.0, 10.0, 30.0], [1, 8, 32], [3.0, 10.0, 30.0], [1, 8, 32]
    if args.stages_only:
        seconds_grid, batches, e2e_seconds, e2e_batches = [], [], [], []
    gpu = gpu_name() if any(b.device == "cuda" for b in backends) else None
    name = machine_name(cores, gpu)
    from benchmarks import report

    out = results_folder(args.out, name, full_run=not args.quick)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cmp-latency-") as tmpdir:
        tmp = Path(tmpdir)
        files, inputs_info = prepare_inputs(args, tmp, sorted(set(seconds_grid) | set(e2e_seconds)))
        print(f"input: {inputs_info['description']}, {inputs_info['seconds']:.2f} s "
              f"({inputs_info['voiced_seconds']:.2f} s voiced)", flush=True)
        cfg = {"models": str(args.models), "threads": threads, "quick": args.quick, "inputs": files,
               "render_size": args.render_size, "seconds": seconds_grid, "batches": batches,
               "e2e_seconds": e2e_seconds, "e2e_batches": e2e_batches}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        idle_s = args.wait_idle if args.wait_idle is not None else (0.0 if args.quick else 180.0)
        retries = args.retries if args.retries is not None else (0 if args.quick else 2)
        for b in list(backends):
            best = None  # the attempt least disturbed by other processes
            for attempt in range(retries + 1):
                res, reason = run_worker(b, cfg, tmp, env, idle_s)
                if res is None:
                    break
                share = res["machine_load"]["other_processes_cpu_share"]
                res["machine_load"]["attempt"] = f"{attempt + 1} of up to {retries + 1}"
                if best is None or share < best["machine_load"]["other_processes_cpu_share"]:
                    best = res
                if not share > NOISY or attempt == retries:
                    break
                print(f"  re-measuring {b.id}: other processes used {100 * share:.0f}% of the CPUs "
                      f"(> {100 * NOISY:.0f}%)", flush=True)
            res = best if res is not None else None
            if res is None:
                skipped.append({"backend": b.id, "reason": reason})
                print(f"skipped {b.id}: {reason}", flush=True)
                continue
            results[b.id] = res
        if not any(b.kind == "ours" and b.id in results for b in backends):
            print("error: no backend of ours could be measured", file=sys.stderr)
            return 2
        import numpy as np
        untrained = untrained_models(args.models)
        meta = {
            "machine_name": name,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/latency.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "quick": args.quick,
            "threads": threads,
            "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "available_cores": cores,
                        "ram_gib": ram_gib(), "os": platform.platform(), "gpu": gpu},
            "versions": versions(),
            "git": git_revision(),
            "models": str(args.models),
            "untrained": untrained,
            "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
            "statistic": "speed-ups and targets use p50; every ratio = baseline p50 / backend p50, same run",
        }
        doc = assemble(args, backends, skipped, results, inputs_info, meta)
        _ = np
    md = report.markdown(doc)
    report.write_results(out, "latency", doc, md, report.plot)
    print(f"\nwrote {out / 'latency.md'}, latency.json, latency.png in {time.perf_counter() - t_start:.0f} s\n")
    print(md.split("## Latency by stage")[0])
    if args.quick:
        print("--quick is a smoke test: a few repetitions on a cold process, so these figures are not "
              "measurements; run without --quick for the table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
