#!/usr/bin/env bash
# Thin wrapper: `launch/torchrun.sh [flashdist launch options] -- <command>` == `flashdist launch ...`.
# Uses the repo's .venv when there is one. Examples (see launch/README.md):
#   launch/torchrun.sh --nproc-per-node 2 -- flashdist fit --config configs/quickstart.yaml
#   launch/torchrun.sh --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29400 -- flashdist fit --config c.yaml
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$python" ]] || python="python3"
exec "$python" -m flashdist.cli.main launch "$@"
