#!/usr/bin/env bash
# Run here (not on the device) before a device call: copies what benchmarks/gpu/paper.sh needs into git-ignored
# folders of the checkout, to be named in the device tool's `carry`: .device-data (the CIFAR-10 archive and its
# converter) and .device-pylib (pyautoattack's code, without its 44 MB example model; the device image lacks it).
#   bash benchmarks/gpu/prepare.sh [SHARED_DATA_DIR]      # default ../shared/data
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${1:-$root/../shared/data}
mkdir -p "$root/.device-data" "$root/.device-pylib"
cp "$shared/cifar10-jpeg.tar.gz" "$shared/cifar10_jpeg.py" "$root/.device-data/"
src=$(python3 -c 'import os, pyautoattack; print(os.path.dirname(pyautoattack.__file__))')
rm -rf "$root/.device-pylib/pyautoattack"
cp -r "$src" "$root/.device-pylib/pyautoattack"
rm -rf "$root/.device-pylib/pyautoattack/examples" "$root/.device-pylib/pyautoattack/__pycache__"
du -sh "$root/.device-data" "$root/.device-pylib"
echo "carry: [\".device-data\", \".device-pylib\"]; command: ADVFEATURES_COMMIT=$(git -C "$root" rev-parse HEAD)" \
     "bash benchmarks/gpu/paper.sh \$OUT"
