#!/usr/bin/env bash
# Local model benchmark: whisper real-time factor, candle LLM tokens/s side by side with llama.cpp
# (llama-cpp-python, built from PyPI into .venv-bench, about 13 minutes the first time) on the
# same GGUF files, prompt and thread count in the same run, Piper real-time factor and time to
# first audio, embeddings per second. Writes docs/BENCHMARKS.md between the models markers.
#
#   scripts/bench-models.sh                  # THREADS = all cores, REPS = 3
#   THREADS=1 REPS=5 scripts/bench-models.sh
#   NO_WRITE=1 scripts/bench-models.sh       # print only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
THREADS="${THREADS:-$(nproc)}"
REPS="${REPS:-3}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
export THREADS REPS
# candle's CPU kernels size their pool from these.
export RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS="$THREADS"

scripts/fetch-models.sh --all
venv="$root/.venv-bench"
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
  echo "bench-models: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION into .venv-bench (about 13 minutes)"
  python3 -m venv "$venv"
  # The same instruction set as uag's own x86_64 build (x86-64-v3), so neither side is favoured.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    "$venv/bin/pip" install -q --disable-pip-version-check "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi

models_dir="$(cargo run --release --locked -q --bin uag -- models path onnxruntime | xargs dirname | xargs dirname)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo bench --locked --bench models 2>/dev/null | grep '^{' > "$work/candle.jsonl"
"$venv/bin/python" scripts/bench_llama_cpp.py "$models_dir" "$THREADS" "$REPS" < "$work/candle.jsonl" > "$work/llama.jsonl"

python3 - "$work/candle.jsonl" "$work/llama.jsonl" <<'PY' > "$work/table.md"
import json, platform, subprocess, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
threads = rows[0]["threads"]
out = [f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
       f"{threads} threads for every engine; median of the repetitions after a warm-up "
       f"(`scripts/bench-models.sh`, x86-64-v3 builds on both sides).", ""]
out += ["| ASR (whisper.cpp via whisper-rs) | audio | real-time factor | milestone |", "| --- | --- | --- | --- |"]
for r in rows:
    if r["bench"] == "asr":
        goal = "≤ 0.15" if r["model"] == "whisper-tiny.en" else ""
        out.append(f"| {r['model']} | {r['audio_s']} s of Piper speech | {r['rtf']:.3f} | {goal} |")
out += ["", "| LLM (file as installed) | engine | prompt tokens/s | decode tokens/s | decode vs llama.cpp (same file) |",
        "| --- | --- | --- | --- | --- |"]
llama = {r["file"]: r for r in rows if r["bench"] == "llm" and r["engine"] == "llama.cpp"}
for r in rows:
    if r["bench"] == "llm" and r["engine"] == "candle":
        base = llama.get(r["file"])
        ratio = f"{r['decode_tps'] / base['decode_tps']:.2f}x" if base else "n/a"
        out.append(f"| {r['file']} ({r['prompt_tokens']} prompt tokens) | candle (uag) | {r['prompt_tps']} | {r['decode_tps']} | {ratio} |")
        if base:
            out.append(f"| {r['file']} ({base['prompt_tokens']} prompt tokens) | llama.cpp | {base['prompt_tps']} | {base['decode_tps']} | 1.00x |")
out += ["", "| TTS / embeddings | measure | milestone |", "| --- | --- | --- |"]
for r in rows:
    if r["bench"] == "tts":
        out.append(f"| Piper {r['model']} | real-time factor {r['rtf']:.3f}; first sentence's audio after {r['first_audio_s']:.3f} s | RTF ≤ 0.3 |")
    if r["bench"] == "embed":
        out.append(f"| {r['model']} | {r['per_second']:.0f} sentences/s (batches of 32) | |")
print("\n".join(out))
PY
cat "$work/table.md"
if [ -z "${NO_WRITE:-}" ]; then
  python3 - "$work/table.md" <<'PY'
import re, sys
table = open(sys.argv[1]).read().strip()
path = "docs/BENCHMARKS.md"
text = open(path).read()
block = f"<!-- models:start -->\n{table}\n<!-- models:end -->"
if "<!-- models:start -->" in text:
    text = re.sub(r"<!-- models:start -->.*?<!-- models:end -->", lambda _: block, text, flags=re.S)
else:
    text += "\n## Local models\n\n" + block + "\n"
open(path, "w").write(text)
PY
  echo "bench-models: wrote docs/BENCHMARKS.md"
fi
