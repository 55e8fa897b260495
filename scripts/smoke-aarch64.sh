#!/usr/bin/env bash
# Smoke test of the aarch64 `uag` binary under qemu-user: start it, upload a small document
# over HTTP, ask a question about it, check the cited answer, stop it with SIGTERM (exit 0).
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
