#!/usr/bin/env bash
# Build OutRank's environment for bench/bench_ranker.py in one command: bench/.venv-outrank with pinned versions.
#
#   bash bench/outrank_env.sh            # (re)build it; prints the venv's outrank path
#
# OutRank is a peer for measurement only (never a sparsearch dependency). Pins: outrank 0.97.5 (the version the
# figures name) and xxhash < 3.5: with xxhash 3.5+ OutRank 0.97.5 crashes while hashing (`TypeError: Strings must
# be encoded before hashing`). bench/outrank-constraints.txt holds the exact versions of the last build (pip
# freeze), so a rebuild resolves the same set; delete it to resolve afresh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv-outrank"
constraints="$here/outrank-constraints.txt"
python=${PYTHON:-python3}
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
args=("outrank==0.97.5" "xxhash<3.5")
[ -f "$constraints" ] && args+=(-c "$constraints")
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}"
"$venv/bin/python" -m pip freeze --disable-pip-version-check | grep -v '^pip==' > "$constraints.new"
mv "$constraints.new" "$constraints"
"$venv/bin/outrank" --help > /dev/null  # it starts
echo "$venv/bin/outrank"
