#!/usr/bin/env bash
# The main job: trains each of the four models (PixelCNN, Row LSTM, Diagonal BiLSTM,
# and the Multi-Scale PixelRNN of two Row LSTMs, 14x14 then 28x28) on Fashion-MNIST
# with the same budget, evaluates each on the test set and writes samples and
# completions, under runs/main/MODEL/. MODELS="row-lstm" picks a subset; STEPS sets
# the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo build --release -p pixelrnn-cli
pixelrnn=target/release/pixelrnn

for model in ${MODELS:-pixelcnn row-lstm diag-bilstm multiscale}; do
  run=runs/main/$model
  $pixelrnn train --model "$model" --data fashion-mnist --out "$run" \
    --layers 3 --hidden 16 --out-hidden 32 --steps "${STEPS:-800}" --eval-every 400 "$@"
  $pixelrnn eval --checkpoint "$run/last.safetensors" --data fashion-mnist --json \
    > "$run/test.json"
  cat "$run/test.json"
  $pixelrnn sample --checkpoint "$run/last.safetensors" --count 16 --seed 1 \
    --out "$run/samples.png"
  $pixelrnn complete --checkpoint "$run/last.safetensors" --data fashion-mnist \
    --occlude bottom-half --count 4 --completions 3 --seed 1 --out "$run/completions.png"
  echo "pictures: $run/samples.png $run/completions.png"
done
