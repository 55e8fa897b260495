#!/usr/bin/env bash
# Voice-turn latency over /v1/voice (benches/voice.rs): end of speech -> first audio frame and
# -> done, p50/p90, with the default local model set; writes the voice section of
# docs/BENCHMARKS.md. Needs the default models (scripts/setup.sh installs them).
#   TURNS=24 HANDS_FREE_TURNS=8 scripts/bench-voice.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
started=$(date +%s)
cargo bench --bench voice | tee "$out"
python3 - "$out" <<'PY'
import re, sys
section = open(sys.argv[1]).read()
match = re.search(r"<!-- voice:start -->.*?<!-- voice:end -->", section, flags=re.S)
if not match:
    sys.exit("bench-voice: the benchmark printed no voice section")
path = "docs/BENCHMARKS.md"
text = open(path).read()
if "<!-- voice:start -->" in text:
    text = re.sub(r"<!-- voice:start -->.*?<!-- voice:end -->", lambda _: match.group(0), text, flags=re.S)
else:
    text += "\n## Voice turns (/v1/voice)\n\n" + match.group(0) + "\n"
open(path, "w").write(text)
PY
echo "bench-voice: wrote docs/BENCHMARKS.md in $(( $(date +%s) - started )) s"
