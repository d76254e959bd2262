#!/usr/bin/env bash
# Creates benchmarks/parity/.venv: the project with its tested pins (../../constraints.txt) plus
# lightly at the version in requirements.txt, the reference the parity benchmark trains beside
# selfsup. The constraints keep torch / torchvision at the project's tested versions, so both
# libraries train on the same torch.
#
#   bash benchmarks/parity/setup.sh     # then: benchmarks/parity/.venv/bin/python benchmarks/parity/compare.py ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../make_venv.sh" "$here" "$here/requirements.txt"
"$here/.venv/bin/python" -c "import lightly, torch; print(f'benchmarks/parity/.venv ready: torch {torch.__version__}, lightly {lightly.__version__}')"
