#!/usr/bin/env bash
# The main job: trains a small PixelCNN on Fashion-MNIST, evaluates it on the test
# set and writes samples and completions, all under runs/main/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo build --release -p pixelrnn-cli
pixelrnn=target/release/pixelrnn
run=runs/main

$pixelrnn train --model pixelcnn --data fashion-mnist --out $run \
  --layers 3 --hidden 16 --out-hidden 32 --steps ${STEPS:-800} --eval-every 400 "$@"
$pixelrnn eval --checkpoint $run/last.safetensors --data fashion-mnist
$pixelrnn sample --checkpoint $run/last.safetensors --count 16 --seed 1 --out $run/samples.png
$pixelrnn complete --checkpoint $run/last.safetensors --data fashion-mnist \
  --occlude bottom-half --count 4 --completions 3 --seed 1 --out $run/completions.png
echo "pictures: $run/samples.png $run/completions.png"
