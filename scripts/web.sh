#!/usr/bin/env bash
# Builds the page's WebAssembly (cargo, then wasm-bindgen, then wasm-opt) into www/pkg/
# and serves the repository root on http://127.0.0.1:${PORT:-8000}/.
# With --build-only it builds and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# wasm-bindgen's command must match the wasm-bindgen crate in Cargo.lock exactly. Not
# --locked: its own lock file pins crates that a registry mirror may lack.
want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (a few minutes, once)"
  cargo install -q wasm-bindgen-cli --version "$want"
fi
[ -x web/node_modules/.bin/wasm-opt ] || (cd web && npm ci --no-audit --no-fund --silent)

cargo build -q --release -p pixelrnn-web --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  target/wasm32-unknown-unknown/release/pixelrnn_web.wasm
web/node_modules/.bin/wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals \
  www/pkg/pixelrnn_web_bg.wasm -o www/pkg/pixelrnn_web_bg.wasm
echo "built www/pkg ($(du -k www/pkg/pixelrnn_web_bg.wasm | cut -f1) KiB of wasm)"

[ "${1:-}" = "--build-only" ] && exit 0
port=${PORT:-8000}
echo "serving the page on http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server --bind 127.0.0.1 "$port"
