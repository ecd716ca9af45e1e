"""The accuracy report: each reduced precision in a models folder against FP32, on held-out speech.

    python -m calibration.report --models DIR (--audio DIR | --fbanks DIR) [-o OUT]

Per precision (``precisions`` in ``models.json``), the files it serves, each judged against a bar:
the encoder's embedding cosine; each decoder fed the same FP32 embedding (params error); end to
end (the precision's encoder into its decoder): the change of the paper's four ARE ratios and
their mean (``runtime.metrics``) against :data:`calibration.quality.ARE_BAR`, with the vertex
error in mm on a face scaled to 140 mm ear to ear (supervised) or in pixels (unsupervised, image
frame); the fused voice -> mesh graph against the FP32 one. Beside it, the sensitivity: the FP32
decoder fed FP32 embeddings turned by the same angle in a random direction, i.e. how much the
network itself amplifies an embedding change that small. ``cmp-face accuracy`` exits 1 when
anything served misses its bar (``--report-only``: 0).
FP16 files are measured with their FP16 storage emulated (:func:`calibration.fp16.emulate`).
Writes ``accuracy.md``, ``accuracy.json`` and ``accuracy.png`` (matplotlib, when installed).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from calibration import graph as G
from calibration import inputs as I
from calibration.fp16 import PARAM_OUTPUTS, emulate
from calibration.quality import ARE_BAR, BARS, min_cosine, relative_error
from runtime import metrics
from runtime.atomic import replacing
from runtime.errors import ModelError
from runtime.models_folder import MANIFEST, ModelsFolder

EAR_MM = 140.0  # ear-to-ear width of the face the mm figures are scaled to
UNTRAINED_NOTE = ("The synthetic weights are UNTRAINED: their decoders amplify tiny embedding changes far more "
                  "than trained ones should. Run this report on your own weights and held-out speech; a change "
                  "of the mean ARE within 5e-4 (a tenth of the paper's gain over its baseline) is a reasonable "
                  "acceptance bar.")


def _run(models: Path, file: str, feeds: list[dict], precision: str = "fp32") -> list[dict[str, np.ndarray]]:
    """Outputs of ``file`` for each feed; FP16 files run with their FP16 storage emulated
    (ONNX Runtime's CPU provider would compute them in FP32 and hide the rounding)."""
    model = onnx.load(str(models / file))
    s = G.session(emulate(model) if precision == "fp16" and file.endswith("_fp16.onnx") else model)
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(names, f))) for f in feeds]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _turned(e: np.ndarray, cosines: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row of ``e`` turned by ``arccos(cosine)`` towards a random orthogonal direction."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(e)
    for i, (row, c) in enumerate(zip(e.astype(np.float64), np.clip(cosines, -1.0, 1.0))):
        u = rng.standard_normal(row.shape)
        u -= u.dot(row) / row.dot(row) * row
        u /= np.linalg.norm(u)
        norm = np.linalg.norm(row)
        out[i] = norm * (c * row / norm + np.sqrt(1.0 - c * c) * u)
    return out.astype(np.float32)


def _are(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(B, 5): |ratio change| of the four distances and their mean, per utterance."""
    rows = []
    for p, r in zip(pred, ref):
        e = metrics.ratio_errors(p, r)
        rows.append([e[k] for k in metrics.DISTANCES] + [float(np.mean(list(e.values())))])
    return np.array(rows)


def evaluate(models: Path, inputs: I.InputSet, progress: Callable[[str], None] = print) -> dict:
    """Every precision ``models.json`` lists, judged as served (the files it names). ``report["failures"]``
    lists each bar missed, one line each."""
    models = Path(models)
    folder = ModelsFolder.read(models)
    manifest = folder.manifest
    precisions = manifest.get("precisions") or {}
    if not precisions:
        raise ModelError(f"{models}: {MANIFEST} records no FP16 or INT8 models; write them first "
                         "(python -m calibration --models DIR ...)")
    feeds = [u.encoder_feed() for u in inputs.utterances]
    e32 = np.concatenate([r["embedding"] for r in _run(models, "encoder.onnx", feeds)])
    report: dict = {"models": str(models), "inputs": inputs.source, "untrained": bool(manifest.get("synthetic")),
                    "note": UNTRAINED_NOTE if manifest.get("synthetic") else None, "are_bar": ARE_BAR,
                    "precisions": {}, "failures": []}
    ref = {p: _run(models, f"decoder_{p}.onnx", [{"embedding": e32}])[0] for p in folder.pipelines}
    for precision, entry in precisions.items():
        graphs = entry.get("graphs", {})
        used = entry.get("calibrated_on") or entry.get("ranges_from")
        out: dict = {"held_out": used != inputs.source, "calibrated_on": used}
        if used == inputs.source:
            progress(f"WARNING: {precision} was calibrated on these same inputs ({used}); they are not held out")
        enc_file = graphs.get("encoder", {}).get("file", "encoder.onnx")
        eq = np.concatenate([r["embedding"] for r in _run(models, enc_file, feeds, precision)])
        cos = _cosines(eq.astype(np.float64), e32.astype(np.float64))
        bar = BARS.get(precision, BARS["int8"])
        out["encoder"] = {"file": enc_file, "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                          "bar": bar["cosine"], "ok": bool(cos.min() >= bar["cosine"])}
        progress(f"[{precision}] encoder ({enc_file}): embedding cosine min {cos.min():.7f} (bar {bar['cosine']})"
                 f"{'' if out['encoder']['ok'] else ': FAIL'}")
        if not out["encoder"]["ok"]:
            report["failures"].append(f"{precision} encoder: embedding cosine {cos.min():.7f} < {bar['cosine']}")
        for pipeline, want in ref.items():
            key = f"decoder_{pipeline}"
            out[key] = _decoder_row(models, pipeline, graphs.get(key, {}).get("file", f"{key}.onnx"), precision,
                                    bar, want, e32, eq, cos)
            row = out[key]
            progress(f"[{precision}] {key} ({row['file']}): {_console(row)}")
            if not row["ok"]:
                report["failures"].append(f"{precision} {key}: {_failed(row)}")
        for pipeline in folder.pipelines:
            key = f"voice2mesh_{pipeline}"
            if key in graphs:
                out[key] = _fused_row(models, graphs[key], key, precision, bar, inputs)
                progress(f"[{precision}] {key} ({out[key]['file']}): {out[key]['summary']}")
                if not out[key]["ok"]:
                    report["failures"].append(f"{precision} {key}: {out[key]['summary'].removesuffix(': FAIL')}")
        report["precisions"][precision] = out
    return report


def _decoder_row(models: Path, pipeline: str, file: str, precision: str, bar: dict, want: dict, e32: np.ndarray,
                 eq: np.ndarray, cos: np.ndarray) -> dict:
    """A decoder as served: its own bar (fed FP32 embeddings), then end to end (fed the precision's
    embeddings): vertex errors, the ARE change against :data:`ARE_BAR`, and the sensitivity."""
    local = _run(models, file, [{"embedding": e32}], precision)[0]
    e2e = _run(models, file, [{"embedding": eq}], precision)[0]
    sens = _run(models, f"decoder_{pipeline}.onnx", [{"embedding": _turned(e32, cos)}])[0]
    params_err = max(relative_error(local[n], want[n]) for n in PARAM_OUTPUTS if n in want)
    e2e_params = max(relative_error(e2e[n], want[n]) for n in PARAM_OUTPUTS if n in want)
    v32, vq = want["vertices"].astype(np.float64), e2e["vertices"].astype(np.float64)
    per_vertex = np.linalg.norm(vq - v32, axis=2)  # (B, N)
    row = {"file": file, "params_error": params_err, "params_bar": bar["params"],
           "local_ok": bool(params_err <= bar["params"]), "end_to_end_params_error": e2e_params,
           "vertex_error_max": float(per_vertex.max()), "vertex_error_mean": float(per_vertex.mean())}
    landmarks = metrics.has_landmarks(v32.shape[1])
    if pipeline == "unsupervised":
        row |= {"vertex_error_px_max": float(per_vertex.max()), "vertex_error_px_mean": float(per_vertex.mean())}
    elif landmarks:
        ear = np.array([metrics.measurements(v)["ear"] for v in v32])
        mm = per_vertex * (EAR_MM / ear)[:, None]
        row |= {"vertex_error_mm_max": float(mm.max()), "vertex_error_mm_mean": float(mm.mean())}
    if landmarks:
        are, are_s = _are(vq, v32), _are(sens["vertices"].astype(np.float64), v32)
        row["are_change"] = {k: float(are[:, i].max()) for i, k in enumerate([*metrics.DISTANCES, "mean"])}
        row["are_change_mean_over_inputs"] = float(are[:, -1].mean())
        row["sensitivity_are_change"] = float(are_s[:, -1].mean())
        row["end_to_end"] = {"measure": "mean ARE change", "value": row["are_change_mean_over_inputs"],
                             "bar": ARE_BAR}
    else:  # e.g. a checkpoint folder with its own (non-BFM) basis: no landmarks to measure
        row |= {"are_change": None, "are_change_mean_over_inputs": None, "sensitivity_are_change": None,
                "are_note": f"not measured: the mesh has {v32.shape[1]} vertices, not the release's "
                            f"3DMM topology ({metrics.N_VERTICES}) whose vertex indices the ARE and "
                            "the ear-to-ear mm scale use"}
        row["end_to_end"] = {"measure": "params rel. error", "value": e2e_params, "bar": bar["params"]}
    row["end_to_end"]["ok"] = bool(row["end_to_end"]["value"] <= row["end_to_end"]["bar"])
    row["ok"] = row["local_ok"] and row["end_to_end"]["ok"]
    row["_per_vertex"] = per_vertex.ravel()
    return row
def _fused_row(models: Path, entry: dict, graph: str, precision: str, bar: dict, inputs: I.InputSet) -> dict:
    """The fused voice -> mesh graph as served: embedding cosine and params error end to end against
    the FP32 fused graph, on the inputs' audio (fbank inputs have none: not measured)."""
    file = entry.get("file") or f"{graph}.onnx"
    if file == f"{graph}.onnx":
        why = entry.get("kept_fp32", "listed as FP32")
        return {"file": file, "ok": True, "fp32_serves": True, "summary": f"the FP32 graph serves ({why})"}
    if any(u.samples is None for u in inputs.utterances):
        return {"file": file, "ok": True, "measured": False,
                "summary": "not measured: these inputs are fbanks, the fused graph takes audio"}
    feeds = [u.samples_feed() for u in inputs.utterances]
    got, want = _run(models, file, feeds, precision), _run(models, f"{graph}.onnx", feeds)
    cosine = min(min_cosine(g["embedding"], w["embedding"]) for g, w in zip(got, want))
    params = max(relative_error(g[n], w[n]) for g, w in zip(got, want) for n in PARAM_OUTPUTS if n in w)
    ok = cosine >= bar["cosine"] and params <= bar["params"]
    summary = (f"end to end embedding cosine {cosine:.7f} (bar >= {bar['cosine']}), params rel. error {params:.3g} "
               f"(bar <= {bar['params']}){'' if ok else ': FAIL'}")
    return {"file": file, "ok": bool(ok), "measured": True, "cosine_min": cosine, "cosine_bar": bar["cosine"],
            "params_error": params, "params_bar": bar["params"], "summary": summary}


def _vertex_text(row: dict) -> str:
    unit = next((u for u in ("mm", "px") if f"vertex_error_{u}_max" in row), None)
    if unit:
        return f"{row[f'vertex_error_{unit}_max']:.3g} / {row[f'vertex_error_{unit}_mean']:.3g} {unit}"
    return f"{row['vertex_error_max']:.3g} / {row['vertex_error_mean']:.3g} (model units)"


def _end_to_end_text(row: dict) -> str:
    e = row["end_to_end"]
    return f"{e['measure']} {e['value']:.3g} (bar <= {e['bar']:g})"


def _failed(row: dict) -> str:
    parts = [] if row["local_ok"] else [f"params rel. error {row['params_error']:.3g} > {row['params_bar']:g}"]
    if not row["end_to_end"]["ok"]:
        parts.append(f"end to end {row['end_to_end']['measure']} {row['end_to_end']['value']:.3g} > "
                     f"{row['end_to_end']['bar']:g}")
    return "; ".join(parts)


def _console(row: dict) -> str:
    sens = (f" (the FP32 decoder, same embedding angle: {row['sensitivity_are_change']:.3g})"
            if row["are_change"] else "")
    return (f"params rel. error {row['params_error']:.3g} (bar {row['params_bar']:g}); end to end: "
            f"{_end_to_end_text(row)}{sens}, vertex error max / mean {_vertex_text(row)}"
            + ("" if row["ok"] else ": FAIL"))


def markdown(report: dict) -> str:
    lines = ["# Accuracy of the reduced-precision models against FP32", "",
             f"Models: `{report['models']}`  ", f"Held-out inputs: {report['inputs']}", ""]
    if report["note"]:
        lines += [f"> **{report['note']}**", ""]
    verdict = "PASS" if not report["failures"] else f"FAIL ({len(report['failures'])} bar(s) missed)"
    lines += [f"**Verdict: {verdict}.**", "",
              "| precision | graph (file served) | own bar | measured | end to end | vertex error max / mean "
              "| sensitivity: FP32 decoder, same angle | verdict |", "|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []  # after the table: a line inside it would end it
    for precision, out in report["precisions"].items():
        enc = out["encoder"]
        lines.append(f"| {precision} | encoder (`{enc['file']}`) | cosine >= {enc['bar']} | {enc['cosine_min']:.7f} "
                     f"| | | | {'PASS' if enc['ok'] else 'FAIL'} |")
        for key, row in out.items():
            if key.startswith("decoder_"):
                sens = f"{row['sensitivity_are_change']:.3g}" if row["are_change"] else "-"
                lines.append(f"| {precision} | {key} (`{row['file']}`) | params <= {row['params_bar']:g} "
                             f"| {row['params_error']:.3g} | {_end_to_end_text(row)} | {_vertex_text(row)} | {sens} "
                             f"| {'PASS' if row['ok'] else 'FAIL'} |")
                if not row["are_change"]:
                    notes.append(f"(*) {precision} {key}: ARE {row['are_note']}; end to end judged on the params.")
            elif key.startswith("voice2mesh_"):
                lines.append(f"| {precision} | {key} (`{row['file']}`) | | | {row['summary'].removesuffix(': FAIL')} | | | "
                             f"{'PASS' if row['ok'] else 'FAIL'} |")
        if not out["held_out"]:
            notes.append(f"**{precision} was calibrated on these inputs: they are not held out.**")
    lines += ["", *(f"{n}  " for n in notes)]
    lines += ["", "Own bar: the encoder's embedding cosine; each decoder fed the same FP32 embedding (params error "
              "relative to the largest parameter). End to end: the precision's encoder into its decoder, held to a "
              f"change of the mean ARE (averaged over the inputs) of at most {report['are_bar']:g}, a tenth of the "
              "paper's gain over its baseline (the params error where the mesh has no BFM landmarks); the fused "
              "voice -> mesh graph against the FP32 one. Sensitivity: the FP32 decoder fed FP32 embeddings turned "
              "by the same angle as the precision's encoder turns them, in a random direction. FP16 files are run "
              "with their FP16 storage emulated in FP32 (ONNX Runtime's CPU provider would hide the rounding).", ""]
    return "\n".join(lines)


def figure(report: dict, path: Path) -> bool:
    """Per-vertex end-to-end error distributions per precision; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = sorted({k for out in report["precisions"].values() for k in out if k.startswith("decoder_")})
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5 * max(len(keys), 1), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for precision, out in report["precisions"].items():
            if key in out:
                err = np.maximum(out[key]["_per_vertex"], 1e-12)
                ax.hist(np.log10(err), bins=60, histtype="step", label=precision)
        ax.set_title(key)
        ax.set_xlabel("log10 per-vertex error (model units)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(report: dict, out: Path) -> list[Path]:
    """``accuracy.md``, ``accuracy.json`` and (with matplotlib) ``accuracy.png`` in ``out``, each
    written whole under a temporary name, then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with replacing(out / "accuracy.png") as tmp:
        if figure(report, tmp):
            written.append(out / "accuracy.png")
    for out_ in report["precisions"].values():
        for row in out_.values():
            if isinstance(row, dict):
                row.pop("_per_vertex", None)
    for name, text in (("accuracy.json", json.dumps(report, indent=2) + "\n"), ("accuracy.md", markdown(report))):
        with replacing(out / name) as tmp:
            tmp.write_text(text)
    return [out / "accuracy.md", out / "accuracy.json", *written]


def main(argv: list[str] | None = None) -> int:
    """``python -m calibration.report`` (= ``cmp-face accuracy``, defined in calibration.cli, which
    imports this module to run it: looked up by name, not imported back)."""
    from runtime.cli.shell import run_program
    from runtime.plugins import registered_command

    return run_program(registered_command("accuracy"), argv, "python -m calibration.report")


if __name__ == "__main__":
    sys.exit(main())
