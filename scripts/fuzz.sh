#!/usr/bin/env bash
# Bounded cargo-fuzz run of the fuzz targets in fuzz/ (docs/SECURITY.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# Works on the stable toolchain: cargo-fuzz passes -Z flags to rustc, which stable accepts
# with RUSTC_BOOTSTRAP=1; `cargo +nightly fuzz` is the fallback when that build fails.
# Installs cargo-fuzz when it is missing. Builds without a sanitizer by default (Rust code is
# memory-safe apart from models/src/espeak.rs, which no target reaches; ASan roughly doubles
# the build on a small machine): UAG_FUZZ_SANITIZER=address to change that.
# Seeds are read from fuzz/corpus/<target>/ (committed, never written); what libFuzzer finds
# goes to fuzz/target/corpus/<target>/ (ignored, kept between runs), crashes to
# fuzz/artifacts/<target>/. Exits non-zero when any target crashed, leaked or timed out.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-20}
shift || true
ALL_TARGETS=(inference_request ws_message sse_ndjson audio_decode tls_der document_ingest)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
SANITIZER=${UAG_FUZZ_SANITIZER:-none}
# UAG_FUZZ_PROFILE=dev builds without optimisation: fewer runs per second, but a much shorter
# cold build, which is what CI pays for on 2 cores; debug assertions and overflow checks are on.
PROFILE=${UAG_FUZZ_PROFILE:-release}
case "$PROFILE" in
    release) PROFILE_FLAG=(--release) ;;
    dev) PROFILE_FLAG=(--dev) ;;
    *) echo "fuzz.sh: UAG_FUZZ_PROFILE takes release or dev, not '$PROFILE'" >&2; exit 2 ;;
esac
for target in "${TARGETS[@]}"; do
    if [ ! -d "$ROOT/fuzz/corpus/$target" ]; then
        echo "fuzz.sh: no seed directory fuzz/corpus/$target (every target has committed seeds;" \
            "known targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
CARGO_FUZZ_VERSION=0.13.1

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

FUZZ=(cargo fuzz)
echo "==> cargo fuzz build (sanitizer: $SANITIZER, profile: $PROFILE; $(rustc --version))"
start=$(date +%s)
if ! "${FUZZ[@]}" build "${PROFILE_FLAG[@]}" --sanitizer "$SANITIZER"; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        echo "==> stable with RUSTC_BOOTSTRAP=1 failed; trying cargo +nightly fuzz"
        FUZZ=(cargo +nightly fuzz)
        "${FUZZ[@]}" build "${PROFILE_FLAG[@]}" --sanitizer "$SANITIZER"
    else
        exit 1
    fi
fi
echo "==> built in $(($(date +%s) - start)) s"

LOGS=$ROOT/fuzz/target/logs
mkdir -p "$LOGS"
failed=()
summary=()
for target in "${TARGETS[@]}"; do
    work=$ROOT/fuzz/target/corpus/$target
    mkdir -p "$work"
    echo "==> $target: ${SECONDS_PER_TARGET} s"
    status=ok
    if ! "${FUZZ[@]}" run "${PROFILE_FLAG[@]}" --sanitizer "$SANITIZER" "$target" "$work" "$ROOT/fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$LOGS/$target.log" 2>&1; then
        status=FAILED
        failed+=("$target")
        tail -n 60 "$LOGS/$target.log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$target.log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOGS/$target.log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$LOGS/$target.log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$LOGS/$target.log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corpus=$(find "$work" -type f | wc -l)
    line=$(printf '%-18s %-6s runs=%-10s exec/s=%-7s cov=%-6s ft=%-6s corpus=%-5s rss=%sMB' \
        "$target" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "${rss:-?}")
    echo "$line"
    summary+=("$line")
done

echo "==> summary (${SECONDS_PER_TARGET} s per target; logs in fuzz/target/logs/)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "==> FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with" \
        "RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $SANITIZER <target> <file>)" >&2
    exit 1
fi
