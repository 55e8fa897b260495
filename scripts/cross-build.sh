#!/usr/bin/env bash
# Cross-builds uag for aarch64 (Raspberry Pi 5, Jetson Orin) on an x86_64 Debian host.
#
#   scripts/cross-build.sh                     # release binary, generic armv8-a
#   scripts/cross-build.sh --cpu pi5           # tuned for Cortex-A76 (Raspberry Pi 5)
#   scripts/cross-build.sh --cpu orin          # tuned for Cortex-A78AE (Jetson Orin)
#   scripts/cross-build.sh --profile dist      # fat LTO, one codegen unit: release artifacts
#   scripts/cross-build.sh --test              # also run the core, gateway and graphrag tests under qemu
#
# A CPU-tuned binary does not run on older cores (a Pi 4's Cortex-A72 lacks the A76's
# extensions); the generic build runs on every aarch64 board.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
TARGET=aarch64-unknown-linux-gnu
cpu=generic
profile=release
run_tests=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --test) run_tests=1; shift ;;
    *) echo "cross-build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$cpu" in
  generic) ;;
  pi5) export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=cortex-a76" ;;
  orin) export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=cortex-a78ae" ;;
  *) echo "cross-build.sh: --cpu takes generic, pi5 or orin" >&2; exit 2 ;;
esac

scripts/setup.sh --cross --no-models
# The cc crate finds aarch64-linux-gnu-gcc by itself; say it explicitly for C deps that
# read the target-suffixed variables (and for cmake/bindgen-based ones: whisper.cpp later).
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"

start=$SECONDS
if [ "$profile" = dist ]; then
  # The release artifact: linked by lld with its start-up code laid out together
  # (scripts/startup-order.sh); `cargo rustc` passes the flags to the final link only.
  # shellcheck disable=SC2046 # the flags are words
  cargo rustc --locked --target "$TARGET" --profile "$profile" --bin uag -- $(scripts/startup-order.sh --link-args aarch64)
else
  cargo build --locked --target "$TARGET" --profile "$profile" --bin uag
fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bin="target/$TARGET/$dir/uag"
echo "cross-build: $bin ($(du -h "$bin" | cut -f1), cpu $cpu) in $((SECONDS - start))s"
file "$bin" 2>/dev/null || true

if [ "$run_tests" = 1 ]; then
  start=$SECONDS
  # The tests build with the binary's profile (release unless --profile dev), so they reuse the
  # dependencies just compiled instead of compiling all of them a second time in debug.
  test_profile=$([ "$profile" = dev ] && echo dev || echo release)
  cargo test --locked --target "$TARGET" --profile "$test_profile" -p uag-core -p uag-voice -p uag-gateway -p uag-graphrag
  echo "cross-build: aarch64 tests under qemu in $((SECONDS - start))s"
fi
