#!/usr/bin/env bash
# The GPU checks of one run, on a fresh GPU machine, from the repository root, in
# under 8 minutes:
#   1. install   dataforge with every extra (pip install -e .[all,dev]), or offline
#   2. pytest    pytest -m gpu
#   3. feeding   dataforge bench feeding --device cuda
#   4. image     dataforge bench image --device cuda --workers 4,8,16 (stock, dataforge
#                process and thread engines, torchdata when installed, GPU decode)
# then a summary of the headline figures (benchmarks/gpu_summary.py).
#
# Everything goes under $OUT (default ./gpu_out): gpu_check.log (all output),
# summary.json (each step's status, command and seconds; the machine; the headline
# figures), pytest_gpu.xml, and in bench/: feeding.json, image.json, image.png and
# index.json (which command wrote each file).
# Without CUDA nothing runs after the install: one "SKIPPED" line, exit code 0.
# Exit code 1 when a step failed or ran out of time, 2 on bad settings.
#
# Settings (environment variables):
#   OUT=DIR          output folder (default ./gpu_out)
#   PYTHON=EXE       interpreter (default python3). If it already runs in a virtual
#                    environment, packages go into that one; else into ./.gpu_venv, made
#                    with --system-site-packages so the machine's CUDA build of torch stays.
#   SKIP_INSTALL=1   use PYTHON as it is: no virtual environment, no pip
#   WHEELS=DIR       wheels carried along, installed with --no-index when the package
#                    index cannot be reached (default ./.whl)
#   DRY_RUN=1        print the plan (commands and time limits), write summary.json, exit 0
#   NO_CUDA=1        act as if CUDA were absent (the skip path, on any machine)
#   REHEARSE=1       run every step with --device cpu, on any machine: a rehearsal of the
#                    script itself (the figures are CPU figures; the gpu tests skip)
#   BUDGET_S=S       limit of the whole run (default 470); a step's limit is cut to what
#                    is left of it
#   T_INSTALL, T_PYTEST, T_FEEDING, T_IMAGE   step limits in seconds (default 60 90 75 240)
#   IMAGE_SECONDS, IMAGE_REPEATS, IMAGE_WORKERS   the image run (default 3, 1, 4,8,16)
#   PYTEST_ARGS, FEEDING_ARGS, IMAGE_ARGS   more arguments for a step, split at spaces
#                    (IMAGE_ARGS="--data /data/imagenet/train": your own images)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_out}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-$ROOT/.whl}
BUDGET_S=${BUDGET_S:-470}
T_INSTALL=${T_INSTALL:-60}
T_PYTEST=${T_PYTEST:-90}
T_FEEDING=${T_FEEDING:-75}
T_IMAGE=${T_IMAGE:-240}
IMAGE_SECONDS=${IMAGE_SECONDS:-3}
IMAGE_REPEATS=${IMAGE_REPEATS:-1}
IMAGE_WORKERS=${IMAGE_WORKERS:-4,8,16}

for v in BUDGET_S T_INSTALL T_PYTEST T_FEEDING T_IMAGE IMAGE_REPEATS; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu_check: error: $v must be a positive whole number of seconds or repeats, got '${!v}'" >&2
        exit 2
    fi
done
mkdir -p "$OUT" || { echo "gpu_check: error: cannot create OUT=$OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
STEPS=$(mktemp)  # one line per step: name, status, seconds, command (tab-separated)
trap 'rm -f "$STEPS"' EXIT
START=$(date +%s)

say() { echo "gpu_check: $*"; }

left() {  # seconds left of the budget, at least 1 (timeout 0 would mean no limit)
    local n=$(( BUDGET_S - ($(date +%s) - START) ))
    echo $(( n > 0 ? n : 1 ))
}

record() {  # record NAME STATUS SECONDS COMMAND...
    local name=$1 status=$2 secs=$3
    shift 3
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$*" >>"$STEPS"
}

summary() {  # summary STATUS [REASON]: write summary.json and print the headline figures
    "$PY" "$ROOT/benchmarks/gpu_summary.py" --out "$OUT" --steps "$STEPS" --status "$1" \
        --reason "${2:-}" --seconds "$(( $(date +%s) - START ))" \
        || say "warning: the summary could not be written (see above)"
}

run_step() {  # run_step NAME LIMIT COMMAND...: run under its own time limit, record the outcome
    local name=$1 limit=$2 budget t0 rc status
    shift 2
    budget=$(( BUDGET_S - ($(date +%s) - START) ))
    (( limit > budget )) && limit=$budget
    if (( limit < 10 )); then
        say "step $name: NOT RUN: the ${BUDGET_S} s budget is spent"
        record "$name" "not run (budget spent)" 0 "$@"
        return 1
    fi
    say "step $name (limit ${limit} s): $*"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@"
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out after ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    record "$name" "$status" "$(( $(date +%s) - t0 ))" "$@"
    say "step $name: $status in $(( $(date +%s) - t0 )) s"
    [[ $status == ok ]]
}

index_reachable() {  # can pip reach its package index? (one small download, 20 s at most)
    local tmp rc
    tmp=$(mktemp -d)
    timeout -k 5 "$(install_left 20)" "$PY" -m pip download -q --no-deps --no-cache-dir --timeout 5 \
        --retries 0 -d "$tmp" pip >/dev/null 2>&1
    rc=$?
    rm -rf "$tmp"
    return $rc
}

install_left() {  # seconds left to the install: of T_INSTALL and of the budget, at most $1
    local n=$(( INSTALL_END - $(date +%s) )) b
    b=$(left)
    (( n > b )) && n=$b
    if (( $# )) && (( n > $1 )); then n=$1; fi
    echo $(( n > 0 ? n : 1 ))
}

build_ext_inplace() {  # the optional C extension, compiled directly (NOTE in setup.py)
    local suffix inc
    suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))') || return 1
    inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])') || return 1
    if cc -O2 -shared -fPIC -I"$inc" dataforge/_jpeg.c -ljpeg -o "dataforge/_jpeg$suffix" 2>/dev/null; then
        say "install: built the region-decode extension in place (dataforge/_jpeg$suffix)"
    else
        say "install: no C compiler or libjpeg headers: whole-image decode only (HAVE_ROI_DECODE False)"
    fi
}

install() {
    local n pip_install
    INSTALL_END=$(( $(date +%s) + T_INSTALL ))
    if "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        say "install: $PY runs in a virtual environment ($("$PY" -c 'import sys; print(sys.prefix)')): installing into it"
    else
        local venv=$ROOT/.gpu_venv
        say "install: creating $venv (--system-site-packages: the machine's torch build is kept)"
        timeout -k 5 "$(install_left)" "$PY" -m venv --system-site-packages "$venv" || return 1
        PY=$venv/bin/python
    fi
    pip_install=("$PY" -m pip install -q --disable-pip-version-check --timeout 10 --retries 0)
    if index_reachable; then
        say "install: package index reachable: pip install -e '.[all,dev]'"
        if timeout -k 5 "$(install_left)" "${pip_install[@]}" -e ".[all,dev]"; then
            return 0
        fi
        say "install: the online install failed (a package the index lacks, or the network): offline install instead"
    else
        say "install: package index NOT reachable: offline install"
    fi
    n=$(find "$WHEELS" -maxdepth 1 -name '*.whl' 2>/dev/null | wc -l)
    if (( n > 0 )); then
        say "install: installing the $n wheels carried in $WHEELS (--no-index --no-deps)"
        timeout -k 5 "$(install_left)" "${pip_install[@]}" --no-index --no-deps "$WHEELS"/*.whl || return 1
    else
        say "install: no wheels carried in $WHEELS: relying on the packages already installed"
    fi
    if ! timeout -k 5 "$(install_left)" "${pip_install[@]}" --no-index --no-deps --no-build-isolation -e .; then
        say "install: the editable install failed: running from the source tree (PYTHONPATH=$ROOT)"
        export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
        build_ext_inplace
    fi
}

check_imports() {  # what the steps need, and the machine, in one look
    "$PY" - <<'EOF'
import importlib, importlib.util, sys
missing = []
for name in ("torch", "torchvision", "numpy", "PIL", "tqdm", "dataforge", "pytest", "hypothesis"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported, the step decides
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
optional = [n for n in ("psutil", "matplotlib", "torchdata", "pytest_timeout")
            if importlib.util.find_spec(n) is None]
if missing:
    print("gpu_check: install: MISSING, needed by the steps: " + "; ".join(missing))
    sys.exit(1)
import torch, torchvision
from dataforge.transforms.decode import HAVE_ROI_DECODE
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"gpu_check: python {sys.version.split()[0]}, torch {torch.__version__} (CUDA "
      f"{torch.version.cuda}), torchvision {torchvision.__version__}, GPU: {gpu}, "
      f"region decode: {HAVE_ROI_DECODE}"
      + (f"; optional, not installed: {', '.join(optional)}" if optional else ""))
EOF
}

plan() {
    say "plan (budget ${BUDGET_S} s in all; each step also has its own limit):"
    if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
        say "  install  skipped (SKIP_INSTALL=1): $PYTHON as it is"
    else
        say "  install  (limit ${T_INSTALL} s) pip install -e '.[all,dev]', or offline: the wheels in $WHEELS, then pip install --no-index --no-deps --no-build-isolation -e ."
    fi
    say "  pytest   (limit ${T_PYTEST} s) ${CMD_PYTEST[*]}"
    say "  feeding  (limit ${T_FEEDING} s) ${CMD_FEEDING[*]}"
    say "  image    (limit ${T_IMAGE} s) ${CMD_IMAGE[*]}"
    say "  outputs  $OUT: gpu_check.log summary.json pytest_gpu.xml bench/feeding.json bench/image.json bench/image.png bench/index.json"
}

main() {
    say "start $(date -u '+%Y-%m-%d %H:%M:%S UTC') in $ROOT, output in $OUT"
    PY=$PYTHON
    local device=cuda extra_pytest extra_feeding extra_image
    [[ ${REHEARSE:-0} == 1 ]] && device=cpu
    read -r -a extra_pytest <<<"${PYTEST_ARGS:-}"
    read -r -a extra_feeding <<<"${FEEDING_ARGS:-}"
    read -r -a extra_image <<<"${IMAGE_ARGS:-}"
    CMD_PYTEST=(python -m pytest -m gpu -q -p no:cacheprovider --junitxml "$OUT/pytest_gpu.xml"
                "${extra_pytest[@]}")
    CMD_FEEDING=(python -m dataforge bench feeding --device $device --out "$OUT/bench"
                 "${extra_feeding[@]}")
    CMD_IMAGE=(python -m dataforge bench image --device $device --workers "$IMAGE_WORKERS"
               --seconds "$IMAGE_SECONDS" --repeats "$IMAGE_REPEATS" --out "$OUT/bench"
               "${extra_image[@]}")
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        plan
        say "DRY RUN: nothing was installed or run (DRY_RUN=1)"
        summary dry-run "DRY_RUN=1"
        return 0
    fi
    if ! command -v "$PY" >/dev/null 2>&1; then
        say "error: PYTHON=$PY is not an interpreter on this machine"
        return 2
    fi
    plan
    local t0
    t0=$(date +%s)
    if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
        say "install: skipped (SKIP_INSTALL=1): using $PY as it is"
        record install "skipped (SKIP_INSTALL=1)" 0 "-"
    elif install; then
        record install ok "$(( $(date +%s) - t0 ))" "pip install -e .[all,dev] (or offline)"
    else
        record install failed "$(( $(date +%s) - t0 ))" "pip install -e .[all,dev] (or offline)"
        say "install: FAILED: nothing else was run"
        summary failed "the install failed"
        return 1
    fi
    if ! check_imports; then
        record imports failed 0 "import the packages the steps need"
        summary failed "packages the steps need are missing"
        return 1
    fi
    local reason="" note=""
    if [[ ${REHEARSE:-0} == 1 ]]; then
        note="REHEARSE=1: a rehearsal on the CPU, not GPU figures"
        say "REHEARSAL (REHEARSE=1): every step runs with --device cpu; the figures are CPU figures"
    elif [[ ${NO_CUDA:-0} == 1 ]]; then
        reason="NO_CUDA=1 was set"
    else
        reason=$("$PY" -c 'import torch
print("" if torch.cuda.is_available() else
      f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})")') \
            || reason="torch could not be imported"
    fi
    if [[ -n $reason ]]; then
        say "SKIPPED: no CUDA ($reason): pytest -m gpu, bench feeding and bench image --device cuda were not run; nothing was measured"
        for s in pytest feeding image; do record "$s" "skipped (no CUDA)" 0 "-"; done
        summary skipped "no CUDA: $reason"
        return 0
    fi
    local failed=0
    CMD_PYTEST[0]=$PY
    CMD_FEEDING[0]=$PY
    CMD_IMAGE[0]=$PY
    run_step pytest "$T_PYTEST" "${CMD_PYTEST[@]}" || failed=1
    run_step feeding "$T_FEEDING" "${CMD_FEEDING[@]}" || failed=1
    run_step image "$T_IMAGE" "${CMD_IMAGE[@]}" || failed=1
    if (( failed )); then
        summary failed "a step failed or ran out of time (see the steps)${note:+; $note}"
        say "done in $(( $(date +%s) - START )) s: SOME STEPS FAILED"
        return 1
    fi
    summary ok "$note"
    say "done in $(( $(date +%s) - START )) s: all steps ok"
    return 0
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
