#!/usr/bin/env bash
# The GPU figures benchmarks/RESULTS.md lists as wanted, in one run on one CUDA machine:
#   bash benchmarks/gpu/figures.sh [OUT_DIR] [CIFAR_ARCHIVE_DIR]
# 1. speed/cifar_stages.py (the cifar10_fast preset's stage rates at its own amp / channels_last, projected wall time);
# 2. compare/vs_authors.py, fp32 and --amp --channels-last (ours vs MadryLab robustness and torchattacks);
# 3. speed/attack_throughput.py --amp --channels-last --compile;
# 4. when CIFAR_ARCHIVE_DIR holds cifar10-jpeg.tar.gz and cifar10_jpeg.py (the project's JPEG copy of CIFAR-10),
#    the cifar10_cpu tier on that GPU, 2 seeds, with the AutoAttack check, for its numbers (not its CPU timing).
# DEADLINE (seconds since the script started) bounds the tier's run. Each step has its own time limit, so one failure
# does not take the others with it. The benchmarks append their entries to benchmarks/records/ (see
# benchmarks/README.md); the script copies that folder, the log and the tier's results.json to OUT_DIR. Where the
# machine has no git, ADVFEATURES_COMMIT=$(git rev-parse HEAD) names the commit in the records.
# Runs the code in src/ (nothing is installed). Needs, for step 2, robustness/torchattacks (and their import-time
# dependencies: dill, tensorboardX, cox) on the python path or in the interpreter's environment: vs_authors.py is
# pointed at the running interpreter's own environment with --venv, so it installs nothing.
set -uo pipefail
out=$(mkdir -p "${1:-gpu-out}" && cd "${1:-gpu-out}" && pwd)
archive_dir=${2:+$(cd "$2" 2>/dev/null && pwd)}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
log="$out/log.txt"
step() { local limit=$1; shift; echo "+ $*" | tee -a "$log"; timeout "$limit" "$@" 2>&1 | tee -a "$log"; }
env_prefix=$(python3 -c 'import sys; print(sys.prefix)')
nvidia-smi -L | tee -a "$log"
step 150 python3 benchmarks/speed/cifar_stages.py
step 150 python3 benchmarks/compare/vs_authors.py --venv "$env_prefix"
step 150 python3 benchmarks/compare/vs_authors.py --venv "$env_prefix" --amp --channels-last
step 150 python3 benchmarks/speed/attack_throughput.py --amp --channels-last --compile
mkdir -p benchmarks/records && cp -r benchmarks/records "$out/"
if [[ -n "$archive_dir" && -f "$archive_dir/cifar10-jpeg.tar.gz" ]]; then
    data=$(mktemp -d)
    step 120 python3 "$archive_dir/cifar10_jpeg.py" "$data"
    tier_limit=$(( ${DEADLINE:-100000} - SECONDS )); echo "tier limit ${tier_limit}s" | tee -a "$log"
    step "$tier_limit" python3 -m advfeatures reproduce --preset cifar10_cpu --data-root "$data" \
        --out "$out/tier-run" --seeds 2 --device cuda --autoattack --no-progress
    for f in "$out"/tier-run/cifar10_cpu/results.json "$out"/tier-run/results.md; do
        [[ -f $f ]] && cp "$f" "$out/tier-$(basename "$f")"
    done
    rm -rf "$out/tier-run"
fi
cp -r benchmarks/records "$out/"
