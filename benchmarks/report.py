"""The benchmarks' one report writer (JSON document, Markdown table, PNG plot, all-or-nothing; where
results go), and the latency harness's own table and plot."""
from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Callable

from benchmarks.machine import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def results_folder(out: Path | None, machine: str, kind: str | None = None, full_run: bool = True) -> Path:
    """Where a benchmark writes: ``out`` when given; else ``benchmarks/results/<machine>[/<kind>]``
    for a full run, and a new temporary folder for a smoke test (``--quick``), so that a quick run
    never overwrites the committed results of a machine."""
    if out is not None:
        return Path(out)
    if not full_run:
        return Path(tempfile.mkdtemp(prefix=f"cmp-bench-{kind or 'latency'}-"))
    return RESULTS / machine / kind if kind else RESULTS / machine


def write_results(out: Path, stem: str, doc: dict, markdown_text: str,
                  plot: Callable[[dict, Path], object] | None = None) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and (with matplotlib) ``<stem>.png`` in ``out``, each written
    all-or-nothing; the paths written. Without matplotlib the document says why there is no plot."""
    from runtime.atomic import replacing

    out.mkdir(parents=True, exist_ok=True)
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            plot, doc["png"] = None, f"not written: {exc} (pip install matplotlib)"
    written = []
    for name, text in ((f"{stem}.json", json.dumps(doc, indent=1) + "\n"), (f"{stem}.md", markdown_text)):
        with replacing(out / name) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    if plot is not None:
        with replacing(out / f"{stem}.png") as tmp:
            plot(doc, tmp)
        if (out / f"{stem}.png").exists():
            written.append(out / f"{stem}.png")
    return written

STAGE_ORDER = [
    ("decode_wav16k_mono", "audio decode, 16 kHz mono WAV"),
    ("decode_wav44k_stereo", "audio decode + resample, 44.1 kHz stereo WAV"),
    ("vad", "VAD (silence removal)"),
    ("logmel", "log-mel + normalise"),
    ("encoder", "encoder"),
    ("decoder_supervised", "decoder, supervised (+ mesh)"),
    ("decoder_unsupervised", "decoder, unsupervised (+ mesh, pose)"),
    ("mesh_supervised", "mesh reconstruction, supervised"),
    ("mesh_unsupervised", "mesh reconstruction + alignment, unsupervised"),
    ("render_512", "lit render, 512x512"),
    ("render_overlap_120", "overlap render, 120x120"),
    ("e2e_voice2mesh_supervised", "**voice -> mesh, supervised**"),
    ("e2e_voice2mesh_unsupervised", "**voice -> mesh, unsupervised**"),
    ("e2e_voice2image_supervised", "**voice -> image, supervised (512)**"),
    ("e2e_voice2image_unsupervised", "**voice -> image, unsupervised (120 overlap)**"),
]
STAGE_LABEL = dict(STAGE_ORDER)

# (name, stage, target ms, the figure measured before for the release-style path)
TARGETS = [
    ("voice -> mesh, supervised", "e2e_voice2mesh_supervised", 10.0, 35.0),
    ("voice -> mesh, unsupervised", "e2e_voice2mesh_unsupervised", 25.0, 77.0),
    ("lit render, 53215 vertices, 512x512", "render_512", 10.0, 47.0),
]


def format_number(x: float | None, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def _label(doc: dict, bid: str) -> str:
    for b in doc["backends"]:
        if b["id"] == bid:
            return b["label"]
    return bid


def _short(doc: dict, bid: str) -> str:
    """A table-width name: 'release-style', 'ORT CPU FP32', 'ORT CPU FP32, ONNX frontend', ..."""
    label = _label(doc, bid)
    if bid == doc.get("baseline"):
        return label.split(" (")[0]
    return label.replace("ONNX Runtime", "ORT")


def fp32_twins(doc: dict) -> dict[str, str]:
    """Reduced-precision backend id -> the FP32 backend of the same provider in this run
    (``ort-cpu-int8`` -> ``ort-cpu-fp32``), for the same-run precision ratios."""
    ids = {b["id"] for b in doc["backends"]}
    twins = {}
    for bid in ids:
        twin = re.sub(r"-(fp16|int8)(?=-|$)", "-fp32", bid)
        if twin != bid and twin in ids:
            twins[bid] = twin
    return twins


def markdown(doc: dict) -> str:
    m, v = doc["machine"], doc["versions"]
    base = doc["baseline"]
    ours = [b["id"] for b in doc["backends"] if b["kind"] == "ours"]
    inp = doc["input"]
    lines = [
        f"# Latency: {doc['machine_name']}",
        "",
        f"{doc['date']} · {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['ram_gib']:.0f} GiB) · {m['os']}"
        + (f" · GPU: {m['gpu']}" if m.get("gpu") else ""),
        f"python {v['python']}, numpy {v['numpy']}, onnxruntime {v['onnxruntime']}, torch {v['torch']} · "
        f"threads pinned to **{doc['threads']}** (ORT intra-op, torch, OpenMP/BLAS, Sim3DR) · "
        f"git {doc['git']} · {'QUICK (smoke test, few repetitions)' if doc['quick'] else 'full run'}",
        f"Input: {inp['description']}: {inp['seconds']:.2f} s, {inp['voiced_seconds']:.2f} s after VAD, "
        f"{inp['fbank_frames']} fbank frames into the encoder. Load average at start/end: "
        f"{doc['load_average']['start'][0]:.2f} / {doc['load_average']['end'][0]:.2f}.",
        f"Reproduce: `{doc['command']}`",
        "",
    ]
    if doc.get("untrained"):
        lines += ["Models: the synthetic pack (release shapes and sizes, untrained weights): speed is "
                  "representative, outputs are not.", ""]

    # --- targets
    lines += ["## Targets (batch 1, p50; earlier figures for the release-style path in brackets)", "",
              "| target | limit | release-style, measured | backend | p50 | p90 | speed-up | met |",
              "|---|---:|---:|---|---:|---:|---:|---|"]
    for t in doc["targets"]:
        base_cell = f"{format_number(t['baseline_p50_ms'])} ms (~{format_number(t['reference_release_ms'])})" if t["baseline_p50_ms"] \
            else f"not run (~{format_number(t['reference_release_ms'])})"
        for b in ours:
            r = t["ours"].get(b)
            if not r:
                continue
            met = "yes" if r["met"] else f"**no** (+{format_number(r['p50_ms'] - t['target_ms'])} ms)"
            lines.append(f"| {t['name']} | <= {format_number(t['target_ms'])} ms | {base_cell} | {_short(doc, b)} | "
                         f"{format_number(r['p50_ms'])} ms | {format_number(r['p90_ms'])} ms | "
                         f"{'x' + format_number(r['ratio']) if r['ratio'] else '-'} | {met} |")
    lines.append("")

    # --- stages
    twins = fp32_twins(doc)
    lines += ["## Latency by stage (batch 1, ms)", "",
              "| stage | backend | p50 | p90 | p99 | mean | n | speed-up vs baseline (p50) | time vs FP32 (p50) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sid, label in STAGE_ORDER:
        rows = [r for r in doc["stages"] if r["stage"] == sid]
        p50 = {r["backend"]: r["p50_ms"] for r in rows}
        for r in rows:
            twin = p50.get(twins.get(r["backend"]))
            lines.append(f"| {label} | {_short(doc, r['backend'])} | {format_number(r['p50_ms'])} | {format_number(r['p90_ms'])} | "
                         f"{format_number(r['p99_ms'])} | {format_number(r['mean_ms'])} | {r['n']} | "
                         f"{'x' + format_number(r['ratio']) if r.get('ratio') else '-'} | "
                         f"{format_number(r['p50_ms'] / twin) + 'x' if twin else '-'} |")
    if twins:
        lines += ["", "Time vs FP32: p50 over the p50 of the FP32 backend of the same provider in this run. Each "
                      "backend runs in its own process, one after the other, so these ratios carry the machine's "
                      "drift between processes; `benchmarks/precision_speed.py` measures them interleaved."]
    lines.append("")
    lines += ["What is inside each row:", ""]
    for sid, _ in STAGE_ORDER:
        groups: dict[str, list[str]] = {}
        for r in doc["stages"]:
            if r["stage"] == sid:
                groups.setdefault(r["what"], []).append(_short(doc, r["backend"]))
        for u in doc["unavailable"]:
            if u["stage"] == sid:
                groups.setdefault(f"not measured: {u['reason']}", []).append(_short(doc, u["backend"]))
        if groups:
            lines.append(f"- `{sid}`: " + "; ".join(f"{' / '.join(names)}: {what}" for what, names in groups.items()))
    lines.append("")

    # --- throughput
    lines += ["## Throughput (utterances per second; batch of identical-length utterances)", "",
              "`models` = encoder + decoder (incl. mesh) from fbank; `e2e` = int16 samples -> mesh "
              "(VAD + fbank per utterance, then batched networks).", ""]
    bids = ([base] if base else []) + ours
    head = "| kind | pipeline | utterance | batch | " + " | ".join(f"{_short(doc, b)} utt/s (ms/batch)"
                                                               for b in bids)
    head += " | " + " | ".join(f"speed-up, {_short(doc, b)}" for b in ours) if base else ""
    head += "".join(f" | {_short(doc, b)} vs FP32" for b in ours if b in twins) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    keys = sorted({(r["kind"], r["pipeline"], r["seconds"], r["batch"]) for r in doc["throughput"]},
                  key=lambda k: (k[0] != "models", k[1], k[2], k[3]))
    for k in keys:
        cells = [k[0], k[1], f"{k[2]:g} s", str(k[3])]
        rows = {r["backend"]: r for r in doc["throughput"]
                if (r["kind"], r["pipeline"], r["seconds"], r["batch"]) == k}
        for b in bids:
            r = rows.get(b)
            cells.append(f"{format_number(r['utt_per_s'], 1)} ({format_number(r['p50_ms'])})" if r else "-")
        if base:
            for b in ours:
                r = rows.get(b)
                cells.append(f"x{format_number(r['ratio'])}" if r and r.get("ratio") else "-")
        for b in (b for b in ours if b in twins):
            r, t = rows.get(b), rows.get(twins[b])
            cells.append(f"x{format_number(r['utt_per_s'] / t['utt_per_s'])}" if r and t else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    # --- memory, threads, skipped, parity
    lines += ["## Peak memory and threads (one process per backend)", "",
              "| backend | peak RSS, batch-1 rows (MiB) | peak RSS, whole run (MiB) | threads | torch imported | "
              "measured in | other processes' CPU share meanwhile |", "|---|---:|---:|---|---|---:|---:|"]
    noisy = []
    for b in doc["backends"]:
        th = ", ".join(f"{k}={v}" for k, v in b["threads"].items() if k != "env" and k != "providers")
        load = (b.get("machine_load") or {}).get("other_processes_cpu_share")
        if load is not None and load > 0.05:
            noisy.append(b["label"])
        b1 = b.get("peak_rss_batch1_mib")
        lines.append(f"| {b['label']} | {'-' if b1 is None else f'{b1:.0f}'} | {b['peak_rss_mib']:.0f} | {th} | {'yes' if b['torch_imported'] else 'no'}"
                     f" | {b['wall_s']:.0f} s | {'-' if load is None else f'{100 * load:.1f}%'} |")
    if noisy:
        lines += ["", f"**Warning**: other processes used more than 5% of the CPUs while {', '.join(noisy)} "
                      "ran: those numbers are disturbed (re-run on a quiet machine)."]
    lines += ["", "## Not measured", ""]
    for s in doc["skipped"]:
        lines.append(f"- `{s['backend']}`: {s['reason']}")
    if doc.get("parity"):
        lines += ["", "## Same inputs, same outputs (baseline vs each backend)", ""]
        for bid, p in doc["parity"].items():
            lines.append(f"- {_label(doc, bid)}: " + ", ".join(f"{k} {v}" for k, v in p.items()))
    lines.append("")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {(r["stage"], r["backend"]): r for r in doc["stages"]}
    bids = [b["id"] for b in doc["backends"]]
    parts = [("vad", "VAD", "#9e9e9e"), ("logmel", "log-mel", "#4e79a7"), ("encoder", "encoder", "#f28e2b"),
             ("decoder", "decoder (+mesh)", "#e15759"), ("render", "render", "#59a14f")]
    render_of = {"supervised": "render_512", "unsupervised": "render_overlap_120"}

    fig = plt.figure(figsize=(12, 10.5), constrained_layout=True)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.15, 1])
    ax = fig.add_subplot(gs[0, :])
    labels, y = [], 0
    for pipe in ("supervised", "unsupervised"):
        for bid in bids:
            left = 0.0
            seg_ok = False
            for key, name, color in parts:
                sid = {"decoder": f"decoder_{pipe}", "render": render_of[pipe]}.get(key, key)
                r = stages.get((sid, bid))
                if not r:
                    continue
                seg_ok = True
                ax.barh(y, r["p50_ms"], left=left, color=color, edgecolor="white", linewidth=0.5,
                        label=name if y == 0 else None)
                if r["p50_ms"] > 2.5:
                    ax.text(left + r["p50_ms"] / 2, y, format_number(r["p50_ms"], 1), ha="center", va="center",
                            fontsize=7, color="white")
                left += r["p50_ms"]
            if not seg_ok:
                continue
            e2e = stages.get((f"e2e_voice2image_{pipe}", bid))
            if e2e:
                ax.plot([e2e["p50_ms"]], [y], marker="D", color="black", markersize=5,
                        label="measured end to end" if y == 0 else None)
                ax.text(max(left, e2e["p50_ms"]) + 1.5, y, f"end to end {format_number(e2e['p50_ms'], 1)} ms", va="center",
                        fontsize=8)
            labels.append(f"{pipe}\n{_label(doc, bid)}")
            y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms (p50, batch 1)")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.08)
    ax.set_title(f"voice -> rendered image, {doc['input']['seconds']:.0f} s utterance, {doc['threads']} threads: "
                 "bars = stages timed separately, diamond = end to end timed as a whole", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=6, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)

    from matplotlib.lines import Line2D
    palette = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#9c755f", "#edc948"]
    colour = {bid: palette[i % len(palette)] for i, bid in enumerate(bids)}
    lengths = sorted({r["seconds"] for r in doc["throughput"] if r["kind"] == "models"})
    styles = {sec: st for sec, st in zip(lengths, [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")] * 4)}
    for col, pipe in enumerate(("supervised", "unsupervised")):
        ax2 = fig.add_subplot(gs[1, col])
        rows = [r for r in doc["throughput"] if r["kind"] == "models" and r["pipeline"] == pipe]
        if not rows:
            ax2.axis("off")
            ax2.text(0.5, 0.5, f"no throughput grid measured ({pipe})", ha="center", va="center")
            continue
        for bid in bids:
            for sec in lengths:
                pts = sorted((r["batch"], r["utt_per_s"]) for r in rows if r["backend"] == bid and r["seconds"] == sec)
                if pts:
                    marker, line = styles[sec]
                    ax2.plot([q[0] for q in pts], [q[1] for q in pts], line, marker=marker, color=colour[bid])
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        from matplotlib.ticker import ScalarFormatter
        for axis in (ax2.xaxis, ax2.yaxis):
            axis.set_major_formatter(ScalarFormatter())
        ax2.yaxis.set_minor_formatter(ScalarFormatter())
        ax2.tick_params(axis="y", which="minor", labelsize=7)
        batches = sorted({r["batch"] for r in rows})
        ax2.set_xticks(batches, [str(b) for b in batches])
        ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax2.set_xlabel("batch size")
        ax2.set_ylabel("utterances / s (encoder + decoder)")
        ax2.set_title(f"throughput, {pipe} (from fbank)", fontsize=10)
        ax2.grid(alpha=0.3, which="both")
    if doc["throughput"]:
        handles = [Line2D([], [], color=colour[b], lw=3, label=_short(doc, b)) for b in bids]
        handles += [Line2D([], [], color="grey", marker=styles[s][0], ls=styles[s][1], label=f"{s:g} s utterances")
                    for s in lengths]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"cmp-deploy latency: {doc['machine_name']}, {doc['date'][:10]}"
                 + (" (QUICK smoke run)" if doc["quick"] else ""), fontsize=12)
    fig.savefig(path, dpi=110)
    plt.close(fig)
