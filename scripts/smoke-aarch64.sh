#!/usr/bin/env bash
# Smoke test of the aarch64 `uag` binary under qemu-user: start it, upload a small document
# over HTTP, ask a question about it, check the cited answer, stop it with SIGTERM (exit 0).
# Then, with the installed models (arch-independent files), the aarch64 build of candle: embed
# and chat with the local LLM. Last, it speaks and listens: Piper synthesises a sentence through
# the aarch64 ONNX Runtime library, and whisper.cpp's aarch64 (NEON) build transcribes that
# speech back. Under qemu's instruction emulation each takes about 4 minutes (whisper always
# encodes a 30 s window), so one short sentence makes the round trip, once.
# What that server needs, beyond the models:
# - ONNX Runtime for aarch64, fetched by the host's uag (pinned sha256) into a cache;
# - libespeak-ng (Piper's phonemes) for arm64: Debian's libespeak-ng1 and libsonic0 packages,
#   downloaded by pinned URL and sha256 into a cache, plus cross/pcaudio-stub.c in place of
#   libpcaudio (sound-card playback, never used; the real one pulls in PulseAudio); the host's
#   espeak-ng-data (the same files on every little-endian arch);
# - an arm64 /proc/cpuinfo: ONNX Runtime reads it to pick its kernels and crashes on the x86
#   one qemu-user passes through, so the server runs in a private mount namespace with
#   cross/cpuinfo-cortex-a76 (a Raspberry Pi 5's) bind-mounted over /proc/cpuinfo.
#
#   scripts/smoke-aarch64.sh [path/to/aarch64/uag]   (default: the release cross build)
#   SMOKE_SPEECH=0 scripts/smoke-aarch64.sh           # skip the speech part
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${1:-target/aarch64-unknown-linux-gnu/release/uag}"
[ -x "$bin" ] || { echo "smoke: $bin is not built (scripts/cross-build.sh)" >&2; exit 1; }
port="${SMOKE_PORT:-18097}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# Waits for the server started as $pid to answer /readyz; fails early if it exits, with its log.
wait_ready() {
  local log="$1" i
  for i in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "smoke: uag (aarch64, qemu) did not become ready; its log:" >&2
  tail -20 "$log" >&2
  exit 1
}

UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data" UAG__GRAPHRAG__SAMPLE_KB="" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" serve >"$work/uag.log" 2>&1 &
pid=$!
wait_ready "$work/uag.log"
python3 - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())
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
wait_ready "$work/uag2.log"
python3 - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def call(path, body, ctype="application/json"):
    req = urllib.request.Request(base + path, data=body, method="POST", headers={"content-type": ctype})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())
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
for m in piper-en_US-joe-medium whisper-tiny.en; do
  [ -d "$models/$m" ] || { echo "smoke: $m is missing in $models: run scripts/fetch-models.sh" >&2; exit 1; }
done
cache="${XDG_CACHE_HOME:-$HOME/.cache}/uag/aarch64"
mkdir -p "$cache/debs" "$work/models" "$work/lib"

# ONNX Runtime for aarch64, with this machine's uag (any build: fetching is arch-independent).
host_uag="${UAG_HOST_BIN:-}"
for candidate in target/release/uag target/debug/uag; do
  [ -z "$host_uag" ] && [ -x "$candidate" ] && host_uag="$candidate"
done
[ -n "$host_uag" ] || { echo "smoke: no host uag to fetch ONNX Runtime for aarch64 with (cargo build --bin uag, or set UAG_HOST_BIN)" >&2; exit 1; }
"$host_uag" models fetch --arch aarch64 --dir "$cache/models" onnxruntime >"$work/fetch.log" 2>&1 \
  || { cat "$work/fetch.log" >&2; echo "smoke: could not fetch ONNX Runtime for aarch64" >&2; exit 1; }
ln -s "$cache/models/onnxruntime" "$work/models/onnxruntime"
ln -s "$models/piper-en_US-joe-medium" "$work/models/piper-en_US-joe-medium"
ln -s "$models/whisper-tiny.en" "$work/models/whisper-tiny.en"

# libespeak-ng for arm64, from Debian 12's pool (the versions of this machine's amd64 packages).
debs=(
  "e/espeak-ng/libespeak-ng1_1.51+dfsg-10+deb12u2_arm64.deb 5f3d28e7b025c79bda18f5de2394a2722d611b1e3c45f0b52de51337789150a6"
  "s/sonic/libsonic0_0.2.0-12_arm64.deb 15987e29ab068f204178067df837a5b62025bc8927f308f6ae1bf27242473353"
)
for entry in "${debs[@]}"; do
  path="${entry% *}"; sha="${entry#* }"; file="$cache/debs/$(basename "$path")"
  if ! echo "$sha  $file" | sha256sum -c --status 2>/dev/null; then
    curl -fsSL --retry 3 -o "$file.part" "http://deb.debian.org/debian/pool/main/$path" \
      || { echo "smoke: could not download $path from deb.debian.org (a Debian point release may have replaced it: pin the new version and its sha256 here)" >&2; exit 1; }
    echo "$sha  $file.part" | sha256sum -c --status || { echo "smoke: $path does not match its pinned sha256" >&2; rm -f "$file.part"; exit 1; }
    mv "$file.part" "$file"
  fi
  dpkg-deb -x "$file" "$work/deb"
done
cp -a "$work/deb/usr/lib/aarch64-linux-gnu/." "$work/lib/"
aarch64-linux-gnu-gcc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o "$work/lib/libpcaudio.so.0" cross/pcaudio-stub.c
espeak_data=/usr/lib/x86_64-linux-gnu
[ -f "$espeak_data/espeak-ng-data/phontab" ] || { echo "smoke: $espeak_data/espeak-ng-data is missing (scripts/setup.sh installs espeak-ng-data)" >&2; exit 1; }

# A private mount namespace needs root (CI) or unprivileged user namespaces.
ns=(unshare -m)
[ "$(id -u)" = 0 ] || ns=(unshare -r -m)
UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data3" UAG__GRAPHRAG__SAMPLE_KB="" \
  UAG__MODELS__DIR="$work/models" \
  "${ns[@]}" sh -c 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"' sh "$root/cross/cpuinfo-cortex-a76" \
  qemu-aarch64 -L /usr/aarch64-linux-gnu -E "LD_LIBRARY_PATH=$work/lib" -E "ESPEAK_DATA_PATH=$espeak_data" \
  "$bin" serve >"$work/uag3.log" 2>&1 &
pid=$!
wait_ready "$work/uag3.log"
if ! python3 - "$port" <<'PY'
import json, sys, time, urllib.request, uuid
base = f"http://127.0.0.1:{sys.argv[1]}"
def post(path, body, ctype):
    req = urllib.request.Request(base + path, data=body, method="POST", headers={"content-type": ctype})
    with urllib.request.urlopen(req, timeout=900) as r:
        return r.read()
start = time.monotonic()
wav = post("/v1/audio/speech", json.dumps({"model": "tts-1", "input": "The pump needs a new filter.",
           "response_format": "wav"}).encode(), "application/json")
assert wav[:4] == b"RIFF" and len(wav) > 22050, len(wav)
print(f"smoke: aarch64 Piper spoke {len(wav)} bytes of WAV in {time.monotonic() - start:.0f} s (emulated)")
boundary = uuid.uuid4().hex
form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-tiny.en\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n"
        f"Content-Type: audio/wav\r\n\r\n").encode() + wav + f"\r\n--{boundary}--\r\n".encode()
start = time.monotonic()
text = json.loads(post("/v1/audio/transcriptions", form, f"multipart/form-data; boundary={boundary}"))["text"]
words = text.lower()
assert "pump" in words and "filter" in words, text
print(f"smoke: aarch64 whisper heard {text.strip()!r} in {time.monotonic() - start:.0f} s (emulated)")
PY
then
  echo "smoke: the speech server's log:" >&2
  tail -20 "$work/uag3.log" >&2
  exit 1
fi
kill -TERM "$pid"
wait "$pid"
echo "smoke: aarch64 Piper (aarch64 ONNX Runtime) spoke and whisper.cpp heard it; uag exited cleanly"
