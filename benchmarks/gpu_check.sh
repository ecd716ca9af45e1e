#!/usr/bin/env bash
# Prepare a bare GPU machine (the lent H200) and run benchmarks/gpu_check.py, whose own budget is
# GPU_CHECK_BUDGET seconds (default 230, under four minutes). Run from the repository root:
#
#   bash benchmarks/gpu_check.sh stash            # a call that only carries one part of onnxruntime-gpu
#   bash benchmarks/gpu_check.sh run [ARGS...]    # prepare + check; ARGS go to gpu_check.py
#
# What it reads from $GPU_CHECK_CARRY (default .gpu-carry/, an ignored folder named in `carry`):
#   parts/<wheel>.part-*   onnxruntime-gpu split into parts of <= 60 MiB (one call carries 64 MiB):
#                          each call's parts are stashed in $GPU_CHECK_HOME/parts, which lives as long
#                          as the machine stays warm; `run` joins them, checks parts/<wheel>.sha256 and
#                          installs the wheel. Without parts the machine's own onnxruntime stays (no
#                          CUDA provider: the GPU rows then say so).
#   wheels/*.whl           other missing packages (webrtcvad-wheels), installed with --no-deps.
#   audio/*.wav            speech for the parity rows (else the built-in demo voices).
# Preparation: the synthetic models are exported into $GPU_CHECK_HOME/cache (the cache is over one
# call's 64 MiB, so models are built there, not carried; the first `stash` call starts that in the
# background), unless GPU_CHECK_MODELS names a models folder; meanwhile `run` compiles the Sim3DR
# extension in place with that machine's Python.
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
  # sources: the working tree is copied again by every call.
  [ -n "${GPU_CHECK_MODELS:-}" ] && return 0
  [ -s "$HOME_DIR/models.path" ] && return 0
  if [ -f "$HOME_DIR/models.pid" ] && kill -0 "$(cat "$HOME_DIR/models.pid")" 2>/dev/null; then return 0; fi
  rm -rf "$HOME_DIR/src" && mkdir -p "$HOME_DIR/src" && cp -r runtime export "$HOME_DIR/src/" || return 1
  (cd "$HOME_DIR/src" && PYTHONPATH="$HOME_DIR/src" setsid "$PY" -c "import sys
from export.cache import synthetic_models
path = synthetic_models(progress=lambda m: print(m, flush=True))
open(sys.argv[1], 'w').write(str(path))" "$HOME_DIR/models.path" > "$HOME_DIR/models_build.log" 2>&1 < /dev/null &
   echo $! > "$HOME_DIR/models.pid")
  say "exporting the synthetic models in the background (log: $HOME_DIR/models_build.log)"
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
  local sums wheel
  sums=$(ls "$HOME_DIR"/parts/*.sha256 2>/dev/null | head -n 1)
  if [ -n "$sums" ] && ! ls "$HOME_DIR"/site/onnxruntime* >/dev/null 2>&1; then
    wheel="$HOME_DIR/$(basename "$sums" .sha256)"
    cat "$HOME_DIR/parts/$(basename "$wheel")".part-* > "$wheel" || return 1
    if ! (cd "$HOME_DIR" && sha256sum -c --status "$sums"); then
      say "error: $(basename "$wheel") joined from $(ls "$HOME_DIR/parts" | grep -c part-) parts fails its sha256 (a part missing?)"
      rm -f "$wheel"
      return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME_DIR/site" "$wheel" \
      && say "installed $(basename "$wheel")" || return 1
  elif [ -z "$sums" ]; then
    say "no onnxruntime-gpu parts carried: this machine's onnxruntime stays"
  fi
  if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME_DIR/site" \
      "$CARRY"/wheels/*.whl && say "installed $(ls "$CARRY"/wheels | tr '\n' ' ')"
  fi
}

stash
if [ "$MODE" = stash ]; then
  start_models
  exit 0
fi
if [ "$MODE" != run ]; then
  echo "usage: bash benchmarks/gpu_check.sh stash | run [gpu_check.py options]" >&2
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
