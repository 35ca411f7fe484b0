#!/usr/bin/env bash
# Install Debian's SLURM + munge when missing, so the SLURM tests run (called by `make test`).
# Idempotent and fast when everything is there (one dpkg query). Needs root and apt; where either
# is missing it says so loudly and exits 0: the SLURM tests then skip with that reason.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "ensure-packages: WARNING: no apt-get; cannot install ${missing[*]}. SLURM tests will be SKIPPED." >&2
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  echo "ensure-packages: WARNING: not root; cannot install ${missing[*]}. SLURM tests will be SKIPPED." >&2
  exit 0
fi

echo "ensure-packages: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "ensure-packages: WARNING: apt-get could not install ${missing[*]}. SLURM tests will be SKIPPED." >&2
  exit 0
fi
echo "ensure-packages: installed $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
