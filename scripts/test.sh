#!/usr/bin/env bash
# The whole test suite: the crate layers (scripts/check-layers.sh), formatting, clippy with
# warnings as errors, then every test of the workspace. Run `scripts/setup.sh --test` once
# first (README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stage() {
  local name="$1"; shift
  local start=$SECONDS
  printf '\n== %s\n' "$name"
  "$@"
  printf '== %s: %ds\n' "$name" "$((SECONDS - start))"
}

stage "crate layers" scripts/check-layers.sh
stage "rustfmt" cargo fmt --all -- --check
stage "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
stage "tests" cargo test --workspace --locked
stage "deployment checks" scripts/check-deploy.sh target/debug/uag
