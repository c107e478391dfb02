#!/usr/bin/env bash
# Installs what building, testing and training need on a fresh Debian machine: Rust
# (with clippy, rustfmt and the wasm32 target), Mesa's Vulkan drivers (lavapipe, a
# software GPU for machines without one), Debian's Fashion-MNIST files, numpy for
# the test that checks the checkpoint format from Python, and Chromium and Node.js
# for the test of the page.
set -euo pipefail

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

apt_install() {
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

need=()
pkgs=(mesa-vulkan-drivers libvulkan1 dataset-fashion-mnist ca-certificates curl gcc libc6-dev
  python3 chromium)
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# playwright-core, which drives Chromium in the page's test, needs Node.js 20 or later.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js 20 or later is needed for the page's test; this machine has $(node -v 2>/dev/null || echo none)" >&2
  exit 1
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v rustup >/dev/null 2>&1; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
rustup component add clippy rustfmt >/dev/null
rustup target add wasm32-unknown-unknown >/dev/null

# numpy for whichever python3 comes first on PATH (the tests run that one).
if ! python3 -c "import numpy" 2>/dev/null; then
  python3 -m pip install -q numpy 2>/dev/null || apt_install python3-numpy
fi
