#!/usr/bin/env bash
# Create bench/.venv-attribution for the attribution benchmark's peers (TRAK, Kronfluence, dattri).
# It reuses the project's venv (torch 2.13.0 CPU, transformers, peft, provenant) through a .pth line,
# so the only new packages are the pinned peers; constraints.txt keeps pip from touching torch.
# kronfluence goes in with --no-deps: its torchvision requirement breaks beside the CPU torch build
# and it never imports torchvision for language models (its other requirements are pinned here).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MAIN="$ROOT/.venv"
VENV="$ROOT/bench/.venv-attribution"
[ -x "$MAIN/bin/python" ] || { echo "run 'make setup' first: $MAIN/bin/python is missing" >&2; exit 1; }
"$MAIN/bin/python" -m venv --system-site-packages "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MAIN_SITE="$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$MAIN_SITE')" > "$SITE/_provenant_main_venv.pth"
"$VENV/bin/pip" install -q -c "$ROOT/bench/attribution/constraints.txt" -r "$ROOT/bench/attribution/requirements.txt"
"$VENV/bin/pip" install -q --no-deps -c "$ROOT/bench/attribution/constraints.txt" kronfluence==1.0.1
"$VENV/bin/python" -c "import torch, trak, kronfluence, dattri, provenant; print('peers ready; torch', torch.__version__)"
