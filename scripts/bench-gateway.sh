#!/usr/bin/env bash
# Gateway overhead benchmark: latency of a request through uag to a local mock upstream, minus
# the latency of the same request straight to that upstream, at fixed request rates, measured
# in one run with oha. Also the highest rate each path sustains (closed loop) and uag's memory.
# Writes the results into docs/BENCHMARKS.md between the gateway-overhead markers.
#
#   scripts/bench-gateway.sh                 # rates 500 1000 2000 4000, 15 s each, 3 repetitions
#   REPS=5 scripts/bench-gateway.sh          # more repetitions (the table shows their median)
#   RATES="2000" DURATION=30s scripts/bench-gateway.sh
#   NO_WRITE=1 scripts/bench-gateway.sh      # print only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

RATES="${RATES:-500 1000 2000 4000}"
DURATION="${DURATION:-15s}"
REPS="${REPS:-3}"
CONNECTIONS="${CONNECTIONS:-16}"
MOCK_ADDR="127.0.0.1:${MOCK_PORT:-18081}"
UAG_ADDR="127.0.0.1:${UAG_PORT:-18080}"
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh --bench --no-models
cargo build --release --locked --bin uag --example mock_upstream

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/mock_upstream "$MOCK_ADDR" >"$work/mock.log" 2>&1 &
pids+=($!)

cat >"$work/uag.toml" <<EOF
[server]
listen = "$UAG_ADDR"
[storage]
data_dir = "$work/data"
[log]
level = "warn"
[graphrag]
# No sample knowledge base: its background ingest would compete with the load.
sample_kb = ""
[[providers]]
name = "mock"
type = "openai_compatible"
base_url = "http://$MOCK_ADDR/v1"
models = ["bench"]
timeout_ms = 5000
[routes]
default = ["mock/bench"]
EOF
target/release/uag serve --config "$work/uag.toml" >"$work/uag.log" 2>&1 &
uag_pid=$!
pids+=("$uag_pid")

wait_for() {
  for _ in $(seq 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: $1 did not come up" >&2
  cat "$work"/*.log >&2
  exit 1
}
wait_for "http://$UAG_ADDR/healthz"
wait_for "http://$MOCK_ADDR/v1/models"

question='"messages":[{"role":"user","content":"What is the capital of France?"}]'
printf '{"model":"bench",%s}' "$question" >"$work/direct.json"
printf '{"model":"mock/bench",%s}' "$question" >"$work/via.json"
direct_url="http://$MOCK_ADDR/v1/chat/completions"
via_url="http://$UAG_ADDR/v1/chat/completions"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$uag_pid/status"; }
idle_rss=$(rss_kb)

run_oha() { # name url body [extra oha args...]
  local name="$1" url="$2" body="$3"; shift 3
  oha --no-tui --output-format json -m POST -T application/json -D "$body" "$@" "$url" >"$work/$name.json"
}

echo "bench: warm-up"
run_oha warm-direct "$direct_url" "$work/direct.json" -z 3s -c "$CONNECTIONS"
run_oha warm-via "$via_url" "$work/via.json" -z 3s -c "$CONNECTIONS"

# Repetitions interleave direct and through-uag runs, so a noisy moment of the shared machine
# hits both sides; the table reports the median repetition.
for rep in $(seq "$REPS"); do
  for rate in $RATES; do
    echo "bench: repetition $rep: $rate requests/s for $DURATION, direct then through uag"
    run_oha "direct-$rate-$rep" "$direct_url" "$work/direct.json" -z "$DURATION" -q "$rate" -c "$CONNECTIONS" --latency-correction
    run_oha "via-$rate-$rep" "$via_url" "$work/via.json" -z "$DURATION" -q "$rate" -c "$CONNECTIONS" --latency-correction
  done
done
loaded_rss=$(rss_kb)

echo "bench: highest sustained rate (closed loop, 64 connections, $DURATION)"
run_oha max-direct "$direct_url" "$work/direct.json" -z "$DURATION" -c 64
run_oha max-via "$via_url" "$work/via.json" -z "$DURATION" -c 64

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
python3 - "$work" "$RATES" "$DURATION" "$CONNECTIONS" "$idle_rss" "$loaded_rss" "$cpu" "$(nproc)" "${NO_WRITE:-}" "$REPS" <<'PY'
import json, sys, datetime, pathlib, re, statistics
work, rates, duration, conns, idle_rss, loaded_rss, cpu, ncpu, no_write, reps = sys.argv[1:11]
reps = int(reps)
def load(name):
    return json.load(open(f"{work}/{name}.json"))
def pct(r, p):
    return r["latencyPercentiles"][p] * 1000.0
def ok(r):
    codes = r.get("statusCodeDistribution", {})
    total = sum(codes.values()) + sum(r.get("errorDistribution", {}).values())
    return codes.get("200", 0), total
rows = []
spread = []
for rate in rates.split():
    runs = []
    for rep in range(1, reps + 1):
        d, v = load(f"direct-{rate}-{rep}"), load(f"via-{rate}-{rep}")
        runs.append((pct(v, "p99") - pct(d, "p99"), d, v))
    runs.sort(key=lambda r: r[0])
    _, d, v = runs[len(runs) // 2]  # the median repetition by p99 overhead
    d_ok, d_total = ok(d); v_ok, v_total = ok(v)
    rows.append((int(rate), pct(d, "p50"), pct(v, "p50"), pct(d, "p99"), pct(v, "p99"),
                 v["summary"]["requestsPerSec"], v_ok, v_total))
    spread.append(f"{rate} req/s: " + ", ".join(f"{r[0]:.3f}" for r in runs))
md, mv = load("max-direct"), load("max-via")
lines = [
    "<!-- gateway-overhead:start -->",
    f"Measured {datetime.date.today()} by `scripts/bench-gateway.sh` on {ncpu} cores ({cpu}); load generator, "
    f"uag and the mock upstream share those cores. oha {duration} per rate and side, {reps} interleaved repetitions "
    f"(the table shows the median repetition by p99 overhead), {conns} connections, "
    "`--latency-correction` (no coordinated omission), non-streaming `POST /v1/chat/completions`, "
    "release build, `log.level = warn`. Overhead = latency through uag minus latency straight to the "
    "mock upstream at the same rate in the same run; ratio = through uag / direct.",
    "",
    "| rate (req/s) | direct p50 (ms) | uag p50 (ms) | **p50 overhead (ms)** | direct p99 (ms) | uag p99 (ms) | **p99 overhead (ms)** | p99 ratio | achieved (req/s) | 200s / sent |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for rate, d50, v50, d99, v99, rps, v_ok, v_total in rows:
    lines.append(f"| {rate} | {d50:.3f} | {v50:.3f} | **{v50 - d50:.3f}** | {d99:.3f} | {v99:.3f} | **{v99 - d99:.3f}** | {v99 / d99:.2f}x | {rps:.0f} | {v_ok} / {v_total} |")
mv_ok, mv_total = ok(mv); md_ok, md_total = ok(md)
lines += [
    "",
    "p99 overhead (ms) of every repetition, sorted: " + "; ".join(spread) + ".",
    "",
    f"Highest sustained rate (closed loop, 64 connections, {duration}): through uag "
    f"**{mv['summary']['requestsPerSec']:.0f} req/s** ({mv_ok}/{mv_total} answered 200); straight to the mock "
    f"{md['summary']['requestsPerSec']:.0f} req/s ({md_ok}/{md_total}); ratio {mv['summary']['requestsPerSec'] / md['summary']['requestsPerSec']:.2f}.",
    "",
    f"uag resident memory: {int(idle_rss) / 1024:.1f} MiB idle, {int(loaded_rss) / 1024:.1f} MiB after the fixed-rate runs.",
    "<!-- gateway-overhead:end -->",
]
block = "\n".join(lines)
print(block)
if no_write:
    sys.exit(0)
path = pathlib.Path("docs/BENCHMARKS.md")
text = path.read_text() if path.exists() else "# Benchmarks\n"
if "<!-- gateway-overhead:start -->" in text:
    text = re.sub(r"<!-- gateway-overhead:start -->.*?<!-- gateway-overhead:end -->", lambda _: block, text, flags=re.S)
else:
    text += "\n" + block + "\n"
path.write_text(text)
print(f"bench: wrote {path}")
PY
