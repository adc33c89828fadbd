#!/usr/bin/env bash
# The whole paper on one GPU, in one command: `advfeatures reproduce --preset cifar10_fast` on all of CIFAR-10.
#
#   ADVFEATURES_COMMIT=$(git rev-parse HEAD) bash benchmarks/gpu/paper.sh OUT_DIR [--quick]
#
# * Before the call, here: `bash benchmarks/gpu/prepare.sh` copies the CIFAR-10 archive and its converter into the
#   git-ignored .device-data/ (the project's JPEG quality-75 copy of CIFAR-10) and pyautoattack's code into
#   .device-pylib/; name both in the device tool's `carry`. The archive is unpacked into a temporary folder in
#   torchvision's cifar-10-batches-py layout. DATA_DIR=... points elsewhere; a folder already holding
#   cifar-10-batches-py/ is used as it is.
# * Packages: the code runs from src/ (nothing is installed); .device-pylib/ joins the path when present.
# * Time: a hard limit of LIMIT seconds (default 540, i.e. 9 minutes) on the whole script. The run is
#   interrupted (SIGINT, then SIGKILL 15 s later) when it is reached; finished stages are kept in the run folder.
# * Output in OUT_DIR: log.txt; results.json, results.md and report.html when the run finished; stages.json (every
#   finished stage's seconds and numbers, also when it did not); environment.txt. The run folder itself is
#   RUN_DIR (default /tmp/advfeatures-cifar10-fast): the same command again resumes it, finished stages loaded.
# * `--quick` runs the preset's smoke test (a few hundred images, tiny widths), e.g. on a CPU, to check this script.
# ADVFEATURES_COMMIT names the code's commit in results.json where git is not available (the device machine).
set -uo pipefail
if [[ $# -lt 1 ]]; then echo "usage: bash benchmarks/gpu/paper.sh OUT_DIR [--quick]" >&2; exit 2; fi
out=$1; shift
quick=()
[[ "${1:-}" == "--quick" ]] && quick=(--quick)
limit=${LIMIT:-540}
start=$SECONDS
mkdir -p "$out"
log="$out/log.txt"
export PYTHONUNBUFFERED=1
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
[[ -d "$root/.device-pylib" ]] && export PYTHONPATH="$PYTHONPATH:$root/.device-pylib"
{
    date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
        "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
    python3 -c 'import pyautoattack; print("pyautoattack", pyautoattack.__file__)' 2>&1 | tail -1
    echo "commit ${ADVFEATURES_COMMIT:-unknown}"
} | tee "$out/environment.txt" | tee -a "$log"

data_dir=${DATA_DIR:-$root/.device-data}
if [[ -d "$data_dir/cifar-10-batches-py" ]]; then
    cifar=$data_dir
else
    cifar=$(mktemp -d)
    echo "+ unpacking $data_dir/cifar10-jpeg.tar.gz" | tee -a "$log"
    timeout 120 python3 "$data_dir/cifar10_jpeg.py" "$cifar" 2>&1 | tail -3 | tee -a "$log" || {
        echo "could not unpack the CIFAR-10 archive from $data_dir" | tee -a "$log"; exit 2; }
fi
echo "unpacked in $((SECONDS - start)) s" | tee -a "$log"

run=${RUN_DIR:-/tmp/advfeatures-cifar10-fast}  # outside OUT_DIR: a second call on the same machine resumes it
left=$(( limit - (SECONDS - start) - 10 ))
echo "+ advfeatures reproduce --preset cifar10_fast ${quick[*]} (limit ${left} s)" | tee -a "$log"
timeout --signal=INT --kill-after=15 "$left" python3 -m advfeatures reproduce --preset cifar10_fast \
    "${quick[@]}" --data-root "$cifar" --out "$run" --no-progress 2>&1 | tee -a "$log"
code=${PIPESTATUS[0]}
echo "exit $code after $((SECONDS - start)) s" | tee -a "$log"

# what came out, also from an interrupted run: every finished stage's record
python3 - "$run" "$out" <<'PY'
import json, shutil, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
stages = {}
for record in sorted((run / "cifar10_fast" / "stages").glob("*.json")):
    try:
        stages[record.stem] = json.loads(record.read_text())
    except ValueError:
        pass
(out / "stages.json").write_text(json.dumps(stages, indent=1, default=str))
for name in ("cifar10_fast/results.json", "results.md", "report.html"):
    if (run / name).is_file():
        shutil.copy(run / name, out / Path(name).name)
print(f"{len(stages)} stages finished: " + ", ".join(f"{k} {v.get('seconds', 0):.0f}s" for k, v in stages.items()))
table = run / "results.md"
if table.is_file():
    print(table.read_text()[:4000])
PY
exit "$code"
