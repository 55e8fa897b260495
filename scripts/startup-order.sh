#!/usr/bin/env bash
# Start-up code laid out together in the release (`dist`) binary: less of it resident at idle.
#
#   scripts/startup-order.sh --arch aarch64|x86_64   # regenerate cross/startup-order/ARCH.txt
#   scripts/startup-order.sh --link-args ARCH        # the rustc flags a dist build links with
#
# Why (issue 19, idle memory): the kernel maps a program's code in 64 KiB steps around each page
# that runs ("fault-around"). The ~3,200 functions that start-up and an idle server's requests
# (/readyz, /healthz, /metrics) run are 1.5 MiB of code, but they were spread over all 15 MiB of
# `.text`, so an idle uag kept 9.4 MiB of it resident. lld places the functions this list names
# first, one after another; start-up then maps about 2.4 MiB of code (docs/BENCHMARKS.md).
#
# The list names functions by their mangled symbols, which follow the toolchain, Cargo.lock, the
# target and the dist profile, not the code around them: regenerate it after a toolchain or
# dependency update (release.sh prints how much of it a build still matched). The linker skips a
# name that no longer exists; nothing breaks, the layout only loses its effect.
#
# Regenerating builds the dist binary with release.sh (it keeps its symbols; release.sh strips
# only the copy it packs), runs `uag serve` on an empty knowledge base under qemu-user with `-d in_asm`
# (qemu logs each block of code the first time it runs, with its function's symbol) until
# /readyz, /healthz and /metrics have answered, and writes the functions in the order they
# first ran. About 5-10 minutes, most of it the build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

usage() {
  echo "usage: scripts/startup-order.sh --arch aarch64|x86_64 | --link-args aarch64|x86_64" >&2
  exit 2
}

check_arch() {
  case "$1" in
    aarch64|x86_64) ;;
    *) echo "startup-order.sh: the architecture is aarch64 or x86_64, not '$1'" >&2; exit 2 ;;
  esac
}

# rustc flags: link with lld (rustup ships it; GNU ld has no symbol ordering) and the list.
link_args() {
  local arch="$1" list="$root/cross/startup-order/$1.txt"
  [ -s "$list" ] || return 0
  local host gcc_ld
  host="$(rustc -vV | sed -n 's/^host: //p')"
  gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"
  if [ ! -x "$gcc_ld/ld.lld" ]; then
    echo "startup-order.sh: no lld at $gcc_ld (rustup's toolchain ships it); linking without the start-up order" >&2
    return 0
  fi
  echo "-C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld -C link-arg=-Wl,--symbol-ordering-file=$list -C link-arg=-Wl,--no-warn-symbol-ordering"
}

generate() {
  local arch="$1"
  # The very build release.sh packs (its tarball is a by-product).
  scripts/release.sh --arch "$arch"
  local bin="target/$arch-unknown-linux-gnu/dist/uag"
  local qemu=(qemu-x86_64)
  [ "$arch" = aarch64 ] && qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
  command -v "${qemu[0]}" >/dev/null || { echo "startup-order.sh: ${qemu[0]} is missing (scripts/setup.sh --cross installs qemu-user)" >&2; exit 1; }
  # Globals: the EXIT trap runs after this function has returned.
  pid=""
  work="$(mktemp -d)"
  trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
  port=$((20000 + RANDOM % 20000))
  UAG__SERVER__LISTEN="127.0.0.1:$port" UAG__STORAGE__DATA_DIR="$work/data" UAG__MODELS__DIR="$work/models" \
    UAG__GRAPHRAG__SAMPLE_KB="" "${qemu[@]}" -d in_asm -D "$work/blocks.log" "$bin" serve >"$work/uag.log" 2>&1 &
  pid=$!
  ready=0
  for _ in $(seq 1 240); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ "$ready" != 1 ]; then
    echo "startup-order.sh: uag did not become ready under qemu; its log:" >&2
    cat "$work/uag.log" >&2
    exit 1
  fi
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
  curl -sf "http://127.0.0.1:$port/metrics" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  nm --defined-only "$bin" >"$work/symbols.txt"
  python3 - "$work/blocks.log" "$work/symbols.txt" "cross/startup-order/$arch.txt" <<'EOF'
import sys

blocks, symbols, out = sys.argv[1:4]
# Functions only (text symbols): the list orders code, and a name lld cannot place is noise.
functions = {parts[2] for parts in (line.split() for line in open(symbols)) if len(parts) == 3 and parts[1] in "tTwW"}
seen, order = set(), []
for line in open(blocks, errors="replace"):
    if line.startswith("IN: "):
        name = line[4:].strip()
        if name and name in functions and name not in seen:
            seen.add(name)
            order.append(name)
if len(order) < 500:
    sys.exit(f"startup-order.sh: only {len(order)} functions ran; is this binary stripped?")
with open(out, "w") as f:
    f.write("\n".join(order) + "\n")
print(f"startup-order.sh: {out}: {len(order)} functions in the order they first ran")
EOF
}

[ $# -eq 2 ] || usage
case "$1" in
  --arch) check_arch "$2"; generate "$2" ;;
  --link-args) check_arch "$2"; link_args "$2" ;;
  *) usage ;;
esac
