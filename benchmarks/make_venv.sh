#!/usr/bin/env bash
# Creates (or updates) DIR/.venv with the project at its tested pins (constraints.txt) plus the
# packages of REQUIREMENTS: a benchmark's own environment, never the project's dependencies. The
# constraints keep torch / torchvision at the tested versions, so the compared libraries run on the
# same torch as selfsup.
#
#   bash benchmarks/make_venv.sh DIR REQUIREMENTS
set -euo pipefail
dir="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"

test -x "$dir/.venv/bin/python" || "$python" -m venv "$dir/.venv"
"$dir/.venv/bin/pip" install --quiet --disable-pip-version-check -c "$root/constraints.txt" -e "$root" -r "$2"
