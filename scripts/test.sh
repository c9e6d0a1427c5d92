#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test under cargo-nextest
# (a hung FUSE daemon cannot hang the run: see .config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --profile ci "$@"
