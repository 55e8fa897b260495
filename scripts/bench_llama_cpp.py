"""llama.cpp (through llama-cpp-python) on the same GGUF file, prompt and thread count as
uag's candle runs: prompt tokens/s and greedy decode tokens/s, median of REPS runs after a
warm-up. Reads the candle bench's JSON lines (for the rendered prompt) on stdin, prints one
JSON line per file.

Usage: bench_llama_cpp.py MODELS_DIR THREADS REPS < candle.jsonl
"""
import json
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama

models_dir, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(line) for line in sys.stdin if line.strip()]
for run in (r for r in runs if r.get("bench") == "llm"):
    path = f"{models_dir}/{run.get('model', 'smollm2-135m-instruct')}/{run['file']}"
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512, verbose=False)
    tokens = llm.tokenize(run["prompt_text"].encode(), add_bos=False, special=True)
    decode_n = run["decode_tokens"]
    prompt_tps, decode_tps = [], []
    for i in range(reps + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        t1 = time.perf_counter()
        for _ in range(decode_n):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        t2 = time.perf_counter()
        if i > 0:
            prompt_tps.append(len(tokens) / (t1 - t0))
            decode_tps.append(decode_n / (t2 - t1))
    print(json.dumps({
        "bench": "llm", "engine": "llama.cpp", "file": run["file"], "quant": run["quant"], "threads": threads,
        "prompt_tokens": len(tokens), "decode_tokens": decode_n,
        "prompt_tps": round(statistics.median(prompt_tps), 1), "decode_tps": round(statistics.median(decode_tps), 1),
    }))
