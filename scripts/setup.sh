#!/usr/bin/env bash
# Installs what building, testing and training need on a fresh Debian machine: Rust
# (with clippy, rustfmt and the wasm32 target), Mesa's Vulkan drivers (lavapipe, a
# software GPU for machines without one), Debian's Fashion-MNIST files, numpy for
# the test that checks the checkpoint format from Python, and Chromium and Node.js
# for the test of the page.
set -euo pipefail

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

need=()
pkgs=(mesa-vulkan-drivers libvulkan1 dataset-fashion-mnist ca-certificates curl gcc libc6-dev chromium)
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
if ! python3 -c "import numpy" 2>/dev/null; then
  python3 -m pip install -q numpy 2>/dev/null ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-numpy
fi
