#!/usr/bin/env bash
# Every check and test: formatting, clippy, the browser (wasm32) build of the
# library and the page, all Rust tests (GPU ones on lavapipe when the machine has no
# GPU), and the page end to end in headless Chromium (screenshots in runs/web/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/web.sh --build-only
cargo test --workspace
node web/tests/e2e.mjs
