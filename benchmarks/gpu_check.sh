#!/usr/bin/env bash
# Prepare a bare GPU machine (the lent H200) and run benchmarks/gpu_check.py, whose own budget is
# GPU_CHECK_BUDGET seconds (default 230, under four minutes). Run from the repository root:
#
#   bash benchmarks/gpu_check.sh pack WHEEL       # here, once: WHEEL -> .gpu-carry/parts (xz tarball parts)
#   bash benchmarks/gpu_check.sh stash            # a device call that only carries one part
#   bash benchmarks/gpu_check.sh run [ARGS...]    # prepare + check; ARGS go to gpu_check.py
#
# What it reads from $GPU_CHECK_CARRY (default .gpu-carry/, ignored by git, named in `carry`):
#   parts/<name>.part-*    onnxruntime-gpu in parts of <= 52 MiB (one call carries 64 MiB): <name> is
#                          the wheel itself, or (`pack`) an xz tarball of the unpacked wheel, 203 MB
#                          instead of 256 for 1.31.1: four calls instead of five. Each call's parts are
#                          stashed in $GPU_CHECK_HOME/parts, which lives as long as the machine stays
#                          warm; `run` joins them, checks parts/<name>.sha256 and installs (a wheel with
#                          pip, a tarball unpacked). Without parts the machine's own onnxruntime stays
#                          (no CUDA provider: the GPU rows then say so).
#   wheels/*.whl           other missing packages (webrtcvad-wheels), installed with --no-deps.
#   audio/*.wav            speech for the parity rows (else the built-in demo voices).
# Preparation: the synthetic models are exported into $GPU_CHECK_HOME/cache (the cache is over one
# call's 64 MiB, so models are built there, not carried; the first `stash` call starts that in the
# background, from a copy of the sources, and records the builder's own pid), unless
# GPU_CHECK_MODELS names a models folder; meanwhile `run` compiles the extensions in place with
# that machine's Python.
# Results: benchmarks/results/<gpu>/gpu_check.{md,json,png}, copied with the logs to $OUT when set.
set -uo pipefail

MODE="${1:-run}"
[ $# -gt 0 ] && shift
START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET:-230}"
CARRY="${GPU_CHECK_CARRY:-.gpu-carry}"
HOME_DIR="${GPU_CHECK_HOME:-/tmp/cmp-gpu}"
PY="${GPU_CHECK_PYTHON:-python3}"
LOGS="${OUT:-$HOME_DIR}"
mkdir -p "$HOME_DIR/parts" "$HOME_DIR/site" "$LOGS"
export PYTHONUNBUFFERED=1
export CMP_DEPLOY_CACHE="${CMP_DEPLOY_CACHE:-$HOME_DIR/cache}"

say() { echo "[gpu_check.sh +$(( $(date +%s) - START ))s] $*"; }

stash() {  # keep this call's parts of the wheel outside the working tree (re-copied every call)
  local n=0
  for f in "$CARRY"/parts/*; do
    [ -f "$f" ] || continue
    cp -f "$f" "$HOME_DIR/parts/" && n=$((n + 1))
  done
  say "stashed $n file(s); $HOME_DIR/parts now holds: $(ls "$HOME_DIR/parts" | tr '\n' ' ')"
}

start_models() {
  # The synthetic models, exported in a process of its own session (setsid), so that a `stash`
  # call starts it and it runs on while the next calls carry the other parts. From a copy of the
  # sources: the working tree is copied again by every call. The pid recorded is the builder's own
  # (sh writes $$, then execs it): setsid's parent may exit at once, and a later call that took it
  # for a finished build would start a second one over the first one's folder.
  [ -n "${GPU_CHECK_MODELS:-}" ] && return 0
  [ -s "$HOME_DIR/models.path" ] && return 0
  if [ -s "$HOME_DIR/models.pid" ] && kill -0 "$(cat "$HOME_DIR/models.pid")" 2>/dev/null; then return 0; fi
  rm -rf "$HOME_DIR/src" "$HOME_DIR/models.pid" && mkdir -p "$HOME_DIR/src" \
    && cp -r runtime export "$HOME_DIR/src/" || return 1
  (cd "$HOME_DIR/src" && PYTHONPATH="$HOME_DIR/src" setsid sh -c 'echo $$ > "$0"; exec "$@"' "$HOME_DIR/models.pid" \
     "$PY" -c "import os, sys
print('builder pid', os.getpid(), flush=True)
from export.cache import synthetic_models
path = synthetic_models(progress=lambda m: print(m, flush=True))
open(sys.argv[1], 'w').write(str(path))" "$HOME_DIR/models.path" > "$HOME_DIR/models_build.log" 2>&1 < /dev/null &)
  local waited=0
  while [ ! -s "$HOME_DIR/models.pid" ] && [ "$waited" -lt 50 ]; do sleep 0.1; waited=$((waited + 1)); done
  say "exporting the synthetic models in the background (pid $(cat "$HOME_DIR/models.pid" 2>/dev/null); log: $HOME_DIR/models_build.log)"
}

wait_models() {  # -> MODELS
  if [ -n "${GPU_CHECK_MODELS:-}" ]; then MODELS="$GPU_CHECK_MODELS"; return 0; fi
  start_models || return 1
  local waited=0
  while [ ! -s "$HOME_DIR/models.path" ] && kill -0 "$(cat "$HOME_DIR/models.pid")" 2>/dev/null; do
    sleep 2; waited=$((waited + 2))
    [ "$waited" -ge "${GPU_CHECK_BUILD_WAIT:-480}" ] && break
  done
  cp -f "$HOME_DIR/models_build.log" "$LOGS/" 2>/dev/null
  [ -s "$HOME_DIR/models.path" ] || return 1
  MODELS=$(cat "$HOME_DIR/models.path")
}

install_wheels() {
  local sums name joined
  sums=$(ls "$HOME_DIR"/parts/*.sha256 2>/dev/null | head -n 1)
  if [ -n "$sums" ] && ! ls "$HOME_DIR"/site/onnxruntime* >/dev/null 2>&1; then
    name=$(basename "$sums" .sha256)
    joined="$HOME_DIR/$name"
    cat "$HOME_DIR/parts/$name".part-* > "$joined" || return 1
    if ! (cd "$HOME_DIR" && sha256sum -c --status "$sums"); then
      say "error: $name joined from $(ls "$HOME_DIR/parts" | grep -c part-) parts fails its sha256 (a part missing?)"
      rm -f "$joined"
      return 1
    fi
    case "$name" in
      *.whl)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME_DIR/site" \
          "$joined" || return 1 ;;
      *.tar.xz)  # the unpacked wheel (`pack`): its folders go into the site folder as pip would put them
        "$PY" -c "import sys, tarfile
with tarfile.open(sys.argv[1], 'r:xz') as t:
    try:
        t.extractall(sys.argv[2], filter='data')  # no links out, no absolute paths
    except TypeError:  # a Python without extraction filters (< 3.11.4)
        t.extractall(sys.argv[2])" "$joined" "$HOME_DIR/site" || return 1 ;;
      *) say "error: $name: expected a .whl or a .tar.xz"; return 1 ;;
    esac
    rm -f "$joined"
    say "installed $name"
  elif [ -z "$sums" ]; then
    say "no onnxruntime-gpu parts carried: this machine's onnxruntime stays"
  fi
  if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME_DIR/site" \
      "$CARRY"/wheels/*.whl && say "installed $(ls "$CARRY"/wheels | tr '\n' ' ')"
  fi
}

pack() {  # WHEEL -> $CARRY/parts/<wheel stem>.tar.xz.part-* and its .sha256 (run here, not on the device)
  local wheel="${1:?usage: bash benchmarks/gpu_check.sh pack WHEEL}" name
  name="$(basename "$wheel" .whl).tar.xz"
  mkdir -p "$CARRY/parts" && rm -f "$CARRY/parts/$name".* || return 1
  "$PY" -c "import sys, tarfile, tempfile, zipfile
with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(sys.argv[1]).extractall(tmp)
    with tarfile.open(sys.argv[2], 'w:xz', preset=9) as t:
        for entry in sorted(__import__('os').listdir(tmp)):
            t.add(f'{tmp}/{entry}', arcname=entry)" "$wheel" "$CARRY/$name" || return 1
  (cd "$CARRY" && sha256sum "$name" > "parts/$name.sha256" && split -b "${GPU_CHECK_PART_BYTES:-52M}" -a 2 "$name" "parts/$name.part-" \
    && rm -f "$name") || return 1
  say "packed $(basename "$wheel") into $(ls "$CARRY/parts" | grep -c "^$name.part-") part(s) in $CARRY/parts: $(du -ch "$CARRY/parts/$name".part-* | tail -n 1 | cut -f1)"
}

if [ "$MODE" = pack ]; then
  pack "$@"
  exit $?
fi
stash
if [ "$MODE" = stash ]; then
  start_models
  exit 0
fi
if [ "$MODE" != run ]; then
  echo "usage: bash benchmarks/gpu_check.sh pack WHEEL | stash | run [gpu_check.py options]" >&2
  exit 2
fi

install_wheels || { say "error: could not install the carried wheels"; exit 2; }
export PYTHONPATH="$HOME_DIR/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# onnxruntime-gpu installed with --target looks for CUDA/cuDNN beside itself (preload_dlls), not in
# the image's nvidia-* wheels: name their library folders for the loader (read at process start).
NV_LIBS=$("$PY" -c "import glob, os, nvidia
print(':'.join(sorted({os.path.dirname(f) for d in nvidia.__path__ for f in glob.glob(d + '/**/lib*.so*', recursive=True)})))" 2>/dev/null)
[ -n "$NV_LIBS" ] && export LD_LIBRARY_PATH="$NV_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && say "CUDA libraries from the nvidia-* wheels: $NV_LIBS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/  gpu: /'
"$PY" -c "import onnxruntime as o, sys; print('  onnxruntime', o.__version__, o.get_available_providers())" 2>&1

# Sim3DR for this machine's Python, and the models, at the same time.
if ! "$PY" -c "import Sim3DR" 2>/dev/null; then
  ( "$PY" setup.py -q build_ext --inplace > "$LOGS/sim3dr_build.log" 2>&1 && echo ok > "$HOME_DIR/sim3dr.ok" ) &
  SIM_PID=$!
else
  SIM_PID=""
fi
wait_models || { say "error: the synthetic models were not built:"; tail -n 5 "$HOME_DIR/models_build.log"; exit 2; }
if [ -n "$SIM_PID" ]; then
  wait "$SIM_PID"
  # Without Sim3DR the parity rows still run; the latency cells then say why they failed.
  [ -f "$HOME_DIR/sim3dr.ok" ] || { say "warning: building Sim3DR failed:"; tail -n 5 "$LOGS/sim3dr_build.log"; }
fi
say "prepared: models $MODELS"

AUDIO=()
ls "$CARRY"/audio/*.wav >/dev/null 2>&1 && AUDIO=(--audio "$CARRY/audio")
say "running the check with a budget of $BUDGET s"
# SIGINT first: the check writes what it measured; the results are also rewritten after every step.
timeout -s INT -k 15 $(( BUDGET + 20 )) "$PY" benchmarks/gpu_check.py --models "$MODELS" --budget "$BUDGET" "${AUDIO[@]}" "$@" \
  2>&1 | tee "$LOGS/gpu_check.log" | tr '\r' '\n' | grep -v '^gpu check:'
RC=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  for d in benchmarks/results/gpu-*/; do
    [ -f "$d/gpu_check.json" ] || continue
    mkdir -p "$OUT/$(basename "$d")" && cp "$d"/gpu_check.* "$OUT/$(basename "$d")/"
  done
fi
say "done (exit $RC)"
exit "$RC"
