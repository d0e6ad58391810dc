#!/usr/bin/env bash
# Download into .whl/ (repository root) the wheels that bench/gpu_edit.py needs on the lent GPU machine and
# that its image lacks or has too old. Run it here, where PyPI is reachable; the device `run` call carries
# .whl (ignored by git) and bench/device/run.sh installs it there.
#
# The GPU machine (see docs/benchmarks.md, "How to run on a GPU") has Python 3.12, torch 2.11 + CUDA 13,
# transformers 5.17, tokenizers 0.23.2, huggingface_hub 1.33, safetensors 0.8, accelerate 1.15, numpy, pillow,
# peft; no diffusers, no pydantic, and no network. Importing reangle.engine.qwen and running the benchmark
# needs, beyond that:
#   diffusers                 not there
#   transformers              reangle pins 5.23 (needs tokenizers >=0.23.1,<0.24 and huggingface_hub >=1.31,
#                             both there); it checks regex >= 2025.10.22 when imported
#   peft                      there, of an unknown version: bring the one reangle is tested with
#   pydantic, pydantic-core, annotated-types, typing-inspection
#                             reangle.settings and reangle.core.models; pydantic needs typing-extensions >= 4.16
#   pydantic-settings, python-dotenv
#                             reangle.settings
#   regex, typing-extensions  versions there unknown; small, so brought for the bounds above
# Versions are those of this checkout's .venv, the ones the tests here run with.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(
    diffusers transformers peft
    pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv
    regex typing-extensions
)
python=${PYTHON:-.venv/bin/python}
dest=.whl
limit_mib=40  # of the 64 MiB a `run` call may carry, tree and reference picture included

mapfile -t pins < <("$python" - "${packages[@]}" <<'PY'
import importlib.metadata
import sys

for name in sys.argv[1:]:
    print(f"{name}=={importlib.metadata.version(name)}")
PY
)

mkdir -p "$dest"
for package in "${packages[@]}"; do
    rm -f "$dest/${package//-/_}"-[0-9]*.whl  # one version of each: two would stop the install there
done
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "${pins[@]}"

status=0
for pin in "${pins[@]}"; do
    name=${pin%%==*}
    wheels=("$dest/${name//-/_}-${pin##*==}"-*.whl)
    if [[ ! -f ${wheels[0]} ]]; then
        echo "prepare_wheels.sh: no wheel for $pin in $dest" >&2
        status=1
    elif [[ ${wheels[0]} != *-py3-none-any.whl && ${wheels[0]} != *-cp312-cp312-*manylinux*_x86_64.whl ]]; then
        echo "prepare_wheels.sh: ${wheels[0]} is neither pure Python nor CPython 3.12 on x86-64 Linux" >&2
        status=1
    fi
done
total_kib=$(du -sk "$dest" | cut -f1)
echo "$dest: ${#pins[@]} wheels, $((total_kib / 1024)) MiB"
if ((total_kib > limit_mib * 1024)); then
    echo "prepare_wheels.sh: $dest is over ${limit_mib} MiB; a run call carries 64 MiB in all" >&2
    status=1
fi
exit "$status"
