#!/usr/bin/env bash
# Prepares a fresh Debian machine for uag. Idempotent: a second run changes nothing and
# takes seconds.
#
#   scripts/setup.sh            what building and running uag needs
#   scripts/setup.sh --test     + what the test suite needs (the official openai SDK in .venv-sdk)
#   scripts/setup.sh --bench    + the load generator for scripts/bench-gateway.sh (oha)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want_test=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --bench) want_bench=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --test, --bench)" >&2; exit 2 ;;
  esac
done

# Versions the project is tested with; bump here, nowhere else.
OPENAI_SDK_VERSION="3.57.0"
OHA_VERSION="1.16.0"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

log() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
# debian-handbook: the sample knowledge base ingested on first start (and the evaluation corpus).
packages=(ca-certificates pkg-config gcc python3 python3-venv procps debian-handbook)
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

log "done"
