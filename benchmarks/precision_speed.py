"""What INT8 buys on this machine: each precision against FP32, measured interleaved in one process.

    python benchmarks/precision_speed.py --models MODELS [--audio voice.wav] [--threads 2] [--rounds 40]
    python benchmarks/precision_speed.py --models MODELS --quick      # smoke test (seconds)

The latency table (``benchmarks/latency.py``) runs each backend in a process of its own, one after
the other, so a ratio between two of its rows carries the machine's drift between those processes
(on the 2-core VM: +-25 % for the same file). The precision speed targets are ratios, so here every
configuration is timed in the *same* process, in rounds: each round times every configuration a
few calls in a shuffled order, and each ratio is taken per round (paired), then summarised by its
median and interquartile range. Rows:

* ``encoder``: the encoder alone on one 1000-frame fbank (batch 1);
* ``voice -> mesh, <pipeline>``: ``Predictor.predict(int16 samples)`` (VAD, log-mel, encoder,
  decoder), numpy and, where the folder has the fused graph, ONNX frontend;
* ``fbank -> mesh, <pipeline>, batch 32``: ``Predictor.embed`` + ``decode`` on 32 equal-length
  fbanks, in utterances per second.

The targets: INT8 encoder >= 2x FP32 with AMX, >= 1.5x with AVX-512 VNNI, else the
ratio is reported; fastest supervised voice -> mesh <= 0.7x of the fastest FP32 path,
unsupervised <= 0.85x; batch-32 fbank -> mesh >= 2x FP32's throughput. FP16 runs on GPUs only
(ONNX Runtime's CPU provider computes FP16 through casts); a precision the folder lacks is listed
as skipped with the reason. Writes ``precision_speed.md``, ``.json`` and ``.png`` to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: row -> (comparison, limit) for the INT8 / fastest-FP32 ratio (the encoder's depends on the CPU)
TARGETS = {"voice -> mesh, supervised": ("<=", 0.7), "voice -> mesh, unsupervised": ("<=", 0.85),
           "fbank -> mesh, supervised, batch": (">=", 2.0)}
PRECISIONS = ("fp32", "int8")
BATCH = 32


def cpu_features() -> set[str]:
    """The INT8-relevant instruction sets the CPU reports (Linux)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(flags.split(":", 1)[1].split()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"}


def encoder_target(features: set[str]) -> tuple[str, float | None]:
    if "amx_int8" in features:
        return "AMX", 2.0
    if features & {"avx512_vnni", "avx_vnni"}:
        return "VNNI, no AMX", 1.5
    return "no VNNI/AMX reported (" + (", ".join(sorted(features)) or "unknown") + ")", None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, required=True, help="models folder with INT8 files (cmp-face calibrate)")
    p.add_argument("--audio", type=Path, help="recording for the voice -> mesh rows (default: the 6 s demo voice)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=3, help="timed calls per configuration per round (median kept)")
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results/<machine>/precision/")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 rounds of 1 call, batch of 2")
    return p.parse_args(argv)


def configurations(models: Path, threads: int, batch: int, audio: Path | None) -> tuple[dict, list[str]]:
    """name -> (precision, row, callable); and the reasons for what cannot run here."""
    import numpy as np

    from runtime import Predictor
    from runtime.audio import load_audio
    from runtime.demo_signal import demo_voice
    from runtime.errors import CmpError
    from runtime.fbank import compute_fbank

    from runtime.models_folder import ModelsFolder

    pipelines = ModelsFolder.read(models).pipelines
    skipped = ["fp16: measured on GPUs only (ONNX Runtime's CPU provider computes FP16 through casts)"]
    samples = demo_voice() if audio is None else load_audio(audio)
    fbank = compute_fbank(samples)
    fbanks = [fbank] * batch
    configs: dict = {}
    for precision in PRECISIONS:
        for pipeline in pipelines:
            for frontend in ("numpy", "fused"):
                try:
                    p = Predictor(models, pipeline, device="cpu", threads=threads, frontend=frontend,
                                  precision=precision)
                except CmpError as exc:
                    skipped.append(f"{precision} {pipeline} {frontend} frontend: {exc}")
                    continue
                path = "" if frontend == "numpy" else ", fused graph"
                configs[f"{precision} {pipeline}{path}"] = (precision, f"voice -> mesh, {pipeline}",
                                                            lambda p=p: p.predict(samples, 16000))
                if frontend == "numpy":
                    x = np.ascontiguousarray(fbank.T[None])
                    if pipeline == pipelines[0]:
                        configs[f"{precision} encoder"] = (precision, "encoder",
                                                           lambda p=p, x=x: p.models.encoder.run({"fbank": x}, ["embedding"]))
                    configs[f"{precision} {pipeline} batch"] = (
                        precision, f"fbank -> mesh, {pipeline}, batch", lambda p=p: p.decode(p.embed(fbanks)))
    return configs, skipped


def measure(configs: dict, rounds: int, calls: int) -> tuple[dict[str, list[float]], dict[str, list[dict]]]:
    """Per configuration, the median of ``calls`` timed calls in each round (ms); and for the
    Predictor rows, its own stage timings of the last call of each round."""
    from tqdm import tqdm

    for _, _, fn in configs.values():  # warm up every session once
        fn()
    per_round: dict[str, list[float]] = {name: [] for name in configs}
    stages: dict[str, list[dict]] = {}
    names = list(configs)
    rng = random.Random(0)
    for _ in tqdm(range(rounds), desc="rounds", unit="round", disable=None):
        rng.shuffle(names)
        for name in names:
            fn = configs[name][2]
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                result = fn()
                times.append((time.perf_counter() - t0) * 1e3)
            per_round[name].append(sorted(times)[len(times) // 2])
            if hasattr(result, "timings"):
                stages.setdefault(name, []).append(result.timings)
    return per_round, stages


def stage_medians(stages: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Median ms per Predictor stage, per configuration: where the time goes."""
    import numpy as np

    return {name: {k: float(np.median([t[k] for t in runs if k in t])) for k in runs[0]} for name, runs in stages.items()}


def summarise(configs: dict, per_round: dict[str, list[float]], batch: int, features: set[str]) -> dict:
    """Rows: each configuration's median ms; each reduced-precision row against the fastest FP32
    configuration of the same row, per round (paired), with the interquartile range."""
    import numpy as np

    rows: dict[str, dict] = {}
    for name, (precision, row, _) in configs.items():
        rows.setdefault(row, {})[name] = {"precision": precision, "ms_p50": float(np.median(per_round[name])),
                                          "ms_per_round": per_round[name]}
    ratios = {}
    for row, entries in rows.items():
        best = {pr: min((n for n, e in entries.items() if e["precision"] == pr), key=lambda n: entries[n]["ms_p50"],
                        default=None) for pr in PRECISIONS}
        if best["fp32"] is None or best["int8"] is None:
            continue
        r = np.asarray(per_round[best["int8"]]) / np.asarray(per_round[best["fp32"]])  # time ratio, per round
        batch_row = "batch" in row
        value = 1.0 / r if batch_row else r  # throughput ratio for batch rows
        q1, med, q3 = np.percentile(value, [25, 50, 75])
        op, limit = TARGETS.get(row, (None, None)) if not batch_row or batch == BATCH else (None, None)
        if row == "encoder":
            label, need = encoder_target(features)
            op, limit = (">=", need) if need else (None, None)
            q1, med, q3 = np.percentile(1.0 / r, [25, 50, 75])  # speed-up
        ratios[row] = {"fastest_fp32": best["fp32"], "fastest_int8": best["int8"],
                       "measure": "throughput ratio" if batch_row else "speed-up" if row == "encoder" else "time ratio",
                       "median": float(med), "q1": float(q1), "q3": float(q3), "target": [op, limit] if op else None,
                       "met": None if not op else bool(med >= limit if op == ">=" else med <= limit)}
    return {"rows": rows, "ratios": ratios}


def markdown(doc: dict) -> str:
    lines = [f"# INT8 against FP32, interleaved in one process: {doc['machine']}", "",
             f"{doc['date']} · {doc['cpu']} · INT8-relevant CPU flags: {', '.join(doc['cpu_features']) or 'none'} · "
             f"ONNX Runtime {doc['onnxruntime']} · {doc['threads']} threads · git {doc['git']}  ",
             f"Encoder target class: {doc['encoder_target']}.  ",
             f"Input: {doc['input']}. {doc['rounds']} rounds x {doc['calls']} calls per configuration, shuffled "
             f"order; load average at start/end: {doc['load'][0]:.2f} / {doc['load'][1]:.2f}.",
             f"Reproduce: `{doc['command']}`", ""]
    if doc["untrained"]:
        lines += ["Models: the synthetic pack (release shapes, UNTRAINED weights): speed is representative; which "
                  "layers INT8 keeps depends on the weights (islands chosen by measurement).", ""]
    lines += ["## Ratios (per round, paired; median and interquartile range)", "",
              "| row | fastest FP32 | fastest INT8 | measure | median | IQR | target | met |",
              "|---|---|---|---|---:|---|---|---|"]
    for row, r in doc["ratios"].items():
        row = row.replace("batch", f"batch {doc['batch']}")
        target = f"{r['target'][0]} {r['target'][1]}" if r["target"] else "report"
        met = "-" if r["met"] is None else "yes" if r["met"] else "**no**"
        lines.append(f"| {row} | {r['fastest_fp32']} | {r['fastest_int8']} | {r['measure']} | {r['median']:.3f} | "
                     f"{r['q1']:.3f} - {r['q3']:.3f} | {target} | {met} |")
    lines += ["", "## Times (median over rounds of each round's median)", "",
              "| row | configuration | ms | utt/s |", "|---|---|---:|---:|"]
    for row, entries in doc["rows"].items():
        for name, e in entries.items():
            per = doc["batch"] if "batch" in row else 1
            lines.append(f"| {row.replace('batch', f'batch {per}')} | {name} | {e['ms_p50']:.2f} | {1e3 * per / e['ms_p50']:.1f} |")
    lines += ["", "## Where the time goes (voice -> mesh: the Predictor's own stage timings, median ms)", ""]
    names = sorted(doc["stages"])
    order = ("audio", "vad", "fbank", "encoder", "decoder", "voice2mesh", "postprocess", "total")
    keys = sorted({k for n in names for k in doc["stages"][n]}, key=lambda k: (order + (k,)).index(k))
    lines += ["| configuration | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {n} | " + " | ".join(f"{doc['stages'][n][k]:.2f}" if k in doc["stages"][n] else "-" for k in keys)
              + " |" for n in names]
    lines += ["", "## Not measured", ""] + [f"- {s}" for s in doc["skipped"]] + [""]
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(doc["ratios"])
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.5))
    for i, name in enumerate(names):
        r = doc["ratios"][name]
        ax.barh(i, r["median"], xerr=[[r["median"] - r["q1"]], [r["q3"] - r["median"]]], color="tab:blue")
        if r["target"]:
            ax.plot([r["target"][1]] * 2, [i - 0.4, i + 0.4], color="tab:red")
    labels = [f"{n.replace('batch', 'batch ' + str(doc['batch']))}\n({doc['ratios'][n]['measure']})" for n in names]
    ax.set_yticks(range(len(names)), labels)
    ax.set_xlabel("INT8 vs fastest FP32 (red: target)")
    ax.set_title(f"INT8 vs FP32, {doc['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmarks.machine import available_cores, cpu_model, git_revision, machine_name
    from benchmarks.report import results_folder, write_results

    rounds, calls, batch = (2, 1, 2) if args.quick else (args.rounds, args.calls, BATCH)
    from runtime.errors import CmpError
    from runtime.models_folder import ModelsFolder

    load = [os.getloadavg()[0]]
    try:
        folder = ModelsFolder.read(args.models)
        configs, skipped = configurations(args.models, args.threads, batch, args.audio)
    except CmpError as exc:  # e.g. an --audio file that is not audio
        print(f"precision_speed: error: {exc}", file=sys.stderr)
        return 2
    features = cpu_features()
    per_round, stages = measure(configs, rounds, calls)
    load.append(os.getloadavg()[0])
    doc = {"machine": machine_name(available_cores(), None), "cpu": cpu_model(), "cpu_features": sorted(features),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_revision(), "threads": args.threads,
           "onnxruntime": __import__("onnxruntime").__version__, "rounds": rounds, "calls": calls, "batch": batch,
           "input": "the 6 s demo voice (runtime.demo_signal)" if args.audio is None else str(args.audio),
           "encoder_target": encoder_target(features)[0], "stages": stage_medians(stages), "load": load, "untrained": folder.untrained, "skipped": skipped,
           "command": "python benchmarks/precision_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           **summarise(configs, per_round, batch, features)}
    out = results_folder(args.out, doc["machine"], "precision", full_run=not args.quick)
    write_results(out, "precision_speed", doc, markdown(doc), plot)
    print(markdown(doc))
    print(f"wrote {out}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
