#!/usr/bin/env bash
# Puts the Fashion-MNIST IDX files into $1/fashion-mnist (default data/) from Debian's
# dataset-fashion-mnist package: the installed copy if there is one, else `apt-get download`
# (no root needed) unpacked with dpkg -x. Never touches any other network.
set -euo pipefail
dest="${1:-data}"
target="$dest/fashion-mnist"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have_all() { for f in $files; do [ -s "$1/$f" ] || return 1; done; }
if have_all "$target"; then exit 0; fi
mkdir -p "$target"
if have_all /usr/share/datasets/fashion-mnist; then
  for f in $files; do cp /usr/share/datasets/fashion-mnist/$f "$target/"; done
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get download dataset-fashion-mnist >/dev/null 2>&1 ) || {
  # A fresh machine may have no package lists yet.
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
  ( cd "$work" && apt-get download dataset-fashion-mnist >/dev/null ) || {
    echo "Could not download Debian's dataset-fashion-mnist. Install it (apt-get install dataset-fashion-mnist)" \
         "or copy the four IDX .gz files into $target." >&2
    exit 1
  }
}
dpkg -x "$work"/dataset-fashion-mnist_*.deb "$work/root"
for f in $files; do cp "$work/root/usr/share/datasets/fashion-mnist/$f" "$target/"; done
echo "Fashion-MNIST in $target"
