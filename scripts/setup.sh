#!/usr/bin/env bash
# Prepares a fresh Debian machine for uag. Idempotent: a second run changes nothing and
# takes seconds.
#
#   scripts/setup.sh            what building and running uag needs, and the default local models
#                                 (scripts/fetch-models.sh: whisper tiny.en, SmolLM2, MiniLM,
#                                 the Piper voice, ONNX Runtime; ~450 MB, verified by sha256)
#   scripts/setup.sh --test     + what the test suite needs: the official openai (with websockets, for Realtime) and anthropic SDKs and wyoming in .venv-sdk,
#                                 nginx, openssl, docker-compose and systemd tools (deploy checks),
#                                 redis-server (shared rate limits), chromium + chromium-driver (kiosk
#                                 browser test), and the multilingual whisper-base model
#   scripts/setup.sh --no-models  skip the model download (build and run without local models)
#   scripts/setup.sh --bench    + oha, an HTTP load generator for ad-hoc runs (scripts/bench-gateway.sh
#                                 builds its own, examples/loadgen.rs, and installs LiteLLM in .venv-litellm)
#   scripts/setup.sh --cross    + the aarch64 cross toolchain and qemu (scripts/cross-build.sh)
#   scripts/setup.sh --deploy   + what the deployment checks use (nginx, docker-compose, openssl)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want_test=0
want_bench=0
want_cross=0
want_deploy=0
want_models=1
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1; want_deploy=1 ;;
    --bench) want_bench=1 ;;
    --cross) want_cross=1 ;;
    --deploy) want_deploy=1 ;;
    --no-models) want_models=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --test, --bench, --cross, --deploy, --no-models)" >&2; exit 2 ;;
  esac
done

# Versions the project is tested with; bump here, nowhere else.
OPENAI_SDK_VERSION="3.57.0"
WYOMING_VERSION="1.10.2"
# The WebSocket library of the openai SDK's Realtime client (openai[realtime] wants >=13,<16).
WEBSOCKETS_VERSION="15.0.1"
ANTHROPIC_SDK_VERSION="2.16.0"
OHA_VERSION="1.16.0"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

log() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
# debian-handbook: the sample knowledge base ingested on first start (and the tuning evaluation corpus);
# debian-faq: the held-out evaluation corpus (docs/EVALUATION.md), never tuned on.
# cmake, g++, clang/libclang-dev: whisper.cpp and its bindings; espeak-ng: phonemes for the
# Piper voices (loaded at run time); python3-pip and curl: model downloads.
packages=(ca-certificates pkg-config gcc g++ cmake clang libclang-dev python3 python3-venv python3-pip curl procps
  espeak-ng espeak-ng-data debian-handbook debian-faq)
# Cross: the aarch64 toolchain and qemu; util-linux and mount: unshare and the bind mount of an
# arm64 cpuinfo that the aarch64 smoke test runs ONNX Runtime under (scripts/smoke-aarch64.sh).
if [ "$want_cross" = 1 ]; then packages+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user file util-linux mount); fi
# prometheus: promtool checks the Prometheus config and alert rules in deploy/.
if [ "$want_deploy" = 1 ]; then packages+=(nginx docker-compose openssl systemd prometheus); fi
# redis-server: the shared rate-limit backend tests start their own instance on a free port.
if [ "$want_test" = 1 ]; then packages+=(redis-server); fi
# chromium + chromium-driver: the kiosk page's end-to-end test drives a real headless browser
# over WebDriver (tests/it/kiosk_browser.rs); fonts so the screenshot shows text.
if [ "$want_test" = 1 ]; then packages+=(chromium chromium-driver fonts-dejavu-core); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# --- Rust toolchain --------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: no Rust toolchain found; install rustup (https://rustup.rs) and rerun" >&2
    exit 1
  fi
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    log "adding rustup component $component"
    rustup component add "$component"
  fi
done
if [ "$want_cross" = 1 ] && ! rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$'; then
  log "adding rustup target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi
log "$(cargo --version)"

# --- Test tools ------------------------------------------------------------------------------
if [ "$want_test" = 1 ]; then
  venv="$root/.venv-sdk"
  if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_SDK_VERSION')" 2>/dev/null; then
    log "installing the openai Python SDK $OPENAI_SDK_VERSION into .venv-sdk"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_SDK_VERSION"
  else
    log "openai SDK $OPENAI_SDK_VERSION present in .venv-sdk"
  fi
  # The Wyoming client library Home Assistant itself uses (tests/it/wyoming.rs).
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('wyoming') != '$WYOMING_VERSION')" 2>/dev/null; then
    log "installing the wyoming Python package $WYOMING_VERSION into .venv-sdk"
    "$venv/bin/pip" install -q --disable-pip-version-check "wyoming==$WYOMING_VERSION"
  else
    log "wyoming $WYOMING_VERSION present in .venv-sdk"
  fi
  # The openai SDK's Realtime client needs websockets (tests/sdk/realtime_sdk_check.py).
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('websockets') != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    log "installing the websockets Python package $WEBSOCKETS_VERSION into .venv-sdk (openai Realtime client)"
    "$venv/bin/pip" install -q --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION"
  else
    log "websockets $WEBSOCKETS_VERSION present in .venv-sdk"
  fi
  # The official Anthropic SDK (tests/it/anthropic_compat.rs drives /v1/messages with it).
  if ! "$venv/bin/python" -c "import anthropic, sys; sys.exit(anthropic.__version__ != '$ANTHROPIC_SDK_VERSION')" 2>/dev/null; then
    log "installing the anthropic Python SDK $ANTHROPIC_SDK_VERSION into .venv-sdk"
    "$venv/bin/pip" install -q --disable-pip-version-check "anthropic==$ANTHROPIC_SDK_VERSION"
  else
    log "anthropic SDK $ANTHROPIC_SDK_VERSION present in .venv-sdk"
  fi
fi

# --- Benchmark tools -------------------------------------------------------------------------
if [ "$want_bench" = 1 ]; then
  if ! oha --version 2>/dev/null | grep -q "$OHA_VERSION"; then
    log "installing oha $OHA_VERSION (HTTP load generator) with cargo"
    cargo install --locked --quiet oha --version "$OHA_VERSION"
  else
    log "oha $OHA_VERSION present"
  fi
fi

# --- Local models ----------------------------------------------------------------------------
if [ "$want_models" = 1 ]; then
  # The test suite runs against real models; it builds the debug binary anyway, so fetch with it.
  if [ "$want_test" = 1 ]; then
    UAG_FETCH_PROFILE=dev "$root/scripts/fetch-models.sh"
    UAG_FETCH_PROFILE=dev "$root/scripts/fetch-models.sh" whisper-base
  else
    "$root/scripts/fetch-models.sh"
  fi
else
  log "skipping local models (--no-models); scripts/fetch-models.sh installs them later"
fi

log "done"
