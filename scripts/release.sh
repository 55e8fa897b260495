#!/usr/bin/env bash
# Release tarballs: dist/uag-VERSION-ARCH-linux-gnu.tar.gz with the stripped binary, default
# config, systemd units, an installer, docs, and the licenses of every linked crate.
#
#   scripts/release.sh --arch aarch64 [--profile dist|release] [--no-build] [--with-models]
#   scripts/release.sh --arch x86_64
#
# Release binaries are built with the `dist` profile (Cargo.toml: size-optimised, fat LTO, the
# inference crates at full speed). An aarch64 `dist` binary above 20 MiB fails the release
# (issue 19: it must fit a small SD-card image and page in quickly); `--profile release` makes a
# tarball of the faster-to-build `release` binary, whose size is reported, not gated.
#
# --with-models adds the default local models (whisper, SmolLM2, MiniLM, the Piper voice and
# the ONNX Runtime library, all for ARCH) as one verified bundle, models.tar: install.sh imports
# it, so the tarball installs a device that reaches no network at all. The models are fetched
# for ARCH into dist/models-ARCH/ (kept between runs: a second release re-verifies and downloads
# nothing) by this machine's uag (target/release/uag, built when missing; UAG_HOST_BIN overrides).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
arch=aarch64
profile=dist
build=1
with_models=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --with-models) with_models=1; shift ;;
    *) echo "release.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$arch" in
  aarch64|x86_64) target="$arch-unknown-linux-gnu" ;;
  *) echo "release.sh: --arch takes aarch64 or x86_64" >&2; exit 2 ;;
esac
version="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "uag"))')"

if [ "$build" = 1 ]; then
  if [ "$arch" = aarch64 ]; then
    scripts/cross-build.sh --profile "$profile"
  elif [ "$profile" = dist ]; then
    # shellcheck disable=SC2046 # the flags are words (scripts/startup-order.sh)
    cargo rustc --locked --target "$target" --profile "$profile" --bin uag -- $(scripts/startup-order.sh --link-args "$arch")
  else
    cargo build --locked --target "$target" --profile "$profile" --bin uag
  fi
fi
bin="target/$target/$profile/uag"
[ -x "$bin" ] || { echo "release.sh: $bin is missing (build it, or drop --no-build)" >&2; exit 1; }

name="uag-$version-$arch-linux-gnu"
stage="dist/$name"
rm -rf "$stage" && mkdir -p "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/uag"
# The dist build keeps its symbols (they name the start-up order); the packed copy has none.
strip_tool=strip
[ "$arch" = aarch64 ] && strip_tool=aarch64-linux-gnu-strip
"$strip_tool" "$stage/usr/bin/uag"
if [ "$profile" = dist ] && [ -s "cross/startup-order/$arch.txt" ]; then
  listed=$(wc -l <"cross/startup-order/$arch.txt")
  found=$(nm --defined-only "$bin" | awk 'NR == FNR { want[$1] = 1; next } ($3 in want) { n++ } END { print n + 0 }' "cross/startup-order/$arch.txt" -)
  echo "release: start-up order: $found of $listed functions of cross/startup-order/$arch.txt are in this build"
  if [ $((found * 10)) -lt $((listed * 9)) ]; then
    echo "release: the start-up order is stale (a toolchain or dependency update renames functions); idle memory grows until it is regenerated: scripts/startup-order.sh --arch $arch" >&2
  fi
fi
install -D -m 0640 deploy/uag.toml "$stage/etc/uag/uag.toml"
install -D -m 0640 deploy/policy/uag.rego "$stage/etc/uag/policy/uag.rego"
install -D -m 0640 deploy/policy/policy-data.json "$stage/etc/uag/policy/policy-data.json"
install -D -m 0644 deploy/uag.example.toml "$stage/usr/share/doc/uag/uag.example.toml"
for unit in systemd/*.service systemd/*.socket systemd/*.path; do
  install -D -m 0644 "$unit" "$stage/lib/systemd/system/$(basename "$unit")"
done
for doc in README.md docs/DEPLOY.md docs/BENCHMARKS.md LICENSE; do
  install -D -m 0644 "$doc" "$stage/usr/share/doc/uag/$(basename "$doc")"
done
python3 scripts/licenses.py "$target" "$stage/usr/share/doc/uag/licenses"
install -m 0755 deploy/install.sh "$stage/install.sh"
if [ "$with_models" = 1 ]; then
  host_bin="${UAG_HOST_BIN:-target/release/uag}"
  if [ -z "${UAG_HOST_BIN:-}" ]; then
    cargo build --locked --release --bin uag
  fi
  models_stage="dist/models-$arch"
  "$host_bin" models fetch --arch "$arch" --dir "$models_stage"
  "$host_bin" models export --arch "$arch" --dir "$models_stage" --output "$stage/models.tar"
fi
mkdir -p dist
tar -C dist -czf "dist/$name.tar.gz" "$name"
size=$(stat -c %s "$stage/usr/bin/uag")
echo "release: dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1)); binary $((size / 1024 / 1024)) MiB stripped ($size bytes)"
# The 20 MiB goal is the appliance's (aarch64). x86_64 builds are larger by design (x86-64-v3
# kernels in candle/gemm/whisper.cpp); their size is reported, not gated. Measured sizes, per
# crate: docs/BENCHMARKS.md, "Binary size".
limit=$((20 * 1024 * 1024))
if [ "$arch" = aarch64 ] && [ "$profile" = dist ] && [ "$size" -gt "$limit" ]; then
  echo "release: the aarch64 binary is $size bytes, over the 20 MiB limit ($limit bytes)." >&2
  echo "release: find what grew with 'cargo bloat --profile dist --target $target --bin uag --crates' (docs/BENCHMARKS.md, \"Binary size\")" >&2
  exit 1
fi
