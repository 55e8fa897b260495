#!/usr/bin/env bash
# Smoke test of the aarch64 `uag` binary under qemu-user: start it, upload a small document
# over HTTP, ask a question about it, check the cited answer, stop it with SIGTERM (exit 0).
# Then, with the installed models (arch-independent files), the aarch64 build of candle: embed
# and chat with the local LLM. whisper.cpp and ONNX Runtime are left out here: under qemu's
# instruction emulation one whisper window takes minutes, and ONNX Runtime needs an arm64
# cpuinfo (see shared build notes); the aarch64 unit tests cover their loading code.
#
#   scripts/smoke-aarch64.sh [path/to/aarch64/uag]   (default: the release cross build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${1:-target/aarch64-unknown-linux-gnu/release/uag}"
[ -x "$bin" ] || { echo "smoke: $bin is not built (scripts/cross-build.sh)" >&2; exit 1; }
port="${SMOKE_PORT:-18097}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data" UAG__GRAPHRAG__SAMPLE_KB="" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" serve >"$work/uag.log" 2>&1 &
pid=$!

python3 - "$port" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())
for _ in range(300):
    try:
        if call("GET", "/readyz")[0] == 200:
            break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("smoke: uag (aarch64, qemu) did not become ready")
doc = b"# Pump station\n\n## Power\n\nThe Delta Pump needs a 48 V supply and draws 2 A at full speed.\n"
status, body = call("POST", "/v1/documents?name=pump.md", doc, {"content-type": "text/markdown"})
assert status == 201, body
status, body = call("POST", "/v1/inference", json.dumps({"input": "What supply does the Delta Pump need?"}).encode(), {"content-type": "application/json"})
assert status == 200 and "48 V" in body["output"] and body["sources"][0]["document"] == "pump.md", body
print("smoke: aarch64 uag answered:", body["output"])
PY
kill -TERM "$pid"
wait "$pid"
echo "smoke: aarch64 uag exited cleanly on SIGTERM"

models="${UAG_MODELS_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/uag/models}"
if [ ! -f "$models/all-minilm-l6-v2/model.safetensors" ] || [ ! -f "$models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q8_0.gguf" ]; then
  echo "smoke: models missing in $models: run scripts/fetch-models.sh" >&2
  exit 1
fi
UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data2" UAG__GRAPHRAG__SAMPLE_KB="" \
  UAG__MODELS__DIR="$models" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" serve >"$work/uag2.log" 2>&1 &
pid=$!
python3 - "$port" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def call(path, body, ctype="application/json"):
    req = urllib.request.Request(base + path, data=body, method="POST", headers={"content-type": ctype})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())
for _ in range(300):
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("smoke: uag (aarch64, qemu) did not become ready")
emb = call("/v1/embeddings", json.dumps({"input": "kitchen lights"}).encode())
assert len(emb["data"][0]["embedding"]) == 384, emb
print("smoke: aarch64 embeddings: 384 dimensions")
chat = call("/v1/chat/completions", json.dumps({"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}).encode())
assert chat["choices"][0]["message"]["content"].strip() and chat["usage"]["completion_tokens"] > 0, chat
print("smoke: aarch64 LLM said:", chat["choices"][0]["message"]["content"])
PY
kill -TERM "$pid"
wait "$pid"
echo "smoke: aarch64 embeddings and LLM answered; uag exited cleanly"
