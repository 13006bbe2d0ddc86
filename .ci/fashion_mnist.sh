#!/usr/bin/env bash
# Make Fashion-MNIST available from Debian's dataset-fashion-mnist (IDX files); prints the folder on stdout.
# Installed when missing, like PostgreSQL in .ci/postgres.sh. Usage: dir=$(bash .ci/fashion_mnist.sh)
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ ! -f "$dir/train-images-idx3-ubyte.gz" ] || [ ! -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >&2
fi
echo "$dir"
