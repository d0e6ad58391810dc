#!/usr/bin/env bash
# The lent GPU machine's side of the GPU benchmark: install the carried wheels (.whl, made here by
# bench/device/prepare_wheels.sh) into a separate folder, put it and the repository on PYTHONPATH, and run
# bench/gpu_edit.py with its JSON, its log and the baseline variant's output picture under $OUT.
#
#   bash bench/device/run.sh --variants baseline,cudnn,fp8 --runs 3 --warmup 1 --edits 4
#
# Arguments go to gpu_edit.py (default --config real). Environment: OUT (results; default bench/results),
# PYTHON (default python3), WHEELS (default .whl), SITE (where the wheels go; default /tmp/site).
# Exit status: gpu_edit.py's (0 done, 1 a variant failed, 2 bad usage); 3 the environment is not ready.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
site=${SITE:-/tmp/site}
out=${OUT:-bench/results}
mkdir -p "$out"

shopt -s nullglob
carried=("$wheels"/*.whl)
if ((${#carried[@]})); then
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${carried[@]}"
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "run.sh: no wheels in $wheels; using the packages installed here" >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,temperature.gpu,power.limit \
        --format=csv >"$out/nvidia-smi.csv" || true
fi
check='import diffusers, peft, pydantic, torch, transformers, reangle.engine.qwen
for module in (torch, diffusers, transformers, peft, pydantic):
    print(f"{module.__name__} {module.__version__} from {module.__file__}")'
if ! "$python" -c "$check"; then
    echo "run.sh: the benchmark's packages do not import; rerun bench/device/prepare_wheels.sh and carry .whl" >&2
    exit 3
fi

set +e
"$python" bench/gpu_edit.py --config real --json-out "$out/gpu_edit.json" \
    --save-reference "$out/baseline.png" "$@" 2>&1 | tee "$out/gpu_edit.log"
exit "${PIPESTATUS[0]}"
