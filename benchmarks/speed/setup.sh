#!/usr/bin/env bash
# Creates benchmarks/speed/.venv: the project with its tested pins (../../constraints.txt) plus the
# libraries the speed benchmarks compare against, lightly and kornia, at the versions pinned in
# requirements.txt. They are the benchmarks' own environment, never dependencies of the project.
#
#   bash benchmarks/speed/setup.sh            # then: benchmarks/speed/.venv/bin/python benchmarks/speed/...
#
# The constraints file keeps torch / torchvision at the project's tested versions: pip fails rather
# than replace them, so lightly and kornia are measured on the same torch as selfsup.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bash "$root/benchmarks/make_venv.sh" "$here" "$here/requirements.txt"
"$here/.venv/bin/python" - "$root/constraints.txt" <<'PY'
import sys
import kornia, lightly, torch, torchvision

pins = dict(line.strip().split("==") for line in open(sys.argv[1]) if "==" in line and not line.startswith("#"))
for name, module in (("torch", torch), ("torchvision", torchvision)):
    if module.__version__.split("+")[0] != pins[name]:
        sys.exit(f"benchmarks/speed/.venv has {name} {module.__version__}, expected {pins[name]} (constraints.txt)")
print(f"benchmarks/speed/.venv ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"lightly {lightly.__version__}, kornia {kornia.__version__}")
PY
