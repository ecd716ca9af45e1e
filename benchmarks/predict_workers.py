"""Wall time of ``cmp-face predict DIR -o OUT`` with ``--workers 1`` against ``--workers N``.

    python benchmarks/predict_workers.py            # 24 recordings in 4 identity folders, 3 rounds
    python benchmarks/predict_workers.py --quick    # 8 recordings, 1 round, results to a temporary folder

What a user runs, timed from outside: a new process per run (start-up, model loading, every
input read, VAD, log-mel, models, render and files), on the default cached models (built first,
untimed, if missing). The runs alternate (1, N, N, 1, ...) so that background load falls on both;
the ratio is taken per round and its median reported. Every run's files are compared byte for
byte with the first ``--workers 1`` run's. The recordings are the shared test data's real speech
(cycled to fill the identity folders) or, without it, the built-in voices written as WAV files.

Writes ``predict_workers.json``, ``.md`` and ``.png`` under ``benchmarks/results/<machine>/predict``
on a full run (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import available_cores, cpu_model, git_revision, machine_name, versions  # noqa: E402
from benchmarks.report import results_folder, write_results  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "voxceleb_wav"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 recordings, one round (a smoke test)")
    ap.add_argument("--identities", type=int, help="identity folders (default 4; 2 with --quick)")
    ap.add_argument("--per-identity", type=int, help="recordings per folder (default 6; 4 with --quick)")
    ap.add_argument("--rounds", type=int, help="rounds of (1, N) runs (default 3; 1 with --quick)")
    ap.add_argument("--workers", type=int, default=None, help="N (default: the cores)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<machine>/predict)")
    args = ap.parse_args(argv)
    args.identities = args.identities or (2 if args.quick else 4)
    args.per_identity = args.per_identity or (4 if args.quick else 6)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.workers = args.workers or available_cores()
    return args


def write_tree(root: Path, identities: int, per_identity: int) -> str:
    """``root/id<k>/utt<j>.wav``; what the recordings are."""
    wavs = sorted(SPEECH.glob("*.wav"))
    n = identities * per_identity
    for i in range(n):
        folder = root / f"id{i // per_identity}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"utt{i % per_identity}.wav"
        if wavs:
            shutil.copyfile(wavs[i % len(wavs)], target)
        else:
            from runtime.demo_signal import demo_voice

            with wave.open(str(target), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                w.writeframes(demo_voice(6.0, seed=i).astype("<i2").tobytes())
    return (f"{n} copies of the {len(wavs)} real recordings in {SPEECH}" if wavs else
            f"{n} built-in synthetic voices of 6 s (no shared data)")


def cmp_face(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, capture_output=True, text=True)


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_name(available_cores(), None)
    out = results_folder(args.out, machine, "predict", full_run=not args.quick)
    with tempfile.TemporaryDirectory(prefix="cmp-predict-workers-") as tmp:
        tmp = Path(tmp)
        source = write_tree(tmp / "voices", args.identities, args.per_identity)
        warm = cmp_face("predict", "--demo", "-o", str(tmp / "warm"))  # builds the cache if needed: untimed
        if warm.returncode != 0:
            print(warm.stderr, file=sys.stderr)
            return 1
        reference: dict[str, bytes] | None = None
        rows = []
        for r in range(args.rounds):
            times = {}
            for workers in ((1, args.workers) if r % 2 == 0 else (args.workers, 1)):
                target = tmp / f"out-{r}-{workers}"
                started = time.perf_counter()
                done = cmp_face("predict", str(tmp / "voices"), "-o", str(target), "--workers", str(workers))
                times[workers] = time.perf_counter() - started
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                files = files_of(target)
                if reference is None:
                    reference = files
                elif files != reference:
                    differ = sorted(k for k in set(files) | set(reference) if files.get(k) != reference.get(k))
                    print(f"FAILED: --workers {workers} wrote other files than --workers 1: {differ[:5]}",
                          file=sys.stderr)
                    return 1
                shutil.rmtree(target)
            rows.append({"round": r + 1, "workers_1_s": times[1], f"workers_{args.workers}_s": times[args.workers],
                         "ratio": times[1] / times[args.workers]})
            print(f"round {r + 1}: --workers 1 {times[1]:.2f} s, --workers {args.workers} {times[args.workers]:.2f} s, "
                  f"x{rows[-1]['ratio']:.2f}", flush=True)
    ratio = float(np.median([row["ratio"] for row in rows]))
    doc = {"quick": args.quick, "machine": machine, "cpu": cpu_model(), "cores": available_cores(),
           "git": git_revision(), "versions": versions(), "inputs": source, "workers": args.workers,
           "outputs_identical": True, "rounds": rows, "median_ratio": ratio,
           "target": ">= 1.5x with --workers 2 on a 2-core machine"}
    write_results(out, "predict_workers", doc, markdown(doc), plot)
    print(f"--workers {args.workers} is x{ratio:.2f} the speed of --workers 1 (median of {len(rows)} rounds), files "
          f"identical; wrote {out}/predict_workers.{{json,md,png}}")
    return 0


def markdown(doc: dict) -> str:
    n = doc["workers"]
    lines = [f"# `cmp-face predict DIR` with --workers 1 and {n} ({'QUICK smoke run' if doc['quick'] else 'full run'})",
             "", f"{doc['machine']} · {doc['cpu']} · {doc['cores']} cores · git {doc['git']}  ",
             f"Inputs: {doc['inputs']}; default cached models; start-up and model loading included; every "
             "run's files byte-identical to the first --workers 1 run's.", "",
             f"| round | --workers 1 (s) | --workers {n} (s) | ratio |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['workers_1_s']:.2f} | {r[f'workers_{n}_s']:.2f} | x{r['ratio']:.2f} |"
              for r in doc["rounds"]]
    lines += ["", f"Median ratio **x{doc['median_ratio']:.2f}** (target: {doc['target']}).", ""]
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = doc["workers"]
    rounds = [r["round"] for r in doc["rounds"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    ax.bar([x - width / 2 for x in rounds], [r["workers_1_s"] for r in doc["rounds"]], width, label="--workers 1")
    ax.bar([x + width / 2 for x in rounds], [r[f"workers_{n}_s"] for r in doc["rounds"]], width,
           label=f"--workers {n}")
    ax.set_xlabel("round")
    ax.set_ylabel("wall time (s)")
    ax.set_xticks(rounds)
    ax.set_title(f"cmp-face predict DIR, {doc['machine']}: x{doc['median_ratio']:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
