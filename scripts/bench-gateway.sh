#!/usr/bin/env bash
# Gateway overhead benchmark: latency of a request through uag with its full stack on (JWT
# authentication, rate limits that check but never refuse, metrics, the response cache's miss
# path, and the Rego policy when this build has one) to a local mock upstream, minus the latency
# of the same request straight to that upstream; side by side with the LiteLLM proxy (installed
# from PyPI into .venv-litellm by this script) pointed at the same mock. One run measures all
# three at each fixed rate (examples/loadgen.rs: open loop, a unique body per request so uag's
# cache never hits), then each one's highest closed-loop rate, and the memory of both gateways.
# Writes the results into docs/BENCHMARKS.md between the gateway-overhead markers.
#
#   scripts/bench-gateway.sh                 # rates 100 500 1000 2000, 6 s each, 7 repetitions
#   REPS=9 scripts/bench-gateway.sh          # more repetitions (the table shows the median)
#   RATES="2000" DURATION=30 scripts/bench-gateway.sh
#   LITELLM=0 scripts/bench-gateway.sh       # uag against the mock only
#   NO_BUILD=1 scripts/bench-gateway.sh      # use the release binaries already in target/
#   NO_WRITE=1 scripts/bench-gateway.sh      # print only
#   MAX_CONNECTIONS=0 ...                    # skip the closed-loop (highest rate) runs
#   RESULTS_DIR=/tmp/gw ...                  # keep every run's JSON and the servers' logs
#   NICE=-20 ...                             # run ahead of other work on a shared machine (root)
#   BASELINE_UAG=/tmp/uag-before ...         # also run another uag build (e.g. the last commit's)
#                                            # with the same config, interleaved: an A/B of a change
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

RATES="${RATES:-100 500 1000 2000}"
DURATION="${DURATION:-6}"
DURATION="${DURATION%s}"
REPS="${REPS:-7}"
CONNECTIONS="${CONNECTIONS:-16}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-64}"
LITELLM="${LITELLM:-1}"
# LiteLLM's worker processes; the default uses every core, as uag's runtime does.
LITELLM_WORKERS="${LITELLM_WORKERS:-$(nproc)}"
# The newest LiteLLM whose `[proxy]` extra resolves from PyPI (1.108.x and later pin
# litellm-proxy-extras / litellm-enterprise builds that are not published there).
LITELLM_VERSION="${LITELLM_VERSION:-1.106.12}"
MOCK_ADDR="127.0.0.1:${MOCK_PORT:-18081}"
UAG_ADDR="127.0.0.1:${UAG_PORT:-18080}"
LITELLM_ADDR="127.0.0.1:${LITELLM_PORT:-18082}"
BASE_ADDR="127.0.0.1:${BASE_PORT:-18083}"
BASELINE_UAG="${BASELINE_UAG:-}"
if [ -n "$BASELINE_UAG" ] && [ ! -x "$BASELINE_UAG" ]; then
  echo "bench: BASELINE_UAG=$BASELINE_UAG is not an executable uag binary" >&2
  exit 2
fi
UAG_LOG_LEVEL="${UAG_LOG_LEVEL:-warn}"
export PATH="$HOME/.cargo/bin:$PATH"
# NICE=-20 (root): the servers and the load generator (children inherit it) take the CPU ahead
# of whatever else runs on a shared machine, e.g. builds, which otherwise set the p99.
if [ -n "${NICE:-}" ]; then renice -n "$NICE" -p $$ >/dev/null; fi

if [ -z "${NO_BUILD:-}" ]; then
  scripts/setup.sh --bench --no-models
  cargo build --release --locked --bin uag --example mock_upstream --example loadgen
fi

# --- LiteLLM, from PyPI, in its own venv (idempotent) ------------------------------------------
venv="$root/.venv-litellm"
if [ "$LITELLM" = 1 ]; then
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    echo "bench: installing litellm[proxy]==$LITELLM_VERSION into .venv-litellm"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  fi
fi

work="$(mktemp -d)"
pids=()
descendants() { # pid: its child processes, recursively (LiteLLM's uvicorn workers)
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
cleanup() {
  local all=() pid
  for pid in "${pids[@]}"; do all+=("$pid" $(descendants "$pid")); done
  for pid in "${all[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${RESULTS_DIR:-}" ]; then mkdir -p "$RESULTS_DIR" && cp "$work"/*.json "$work"/*.log "$work"/*.toml "$RESULTS_DIR"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Private copies: a build started elsewhere during the run cannot swap the binaries under it.
mkdir -p "$work/bin"
cp target/release/uag target/release/examples/mock_upstream target/release/examples/loadgen "$work/bin/"
uag="$work/bin/uag"
loadgen="$work/bin/loadgen"

"$work/bin/mock_upstream" "$MOCK_ADDR" >"$work/mock.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")

# --- uag with the full stack -----------------------------------------------------------------
jwt_secret="bench-hs256-secret-of-at-least-32-bytes"
jwt_issuer="https://idp.bench.lan"
token="$(python3 - "$jwt_secret" "$jwt_issuer" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, issuer = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": "bench-client", "iss": issuer, "aud": "uag", "iat": now, "exp": now + 6 * 3600, "roles": ["bench"]}).encode())
sig = b64(hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest())
print(f"{head}.{claims}.{sig}")
PY
)"
export UAG_BENCH_JWT_SECRET="$jwt_secret"

cat >"$work/uag.toml" <<EOF
[server]
listen = "$UAG_ADDR"
[storage]
data_dir = "$work/data"
[log]
level = "$UAG_LOG_LEVEL"
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

[auth]
required = true
[auth.jwt]
issuer = "$jwt_issuer"
audience = "uag"
hs256_secret = "env::UAG_BENCH_JWT_SECRET"

# Every limit is checked on every request and set far above the load, so none refuses.
[rate_limits]
backend = "memory"
user_requests_per_minute = 60000000
user_tokens_per_minute = 100000000000
[rate_limits.routes]
"/v1/chat/completions" = 60000000
[rate_limits.providers.mock]
requests_per_minute = 60000000
max_concurrent = 4096

# Exact cache on sled; every request body is unique, so each is a miss and its answer is stored.
[cache]
backend = "sled"
ttl_s = 3600
max_entries = 10000
EOF

# The Rego policy, when this build has `[policy]`: a role -> provider table that allows the
# benchmark's caller (role `bench`) the mock provider, evaluated for every routed target.
policy_note="not included: this build has no \`[policy]\`"
cat >"$work/bench.rego" <<'EOF'
package uag

default allow := false

allow if {
    some role in input.identity.roles
    input.provider in data.roles[role].providers
}
EOF
echo '{"roles": {"bench": {"providers": ["mock"]}}}' >"$work/policy-data.json"
cat >"$work/policy.toml" <<EOF

[policy]
files = ["$work/bench.rego"]
data = "$work/policy-data.json"
EOF
if grep -q "pub policy" gateway/src/config.rs 2>/dev/null; then
  cat "$work/uag.toml" "$work/policy.toml" >"$work/uag-policy.toml"
  if "$uag" config check "$work/uag-policy.toml" >/dev/null 2>"$work/policy-check.log"; then
    mv "$work/uag-policy.toml" "$work/uag.toml"
    policy_note="included: \`[policy]\`, a Rego role -> provider table (\`allow if { some role in input.identity.roles; input.provider in data.roles[role].providers }\`) evaluated per routed target"
  else
    policy_note="not included: \`[policy]\` exists but did not load the bench policy ($(head -c 300 "$work/policy-check.log" | tr '\n' ' '))"
  fi
fi
echo "bench: policy $policy_note"

"$uag" serve --config "$work/uag.toml" >"$work/uag.log" 2>&1 &
uag_pid=$!
pids+=("$uag_pid")

# The baseline build, when asked for: the same config on its own port and data directory.
base_version=""
if [ -n "$BASELINE_UAG" ]; then
  cp "$BASELINE_UAG" "$work/bin/uag-baseline"
  sed -e "s#^listen = \"$UAG_ADDR\"#listen = \"$BASE_ADDR\"#" -e "s#^data_dir = \"$work/data\"#data_dir = \"$work/data-base\"#" \
    "$work/uag.toml" >"$work/uag-baseline.toml"
  "$work/bin/uag-baseline" serve --config "$work/uag-baseline.toml" >"$work/uag-baseline.log" 2>&1 &
  pids+=("$!")
  base_version="$("$work/bin/uag-baseline" version | awk '{print $2}')"
fi

# --- LiteLLM proxy on the same mock ----------------------------------------------------------
litellm_version=""
if [ "$LITELLM" = 1 ]; then
  cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: http://$MOCK_ADDR/v1
      api_key: sk-bench-upstream
general_settings:
  # Authentication on, as with uag: the master key, checked without a database.
  master_key: sk-bench-litellm
litellm_settings:
  set_verbose: false
  telemetry: false
EOF
  # Offline: the bundled model cost map instead of a download; no telemetry; errors only.
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_TELEMETRY=False \
    "$venv/bin/litellm" --config "$work/litellm.yaml" --host "${LITELLM_ADDR%:*}" --port "${LITELLM_ADDR##*:}" --num_workers "$LITELLM_WORKERS" \
    >"$work/litellm.log" 2>&1 &
  litellm_pid=$!
  pids+=("$litellm_pid")
  litellm_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
fi

wait_for() { # url [tries of 0.1 s]
  for _ in $(seq "${2:-100}"); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: $1 did not come up" >&2
  tail -n 30 "$work"/*.log >&2
  exit 1
}
wait_for "http://$MOCK_ADDR/v1/models"
wait_for "http://$UAG_ADDR/healthz"
[ -n "$BASELINE_UAG" ] && wait_for "http://$BASE_ADDR/healthz"
[ "$LITELLM" = 1 ] && wait_for "http://$LITELLM_ADDR/health/liveliness" 1200

# Resident memory of a process and all its descendants (LiteLLM may fork workers), in KiB.
tree_rss_kb() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); children = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            stat = open(f"/proc/{p}/stat").read()
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(p))
        except OSError:
            pass
total, todo = 0, [root]
while todo:
    pid = todo.pop()
    todo += children.get(pid, [])
    try:
        total += next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    except (OSError, StopIteration):
        pass
print(total)
PY
}

question='"messages":[{"role":"user","content":"What is the capital of France? (request {n})"}]'
declare -A url body auth
url[direct]="http://$MOCK_ADDR/v1/chat/completions"; body[direct]="{\"model\":\"bench\",$question}"; auth[direct]="x-bench: direct"
url[uag]="http://$UAG_ADDR/v1/chat/completions"; body[uag]="{\"model\":\"mock/bench\",$question}"; auth[uag]="authorization: Bearer $token"
url[litellm]="http://$LITELLM_ADDR/v1/chat/completions"; body[litellm]="{\"model\":\"bench\",$question}"; auth[litellm]="authorization: Bearer sk-bench-litellm"
url[base]="http://$BASE_ADDR/v1/chat/completions"; body[base]="${body[uag]}"; auth[base]="${auth[uag]}"
targets=(direct uag)
[ -n "$BASELINE_UAG" ] && targets+=(base)
[ "$LITELLM" = 1 ] && targets+=(litellm)

# Both gateways answer once before the idle reading (LiteLLM imports lazily on its first request).
for t in "${targets[@]}"; do
  "$loadgen" --url "${url[$t]}" --body "${body[$t]}" -H "${auth[$t]}" --rate 10 --duration-s 0.3 --connections 1 --out "$work/first-$t.json" >/dev/null
done
sleep 2
uag_idle=$(tree_rss_kb "$uag_pid"); uag_loaded=$uag_idle
litellm_idle=0; litellm_loaded=0
[ "$LITELLM" = 1 ] && { litellm_idle=$(tree_rss_kb "$litellm_pid"); litellm_loaded=$litellm_idle; }

run_load() { # name target rate [loadgen args...]
  local name="$1" t="$2" rate="$3"; shift 3
  "$loadgen" --url "${url[$t]}" --body "${body[$t]}" -H "${auth[$t]}" --rate "$rate" --count-header x-uag-cache \
    --out "$work/$name.json" "$@" >/dev/null
  case "$t" in
    uag) local r; r=$(tree_rss_kb "$uag_pid"); [ "$r" -gt "$uag_loaded" ] && uag_loaded=$r ;;
    litellm) local r; r=$(tree_rss_kb "$litellm_pid"); [ "$r" -gt "$litellm_loaded" ] && litellm_loaded=$r
      sleep 2 ;; # let an overloaded LiteLLM drain before the next measurement
  esac
  return 0
}

echo "bench: warm-up"
for t in "${targets[@]}"; do run_load "warm-$t" "$t" 0 --duration-s 3 --connections "$CONNECTIONS"; done

# Repetitions interleave the three paths at each rate, so a noisy moment of the shared machine
# hits all of them; the table reports the median repetition.
# A rate LiteLLM failed in two repetitions is not offered to it again (it only builds a queue).
declare -A litellm_failed
for rep in $(seq "$REPS"); do
  for rate in $RATES; do
    echo "bench: repetition $rep: $rate requests/s for ${DURATION}s: ${targets[*]}"
    for t in "${targets[@]}"; do
      if [ "$t" = litellm ] && [ "${litellm_failed[$rate]:-0}" -ge 2 ]; then continue; fi
      run_load "$t-$rate-$rep" "$t" "$rate" --duration-s "$DURATION" --connections "$CONNECTIONS"
      if [ "$t" = litellm ] && ! python3 -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['sustained'])" "$work/$t-$rate-$rep.json"; then
        litellm_failed[$rate]=$(( ${litellm_failed[$rate]:-0} + 1 ))
      fi
    done
  done
done

if [ "$MAX_CONNECTIONS" -gt 0 ]; then
  echo "bench: highest rate (closed loop, $MAX_CONNECTIONS connections, ${DURATION}s): ${targets[*]}"
  for t in "${targets[@]}"; do
    run_load "max-$t" "$t" 0 --duration-s "$DURATION" --connections "$MAX_CONNECTIONS" --threads 2
  done
fi

# LiteLLM's highest fixed rate held, when most repetitions of one of RATES failed: step down from its closed-loop
# throughput through round rates until one holds (no error, nothing left unsent), measuring the
# mock and uag at the same rate for the overhead comparison.
probe_rate=0
if [ "$LITELLM" = 1 ] && [ "$MAX_CONNECTIONS" -gt 0 ]; then
  read -r held cap < <(python3 - "$work" "$RATES" "$REPS" <<'PY'
import json, sys
work, rates, reps = sys.argv[1], [int(r) for r in sys.argv[2].split()], int(sys.argv[3])
import os
def held_at(r):
    runs = [json.load(open(f"{work}/litellm-{r}-{rep}.json"))["sustained"] for rep in range(1, reps + 1) if os.path.exists(f"{work}/litellm-{r}-{rep}.json")]
    return 2 * sum(runs) > len(runs)
held = [r for r in rates if held_at(r)]
all_held = len(held) == len(rates)
print(-1 if all_held else max(held, default=0), json.load(open(f"{work}/max-litellm.json"))["ok_per_s"])
PY
)
  if [ "$held" -ge 0 ]; then
    for r in 1500 1000 800 600 500 400 300 250 200 150 120 100 80 60 50 40 30 20 10; do
      [ "$r" -gt "$held" ] || break
      python3 -c "import sys; sys.exit(not $r < 0.95 * $cap)" || continue
      case " $RATES " in *" $r "*) continue ;; esac
      echo "bench: LiteLLM's highest held rate: trying $r requests/s (closed-loop throughput $cap/s)"
      for t in "${targets[@]}"; do
        run_load "probe-$t-$r" "$t" "$r" --duration-s "$DURATION" --connections "$CONNECTIONS"
      done
      if python3 -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['sustained'])" "$work/probe-litellm-$r.json"; then
        probe_rate=$r
        break
      fi
    done
  fi
fi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
mem_gib="$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
versions="uag $("$uag" version | awk '{print $2}'), $(rustc --version | awk '{print $1, $2}'), $(python3 --version)"
[ -n "$BASELINE_UAG" ] && versions="$versions, baseline uag $base_version (\`$BASELINE_UAG\`, same config)"
[ "$LITELLM" = 1 ] && versions="$versions, LiteLLM $litellm_version (\`litellm[proxy]\` from PyPI, $LITELLM_WORKERS uvicorn worker processes, master key, no database, \`LITELLM_LOG=ERROR\`)"

python3 - "$work" "$RATES" "$DURATION" "$CONNECTIONS" "$MAX_CONNECTIONS" "$REPS" "$LITELLM" "${NO_WRITE:-}" \
  "$uag_idle" "$uag_loaded" "$litellm_idle" "$litellm_loaded" "$cpu" "$(nproc)" "$mem_gib" "$versions" "$policy_note" "$UAG_LOG_LEVEL" "${NICE:-}" \
  "$([ -n "$BASELINE_UAG" ] && echo 1)" <<'PY'
import datetime, json, pathlib, re, sys
(work, rates, duration, conns, max_conns, reps, litellm, no_write, uag_idle, uag_loaded, ll_idle, ll_loaded,
 cpu, ncpu, mem_gib, versions, policy_note, log_level, nice, baseline) = sys.argv[1:21]
reps, litellm = int(reps), litellm == "1"
rates = [int(r) for r in rates.split()]
gateways = ["uag"] + (["base"] if baseline else []) + (["litellm"] if litellm else [])
name = {"uag": "uag", "base": "uag baseline", "litellm": "LiteLLM"}
def load(n):
    return json.load(open(f"{work}/{n}.json"))
def ms(r, p):
    return r["latency_ms"][p] if r["latency_ms"] else float("nan")

# Per rate and gateway: the median repetition by p99 overhead, each against its own direct run.
best, spread = {}, {}
for rate in rates:
    for g in gateways:
        runs = []
        for rep in range(1, reps + 1):
            if not pathlib.Path(f"{work}/{g}-{rate}-{rep}.json").exists():
                continue  # LiteLLM, after it failed this rate twice
            d, v = load(f"direct-{rate}-{rep}"), load(f"{g}-{rate}-{rep}")
            runs.append((ms(v, "p99") - ms(d, "p99"), d, v))
        runs.sort(key=lambda r: r[0])
        best[rate, g] = runs[len(runs) // 2]
        spread[rate, g] = [r[0] for r in runs]

def fmt(x):
    return f"{x:.3f}" if x < 100 else f"{x:.0f}"
def sent(r):
    mark = "" if r["sustained"] else " **not sustained**"
    extra = []
    if r["error_count"]:
        extra.append(", ".join(f"{k}: {v}" for k, v in r["errors"].items()))
    if r["backlog"]:
        extra.append(f"{r['backlog']} never sent")
    return f"{r['ok']} / {r['scheduled']}{mark}" + (f" ({'; '.join(extra)})" if extra else "")

today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [
    "<!-- gateway-overhead:start -->",
    f"Measured {today} by `scripts/bench-gateway.sh` on {ncpu} cores ({cpu}, {mem_gib} GiB); the load generator, "
    f"the mock upstream{', uag and LiteLLM' if litellm else ' and uag'} share those cores"
    + (f" (all at nice {nice}, ahead of other work on the machine)" if nice else "") + f". Versions: {versions}. "
    f"Load: `examples/loadgen.rs`, open loop at each fixed rate for {duration} s per path, {conns} connections, "
    "latency from each request's scheduled send time (no coordinated omission), non-streaming "
    "`POST /v1/chat/completions` with a body unique to every request; "
    f"{reps} repetitions interleave the paths at each rate and the table shows each gateway's median repetition "
    "by p99 overhead (a rate LiteLLM failed twice is not offered to it again). Overhead = latency through the gateway minus latency straight to the mock upstream, "
    "same rate, same repetition.",
    "",
    f"uag runs the release build with the full stack: JWT (HS256) authentication, `[rate_limits]` per caller, "
    f"route and provider (limits far above the load: checked, never refusing), Prometheus metrics, the exact "
    f"response cache on sled taking the miss path on every request (lookup, provider call, answer stored; "
    f"`x-uag-cache` counted below), `log.level = {log_level}`. Policy: {policy_note}.",
    "",
]
head = "| rate (req/s) | direct p50 / p99 (ms) |"
rule = "| ---: | ---: |"
for g in gateways:
    head += f" {name[g]} p50 / p99 (ms) | **{name[g]} overhead p50 / p99 (ms)** | {name[g]} 200s / scheduled |"
    rule += " ---: | ---: | ---: |"
if litellm:
    head += " p99 overhead LiteLLM / uag |"
    rule += " ---: |"
lines += [head, rule]
verdict_ratio = []
def table_row(label, rate, runs):
    """runs: gateway -> (p99 overhead, its direct run, its gateway run)."""
    row = f"| {label} |"
    _, d, _ = runs["uag"]
    row += f" {fmt(ms(d, 'p50'))} / {fmt(ms(d, 'p99'))} |"
    over = {}
    for g in gateways:
        o99, dg, v = runs[g]
        o50 = ms(v, "p50") - ms(dg, "p50")
        over[g] = (o50, o99, v)
        row += f" {fmt(ms(v, 'p50'))} / {fmt(ms(v, 'p99'))} | **{fmt(o50)} / {fmt(o99)}** | {sent(v)} |"
    if litellm:
        u99, l99, lv = over["uag"][1], over["litellm"][1], over["litellm"][2]
        ratio = l99 / u99 if u99 > 0 else float("inf")
        row += f" {ratio:.0f}x |" if lv["sustained"] else f" ({ratio:.0f}x, not sustained) |"
        if lv["sustained"]:
            verdict_ratio.append((rate, ratio))
    lines.append(row)
for rate in rates:
    table_row(str(rate), rate, {g: best[rate, g] for g in gateways})
probes = sorted((int(p.name.split("-")[2].split(".")[0]) for p in pathlib.Path(work).glob("probe-litellm-*.json")), reverse=True)
for rate in probes:
    d = load(f"probe-direct-{rate}")
    runs = {g: (ms(load(f"probe-{g}-{rate}"), "p99") - ms(d, "p99"), d, load(f"probe-{g}-{rate}")) for g in gateways}
    table_row(f"{rate} (LiteLLM probe, 1 run)", rate, runs)

lines += ["", "p99 overhead (ms) of every repetition, sorted: " + "; ".join(
    f"{name[g]} at {rate}: " + ", ".join(fmt(x) for x in spread[rate, g]) for g in gateways for rate in rates) + "."]

cache = {}
for rate in rates:
    for rep in range(1, reps + 1):
        for k, v in load(f"uag-{rate}-{rep}")["header_values"].items():
            cache[k] = cache.get(k, 0) + v
lines += ["", "uag's `x-uag-cache` on the fixed-rate answers: " + ", ".join(f"{k} {v}" for k, v in sorted(cache.items())) + "."]

if int(max_conns) > 0:
    lines += ["", f"Highest rate held (closed loop: {max_conns} connections each sending its next request on an answer, {duration} s):", ""]
    lines += ["| path | answered 200 per s | errors | p50 / p99 (ms) |", "| --- | ---: | ---: | ---: |"]
for t in (["direct"] + gateways) if int(max_conns) > 0 else []:
    m = load(f"max-{t}")
    label = {"direct": "mock upstream directly", "uag": "uag (full stack)", "base": "uag baseline build (full stack)", "litellm": "LiteLLM"}[t]
    errs = m["error_count"]
    lines.append(f"| {label} | {m['ok_per_s']:.0f} | {errs}{' (' + ', '.join(f'{k}: {v}' for k, v in m['errors'].items()) + ')' if errs else ''} | {fmt(ms(m, 'p50'))} / {fmt(ms(m, 'p99'))} |")
if litellm:
    def held_at(rate):
        runs = [load(f"litellm-{rate}-{rep}")["sustained"] for rep in range(1, reps + 1) if pathlib.Path(f"{work}/litellm-{rate}-{rep}.json").exists()]
        return 2 * sum(runs) > len(runs)
    held = [rate for rate in rates if held_at(rate)]
    held_probe = [r for r in probes if load(f"probe-litellm-{r}")["sustained"]]
    lines += ["", "Fixed rates LiteLLM held (no error, nothing left unsent) in most repetitions: "
              + (", ".join(str(r) for r in held) + " req/s" if held else "none")
              + (f"; stepping down from its closed-loop throughput (rows marked \"probe\"), the highest it held was "
                 f"**{held_probe[0]} req/s**" if held_probe else "")
              + (f" (tried {', '.join(str(r) for r in probes)})" if probes and not held_probe else "") + "."]

mib = lambda kb: f"{int(kb) / 1024:.1f} MiB"
lines += ["", "| resident memory (process and children) | idle | loaded (highest after a run) |", "| --- | ---: | ---: |",
          f"| uag | {mib(uag_idle)} | {mib(uag_loaded)} |"]
if litellm:
    lines.append(f"| LiteLLM | {mib(ll_idle)} | {mib(ll_loaded)} |")
lines += ["", "Idle: after start-up and one answered request, before the load."]

# Milestones.
o2000 = best.get((2000, "uag"))
lines += ["", "Milestones:"]
if o2000:
    ok = o2000[0] <= 1.0 and o2000[2]["sustained"]
    lines.append(f"- uag p99 overhead ≤ 1 ms at 2,000 req/s: **{'met' if ok else 'not met'}** ({fmt(o2000[0])} ms, median of {reps}; repetitions {', '.join(fmt(x) for x in spread[2000, 'uag'])}).")
if litellm:
    if verdict_ratio:
        ok = all(r >= 10 for _, r in verdict_ratio)
        lines.append(f"- p99 overhead ≥ 10x lower than LiteLLM at the rates LiteLLM sustains: **{'met' if ok else 'not met'}** ("
                     + ", ".join(f"{r:.0f}x at {rate} req/s" for rate, r in verdict_ratio) + ").")
    else:
        lines.append("- p99 overhead ≥ 10x lower than LiteLLM at the rates LiteLLM sustains: LiteLLM sustained none of the rates measured.")
lines.append("<!-- gateway-overhead:end -->")

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
