#!/usr/bin/env bash
# The crate direction of ARCHITECTURE.md, checked on Cargo's resolved graph (no build needed):
#
#   uag-models, uag-graphrag  <-  uag-core  <-  uag-voice  <-  uag-gateway  <-  uag
#
# - uag-core knows no web framework: no axum (nor axum-core), and none of the server-side
#   crates (tower-http, hyper-util, tokio-tungstenite) among its own dependencies. (reqwest,
#   the upstream HTTP client of the cloud providers, uses tower-http's client layers inside;
#   that is reqwest's, not a route or a layer of uag.)
# - uag-voice is wire-neutral: no axum anywhere below it, and no server-side crate, HTTP client
#   or WebSocket library among its own dependencies; uag-core does not depend on it.
# - uag-graphrag and uag-models link no HTTP at all: no axum, tower-http, hyper or reqwest.
# - nothing below uag-gateway depends on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
failed=0

deps() { # every crate in the normal (non-dev) dependency graph of package $1, one name per line
  cargo tree --locked -p "$1" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u
}
direct() { # the direct normal dependencies of package $1
  cargo tree --locked -p "$1" -e normal --depth 1 --prefix none --format '{p}' | awk 'NR > 1 {print $1}' | sort -u
}
refuse() { # refuse package $1 if any of the names in $2 (space-separated) is among lines of $3
  local pkg="$1" banned="$2" list="$3" name
  for name in $banned; do
    if grep -qx "$name" <<<"$list"; then
      echo "check-layers: $pkg depends on $name ($(cargo tree --locked -p "$pkg" -e normal -i "$name" --prefix none --format '{p}' 2>/dev/null | sed -n 2p | awk '{print "through " $1}'))" >&2
      failed=1
    fi
  done
}

core_all=$(deps uag-core)
refuse uag-core "axum axum-core uag-gateway" "$core_all"
refuse uag-core "tower-http hyper-util tokio-tungstenite tower" "$(direct uag-core)"
voice_all=$(deps uag-voice)
refuse uag-voice "axum axum-core uag-gateway" "$voice_all"
refuse uag-voice "tower-http tower hyper hyper-util tokio-tungstenite reqwest" "$(direct uag-voice)"
refuse uag-core "uag-voice" "$core_all"
for pkg in uag-graphrag uag-models; do
  refuse "$pkg" "axum axum-core tower-http hyper reqwest uag-core uag-gateway" "$(deps "$pkg")"
done

if [ "$failed" = 0 ]; then
  echo "check-layers: models, graphrag <- core <- voice <- gateway <- uag holds (uag-core: $(wc -l <<<"$core_all") crates, uag-voice: $(wc -l <<<"$voice_all"), no axum)"
fi
exit "$failed"
