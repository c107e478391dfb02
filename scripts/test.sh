#!/usr/bin/env bash
# Every check and test: formatting, clippy, the browser (wasm32) build of the
# library, and all tests, GPU ones on lavapipe when the machine has no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build -p pixelrnn --target wasm32-unknown-unknown
cargo test --workspace
