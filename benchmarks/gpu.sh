#!/usr/bin/env bash
# The paper profile on one GPU, in one run of under 8 minutes, with one results file (JSON).
#
#   benchmarks/gpu.sh                  on a GPU machine, from the repository root or anywhere
#   benchmarks/gpu.sh --dry-run        the same stages at tiny sizes on a CPU (the test suite runs it)
#   benchmarks/gpu.sh --fetch-wheels   on a machine that reaches PyPI: the wheels a GPU machine
#                                      usually lacks, into .whl/ (bring that folder along)
#
# Other options go to `python -m benchmarks.paper_gpu` (see its --help): --out DIR (default
# benchmarks/results, or $OUT when set), --compile, --knockouts, --fields-per-well, --stages ...
# Environment: PYTHON (default .venv/bin/python if present, else python3), I2O_GPU_TIMEOUT
# (seconds, set-up included, before the run is stopped, default 460: the stage running then is
# recorded as stopped, and the results file keeps every stage that finished).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ "${1:-}" = "--fetch-wheels" ]; then
    shift
    exec "$PY" -m benchmarks.gpu_setup fetch "$@"
fi

cuda=--cuda
for a in "$@"; do
    case "$a" in --dry-run|--device=cpu) cuda= ;; esac
done
prev=
for a in "$@"; do
    if [ "$prev" = "--device" ] && [ "$a" = "cpu" ]; then cuda=; fi
    prev=$a
done

args=("$@")
if [ -n "${OUT:-}" ]; then
    case " $* " in *" --out "*) ;; *) args+=(--out "$OUT") ;; esac
fi

# set-up: install from .whl/ only what is missing; the last line printed is the folder to add
# to PYTHONPATH (empty when nothing was installed)
site_dir=${TMPDIR:-/tmp}/i2o-site
setup_log=$(mktemp)
if ! "$PY" -m benchmarks.gpu_setup check --target "$site_dir" $cuda | tee "$setup_log"; then
    rm -f "$setup_log"
    exit 3
fi
extra=$(tail -n 1 "$setup_log")
rm -f "$setup_log"
export PYTHONPATH="${extra:+$extra:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# the whole run, set-up included, ends within $limit s (+10 s for a stopped process to exit)
limit=${I2O_GPU_TIMEOUT:-460}
left=$((limit - SECONDS))
if [ "$left" -lt 30 ]; then
    echo "the set-up took ${SECONDS} s of the ${limit} s limit: too little left for the run" >&2
    exit 3
fi
case " ${args[*]-} " in *" --total-budget "*) ;; *) args+=(--total-budget "$((left - 5))") ;; esac
if command -v timeout >/dev/null 2>&1; then
    exec timeout --kill-after=10 "$left" "$PY" -m benchmarks.paper_gpu "${args[@]}"
fi
exec "$PY" -m benchmarks.paper_gpu ${args[@]+"${args[@]}"}
