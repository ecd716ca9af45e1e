"""How fast is the voice frontend? fbank (log_mel + normalise) of a 10 s utterance, one core.

    python benchmarks/fbank_speed.py [--seconds 10] [--repeats 50] [--no-onnx]

Threads are pinned to 1 (OMP/OPENBLAS/MKL/... set before numpy is imported). Prints the
median time of the vectorised numpy fbank and its share of the audio's duration, the
silence removal (VAD) separately, a per-frame loop written the way the release computes
it (one rfft per frame) for comparison in the same run, and, if onnx/onnxruntime are
installed, the ONNX frontend on ONNX Runtime's CPU provider (one thread).
The input is the real recordings of ../shared/data/voxceleb_wav concatenated and cut to
the requested length when they are present, else the synthetic demo voice.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import fbank  # noqa: E402
from runtime.audio import load_audio  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "voxceleb_wav"


def utterance(seconds: float) -> tuple[np.ndarray, str]:
    n = int(round(seconds * 16000))
    wavs = sorted(DATA.glob("*.wav"))
    if wavs:
        parts, total = [], 0
        while total < n:
            for p in wavs:
                parts.append(load_audio(p))
                total += len(parts[-1])
        return np.concatenate(parts)[:n], f"{len(wavs)} real recordings from {DATA}, concatenated"
    from runtime.demo_signal import demo_voice
    return demo_voice(seconds), "synthetic demo voice (real recordings not found)"


def per_frame_log_mel(samples: np.ndarray) -> np.ndarray:
    """The release's way: a Python loop over frames, one rfft each."""
    x = samples.astype(np.float64)
    fb = fbank.mel_filterbank()
    window = np.hamming(400)
    prior = 0.0
    rows = []
    for k in range(int(len(x) / 160 + 1)):
        frame = x[160 * k:160 * k + 400]
        if len(frame) < 400:
            frame = np.resize(frame, 400)
        y = np.append(frame[0] - 0.97 * prior, frame[1:] - 0.97 * frame[:-1])
        prior = frame[-1]
        spec = np.fft.rfft(y * window, 1024)
        power = spec.real * spec.real + spec.imag * spec.imag
        rows.append(np.log(np.dot(power, fb).clip(1e-5, np.inf)))
    return np.array(rows).astype(np.float32)


def timeit(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def line(name: str, times: list[float], seconds: float) -> float:
    med = statistics.median(times) * 1e3
    print(f"  {name:<44} median {med:8.2f} ms  min {min(times) * 1e3:8.2f} ms  "
          f"= {100 * med / 1e3 / seconds:6.3f} % of the audio  ({len(times)} runs)")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--loop-repeats", type=int, default=5, help="runs of the slow per-frame loop")
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()

    x, source = utterance(args.seconds)
    seconds = len(x) / 16000
    print(f"fbank of a {seconds:.2f} s utterance ({len(x)} samples, {fbank.num_frames(len(x))} frames); "
          f"input: {source}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}; threads pinned to 1")

    fast = line("numpy fbank (log_mel + normalise)", timeit(lambda: fbank.normalise(fbank.log_mel(x)),
                                                            args.repeats, args.warmup), seconds)
    line("  of which log_mel", timeit(lambda: fbank.log_mel(x), args.repeats, args.warmup), seconds)
    try:
        from runtime.vad import remove_silence
        line("VAD (webrtcvad collector), separately", timeit(lambda: remove_silence(x), args.repeats,
                                                             args.warmup), seconds)
    except ImportError as exc:
        print(f"  VAD skipped: {exc}")
    slow = line("per-frame loop (release style) + normalise",
                timeit(lambda: fbank.normalise(per_frame_log_mel(x)), args.loop_repeats, 1), seconds)
    print(f"  vectorised is {slow / fast:.1f}x faster than the per-frame loop "
          f"(max abs difference {np.abs(fbank.log_mel(x) - per_frame_log_mel(x)).max():.1e} in log-mel)")

    if not args.no_onnx:
        try:
            import onnxruntime as ort

            from runtime.frontend_graph import build_frontend
        except ImportError as exc:
            print(f"  ONNX frontend skipped: {exc}")
            return
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(build_frontend().SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        feed = {"samples": x.astype(np.float32)[None]}
        line("ONNX frontend, onnxruntime CPU, 1 thread", timeit(lambda: sess.run(None, feed), args.repeats,
                                                               args.warmup), seconds)


if __name__ == "__main__":
    main()
