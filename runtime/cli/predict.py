"""``cmp-face predict`` and ``cmp-face fbank``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli.args import (EXIT_ERROR, add_execution, add_max_bytes, add_models, add_workers, check_execution,
                              untrained_warning)
from runtime.errors import InputError
from runtime.plugins import Command



LIMIT_NAMES = (("max_bytes", "--max-bytes"),)  # a limit's name in messages: the option that sets it


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_predict_options(args: argparse.Namespace) -> None:
    """Everything that can be checked before models are opened or inputs read."""
    from runtime.atomic import check_writable
    from runtime.render import check_num_threads, check_size

    if args.size is not None:
        check_size(args.size, name="--size")
    check_num_threads()  # SIM3DR_NUM_THREADS, if set
    check_execution(args)
    sources = sum([bool(args.input), args.demo, args.mic is not None])
    if sources == 0:
        raise InputError("give an INPUT (audio file, .npy fbank or folder), --demo for the built-in "
                         "test voice, or --mic SECONDS")
    if sources > 1:
        raise InputError("give INPUT files, --demo or --mic, not several of them")
    if args.mic is not None:
        from runtime.microphone import check_seconds

        check_seconds(args.mic)
    check_writable(args.output)  # before models are built or any input is read


def predictor_spec(args: argparse.Namespace):
    """How to open the Predictor the execution and models arguments describe (models built when missing)."""
    from runtime.audio import DEFAULT_MAX_BYTES
    from runtime.cache import resolve_models
    from runtime.predict_files import PredictorSpec

    models = resolve_models(args.models, args.release, args.pipeline, args.epoch, _progress)
    return PredictorSpec(models, args.pipeline, args.device, args.threads, vad=not args.no_vad,
                         frontend=args.frontend, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
                         backend=args.backend, precision=args.precision, limit_names=LIMIT_NAMES)


def run_predict(args: argparse.Namespace) -> int:
    from runtime.inputs import plan_inputs
    from runtime.outputs import write_outputs

    _check_predict_options(args)
    jobs = plan_inputs(args.input, args.output) if args.input else None
    if jobs and (len(jobs) > 1 or jobs[0].batch):
        return _predict_many(args, jobs)
    predictor = predictor_spec(args).open()
    if args.demo:
        from runtime.demo_signal import demo_voice

        result = predictor.predict(demo_voice(), sample_rate=16000)
    elif args.mic is not None:
        from runtime.microphone import record

        result = predictor.predict(record(args.mic), sample_rate=16000)
    else:
        result = predictor.predict(jobs[0].source, sample_rate=args.sample_rate)
    written = write_outputs(result, args.output, args.size, args.ply, args.depth)
    if predictor.untrained:
        _progress(untrained_warning(args))
    stages = "  ".join(f"{k} {v:.1f} ms" for k, v in result.timings.items())
    print(f"{args.pipeline} pipeline ({predictor.models.describe()}): {stages}")
    if written.note():
        _progress(written.note())
    for path in written.paths:
        print(f"wrote {path}")
    return 0


def _predict_many(args: argparse.Namespace, jobs) -> int:
    """One output folder per input, mirroring the input tree; failures are listed at the end."""
    from runtime.models_folder import ModelsFolder
    from runtime.predict_files import OutputOptions, predict_jobs

    spec = predictor_spec(args)
    options = OutputOptions(args.size, args.ply, args.depth, args.sample_rate)
    outcomes = predict_jobs(spec, jobs, options, args.workers, debug=args.debug)
    if ModelsFolder.read(spec.models).untrained:
        _progress(untrained_warning(args))
    failed = [o for o in outcomes if o.error is not None]
    rerun = sum(o.rerun for o in outcomes)
    if rerun:
        _progress(f"note: replaced the outputs of an earlier run in {rerun} of the output folders")
    print(f"wrote {len(jobs) - len(failed)} of {len(jobs)} output folders under {args.output}")
    if failed:
        _progress(f"cmp-face: error: {len(failed)} of {len(jobs)} inputs failed:")
        for outcome in failed:
            if outcome.detail:  # --debug: the traceback
                _progress(outcome.detail.rstrip())
            _progress(f"  {outcome.source}: {outcome.error}")
        return EXIT_ERROR
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="*", type=Path, metavar="INPUT",
                   help="audio file (WAV, FLAC, ...), .npy fbank (T, 64), or a folder of them")
    p.add_argument("--demo", action="store_true", help="use the built-in synthetic voiced test signal")
    p.add_argument("--mic", type=float, metavar="SECONDS",
                   help="record SECONDS from the default microphone (needs the mic extra)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    add_models(p)
    add_execution(p)
    add_workers(p, "inputs predicted at once, each in a process of its own (default: one per core; 1: one after "
                   "the other, in this process)")
    p.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")
    add_max_bytes(p)
    p.add_argument("--sample-rate", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help="render size in pixels (default: the release's 120x120 "
                                            "overlap for unsupervised, 512 for supervised)")
    p.add_argument("--ply", action="store_true", help="also write OUT/mesh.ply (binary)")
    p.add_argument("--depth", action="store_true",
                   help="also write OUT/depth.png (16-bit, near is bright) and OUT/depth.npy (float32)")


def run_fbank(args: argparse.Namespace) -> int:
    import numpy as np

    from runtime.atomic import check_writable, replacing
    from runtime.audio import DEFAULT_MAX_BYTES
    from runtime.fbank import fbank_from_source

    if args.output.suffix != ".npy" or args.output.is_dir():
        raise InputError(f"{args.output}: the output must be a .npy file name")
    check_writable(args.output.parent)
    check_execution(args)
    fbank = fbank_from_source(args.input, sample_rate=args.sample_rate, vad=not args.no_vad,
                              max_bytes=args.max_bytes or DEFAULT_MAX_BYTES, limit_names=dict(LIMIT_NAMES))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(args.output) as tmp:
        np.save(tmp, fbank)
    print(f"wrote {args.output}: {fbank.shape[0]} frames x {fbank.shape[1]} filters, float32")
    return 0


def add_fbank_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("input", type=Path, help="an audio file (WAV, FLAC, OGG, MP3, ...)")
    f.add_argument("-o", "--output", type=Path, required=True, metavar="FEATS.npy",
                   help="where to write the (T, 64) float32 features")
    f.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")
    add_max_bytes(f)
    f.add_argument("--sample-rate", type=int, help=argparse.SUPPRESS)


PREDICT = Command(
    "predict", "predict a face mesh from a voice", add_predict_arguments, run_predict,
    description="Write OUT/mesh.obj, OUT/result.npz, OUT/render.png (and OUT/face.png and OUT/mesh_frontal.obj for "
                "the unsupervised pipeline; OUT/mesh.ply and OUT/depth.png on request). Several inputs or a folder: "
                "one output folder per input, mirroring the input tree (DIR/<id>/<utt>.wav -> OUT/<id>/<utt>/). "
                "A rerun replaces our own files in OUT and never touches other files.")
FBANK = Command("fbank", "write the release's normalised fbank of an audio file", add_fbank_arguments, run_fbank,
                description="The release's preprocessing (VAD, 64-filter log-mel, per-filter normalisation, tiling "
                            "to 1000 frames) of one audio file, as a (T, 64) float32 .npy.")
COMMANDS = (PREDICT, FBANK)
