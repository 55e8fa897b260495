#!/usr/bin/env bash
# Smoke test of the aarch64 `uag` binary under qemu-user: start it, upload a small document
# over HTTP, ask a question about it, check the cited answer, stop it with SIGTERM (exit 0).
# Then, with the installed models (arch-independent files), the aarch64 build of candle: embed
# and chat with the local LLM. Last, it listens: whisper.cpp's aarch64 (NEON) build transcribes
# a sentence spoken by the host's espeak-ng. Under qemu's instruction emulation that one short
# clip takes about 4 minutes (whisper always encodes a 30 s window), so it runs once, here.
# Piper is not run: its phonemes come from libespeak-ng, whose arm64 package pulls in
# PulseAudio's library chain, which this x86 build host does not have for arm64 (and installing
# it through multiarch upgrades the host's own systemd and libc packages).
#
#   scripts/smoke-aarch64.sh [path/to/aarch64/uag]   (default: the release cross build)
#   SMOKE_SPEECH=0 scripts/smoke-aarch64.sh           # skip the whisper part
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

[ "${SMOKE_SPEECH:-1}" = 1 ] || exit 0
if [ ! -f "$models/whisper-tiny.en/ggml-model.bin" ]; then
  echo "smoke: whisper-tiny.en is missing in $models: run scripts/fetch-models.sh" >&2
  exit 1
fi
command -v espeak-ng >/dev/null || { echo "smoke: espeak-ng is missing (scripts/setup.sh installs it)" >&2; exit 1; }
espeak-ng -v en-us -w "$work/speech.wav" "The pump needs a new filter."
# Only whisper-tiny.en in its models folder: the request cannot fall back on another model.
mkdir -p "$work/models"
ln -s "$models/whisper-tiny.en" "$work/models/whisper-tiny.en"
UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data3" UAG__GRAPHRAG__SAMPLE_KB="" \
  UAG__MODELS__DIR="$work/models" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" serve >"$work/uag3.log" 2>&1 &
pid=$!
if ! python3 - "$port" "$work/speech.wav" <<'PY'
import json, sys, time, urllib.request, uuid
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("smoke: uag (aarch64, qemu) did not become ready")
wav = open(sys.argv[2], "rb").read()
boundary = uuid.uuid4().hex
form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-tiny.en\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n"
        f"Content-Type: audio/wav\r\n\r\n").encode() + wav + f"\r\n--{boundary}--\r\n".encode()
req = urllib.request.Request(base + "/v1/audio/transcriptions", data=form, method="POST",
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})
start = time.monotonic()
with urllib.request.urlopen(req, timeout=900) as r:
    text = json.loads(r.read())["text"]
words = text.lower()
assert "pump" in words and "filter" in words, text
print(f"smoke: aarch64 whisper heard {text.strip()!r} in {time.monotonic() - start:.0f} s (emulated)")
PY
then
  echo "smoke: the whisper server's log:" >&2
  tail -20 "$work/uag3.log" >&2
  exit 1
fi
kill -TERM "$pid"
wait "$pid"
echo "smoke: aarch64 whisper.cpp transcribed speech; uag exited cleanly"
