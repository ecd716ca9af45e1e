"""``cmp-face evaluate`` and ``cmp-face analyze``: the release's own tools (ARE scoring, the
microphone demo's analysis)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from runtime.cli.args import add_execution, add_models, add_workers, check_execution, untrained_warning
from runtime.errors import CmpError, InputError
from runtime.metrics import DISTANCE_LABELS, DISTANCES, N_VERTICES
from runtime.plugins import Command

#: All four measurements this far from the mean suggest means in other units (e.g. micrometres).
UNITS_SUSPECT_PERCENT = 50


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, data: dict) -> Path:
    from runtime.atomic import replacing

    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise CmpError(f"{path.parent}: folder for the JSON output does not exist")
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from runtime.evaluation import evaluate_folders, load_keypoints

    keypoints = load_keypoints(args.keypoints) if args.keypoints else None
    check_execution(args)
    scores = evaluate_folders(args.pred, args.gt, keypoints, progress=_progress, workers=args.workers)
    print(f"ARE (absolute ratio error, the paper's Table 1 metric) over {scores.identities} identities "
          f"({scores.predictions} predictions); each identity is averaged over its predictions first")
    for name in DISTANCES:
        print(f"  {DISTANCE_LABELS[name]:<16} {scores.are[name]:.4f}")
    print(f"  {'mean':<16} {scores.are['mean']:.4f}")
    if scores.keypoint_error is not None:
        print(f"keypoint error {scores.keypoint_error:.4f} (normalised by sqrt(height * width) of the target)")
    if args.json:
        print(f"wrote {_write_json(args.json, scores.as_json())}")
    return 0


# --------------------------------------------------------------------------- analyze


def _models(args: argparse.Namespace) -> Path:
    from runtime.cache import resolve_models

    return resolve_models(args.models, args.release, args.pipeline, args.epoch, _progress)


def _predict(args: argparse.Namespace, source, sample_rate: Optional[int], models: Optional[Path] = None):
    """Run the Predictor; returns (frontal vertices, triangles, untrained)."""
    from runtime.predictor import Predictor

    models = models or _models(args)
    predictor = Predictor(models, args.pipeline, args.device, vad=not args.no_vad)
    result = predictor.predict(source, sample_rate=sample_rate)
    frontal = result.vertices_frontal if result.vertices_frontal is not None else result.vertices
    return np.asarray(frontal, np.float64), result.triangles, predictor.untrained


def _triangles_for(args: argparse.Namespace, mesh_path: Path, n_vertices: int) -> Optional[np.ndarray]:
    """Triangles for the figure of a mesh without faces: --models DIR, else a sibling mesh.obj."""
    from runtime.mesh_read import read_obj
    from runtime.models_folder import TRIANGLES, load_triangles

    if args.models:
        return load_triangles(Path(args.models) / TRIANGLES, n_vertices)
    sibling = mesh_path.with_name("mesh.obj")
    if sibling.is_file():
        v, t = read_obj(sibling)
        if len(v) == n_vertices:
            return t
    return None


def _analysis_input(args: argparse.Namespace) -> tuple[np.ndarray, Optional[np.ndarray], str, bool]:
    """(frontal vertices, triangles or None, description, untrained models)."""
    from runtime.mesh_read import npy_shape, read_mesh, read_obj

    if args.mic is not None:
        from runtime.microphone import record

        models = _models(args)  # a bad --release or --models is reported before the recording
        _progress(f"recording {args.mic:g} s from the default microphone ...")
        samples = record(args.mic, 16000)
        v, t, untrained = _predict(args, samples, 16000, models)
        return v, t, f"microphone ({args.mic:g} s)", untrained
    path: Path = args.input
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        v, t = read_obj(path, N_VERTICES)
        return v, (t if t is not None else _triangles_for(args, path, N_VERTICES)), str(path), False
    if suffix == ".npz" or (suffix == ".npy" and len(shape := npy_shape(path)) == 2 and shape[1] == 3):
        return read_mesh(path, N_VERTICES), _triangles_for(args, path, N_VERTICES), str(path), False
    v, t, untrained = _predict(args, path, None)  # audio, or a (T, 64) fbank .npy
    return v, t, str(path), untrained


def cmd_analyze(args: argparse.Namespace) -> int:
    from runtime.analysis import analyze, load_means

    if (args.input is None) == (args.mic is None):
        raise CmpError("give an INPUT (audio, fbank .npy, mesh .obj/.npy or result.npz) or --mic SECONDS, not both")
    check_execution(args)
    if args.figure:
        from runtime.analysis_figure import require_matplotlib

        require_matplotlib()  # fail before any work when the plot extra is missing
    means = load_means(args.means, N_VERTICES)
    vertices, triangles, source, untrained = _analysis_input(args)
    result = analyze(vertices, means)

    print(f"{source}")
    print(f"  gender     {result.gender:<8} (distance ||pred - mean|| / N: "
          + ", ".join(f"{k} {v:.4g}" for k, v in result.gender_distances.items()) + ")")
    print(f"  face type  {result.face_type:<8} ("
          + ", ".join(f"{k} {v:.4g}" for k, v in result.face_type_distances.items()) + ")")
    print(f"  {'measurement':<16} {'this face':>12} {'mean ' + result.gender:>12} {'difference':>11}")
    for name, m in result.measurements.items():
        print(f"  {DISTANCE_LABELS[name]:<16} {m['value']:>12.5g} {m['mean']:>12.5g} {m['percent']:>+10.2f}%")
    if all(abs(m["percent"]) > UNITS_SUSPECT_PERCENT for m in result.measurements.values()):
        _progress(f"WARNING: every measurement differs from the mean {result.gender} mesh by more than "
                  f"{UNITS_SUSPECT_PERCENT}%: are the mean meshes in the units of the predicted frontal mesh?")
    if untrained:
        _progress(untrained_warning(args))
    written = []
    if args.json:
        written.append(_write_json(args.json, {"input": source, **result.as_json()}))
    if args.figure:
        from runtime.analysis_figure import write_figure

        if triangles is None:
            raise CmpError(f"{args.input}: the figure needs the mesh's triangles: give an .obj with faces, "
                           "or --models DIR (its triangles.npy)")
        note = "UNTRAINED synthetic models: the face does not depend on the voice" if untrained else None
        written.append(write_figure(args.figure, vertices, triangles, result, note=args.note or note))
    for path in written:
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- parsers


def add_evaluate_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("--pred", type=Path, required=True, metavar="DIR",
                   help="predictions, one subfolder per identity (e.g. the output of 'cmp-face predict DIR -o OUT')")
    e.add_argument("--gt", type=Path, required=True, metavar="DIR", help="ground truth (.xyz, .npy or .obj)")
    e.add_argument("--keypoints", type=Path, metavar="FILE",
                   help="keypoints_sim.npy (indices into the flattened x,y,z coordinates): "
                        "also report the keypoint error")
    e.add_argument("--json", type=Path, metavar="OUT.json", help="write the scores as JSON")
    add_workers(e, "processes reading and scoring the meshes (default: one per core)")


def add_analyze_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("input", nargs="?", type=Path,
                   help="audio file, fbank .npy (T, 64), mesh .obj / .npy (53215, 3), or a result.npz "
                        "(its vertices_frontal when present)")
    a.add_argument("--mic", type=float, metavar="SECONDS", help="record this long from the default microphone "
                                                                "(needs the mic extra)")
    a.add_argument("--means", type=Path, required=True, metavar="DIR",
                   help="male, female, regular, slim, skinny, wide (.obj or .npy, 53215 vertices each)")
    a.add_argument("--json", type=Path, metavar="OUT.json", help="write the analysis as JSON")
    a.add_argument("--figure", type=Path, metavar="OUT.png",
                   help="write a figure: the face coloured by distance to the mean, measurements drawn "
                        "(needs the plot extra)")
    a.add_argument("--note", help=argparse.SUPPRESS)  # a caveat printed on the figure (docs examples)
    add_models(a, models_help="models folder written by 'cmp-face export' (also the triangles for a .npy mesh)")
    add_execution(a, backend=False, precision=False, threads=False, frontend=False)
    a.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")


EVALUATE = Command(
    "evaluate", "score predicted meshes against ground truth (ARE)", add_evaluate_arguments, cmd_evaluate,
    description="The paper's ARE metric (Table 1): per identity averaged over its predictions, then over "
                "identities. PRED/<identity>/**/*.obj (or (53215, 3) .npy; mesh_frontal.obj replaces mesh.obj in "
                "its folder) against GT/<identity>.xyz or GT/<identity>/<one file>.xyz.")
ANALYZE = Command(
    "analyze", "gender, face type and four measurements of a face", add_analyze_arguments, cmd_analyze,
    description="The microphone demo's analysis: nearest mean male/female and wide/skinny/regular/slim mesh by "
                "||pred - mean|| / N, and the forehead, cheek-to-cheek, ear-to-ear and midline distances as percent "
                "difference from the chosen gender's mean mesh, on the frontal mesh.")
COMMANDS = (EVALUATE, ANALYZE)
