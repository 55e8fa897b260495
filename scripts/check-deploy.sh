#!/usr/bin/env bash
# Machine checks of the deployment files (no Docker engine or board needed):
# - systemd units: `systemd-analyze verify`, and `systemd-analyze security` exposure <= 2.0
# - docker-compose files: `docker-compose config`
# - Prometheus: `promtool check config`, `check rules` and `test rules` on deploy/prometheus
#   (the Grafana dashboard's metric names are checked against a live /metrics by tests/it/metrics.rs)
# - Yocto: the recipe's crate list matches Cargo.lock exactly
# The NGINX production config is tested for real by tests/it/nginx_proxy.rs.
#
#   scripts/check-deploy.sh [path/to/uag]     (default target/debug/uag)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="$(realpath "${1:-target/debug/uag}")"
[ -x "$bin" ] || { echo "check-deploy: $bin is not built (cargo build)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart exists: point the copies at the built binary, nothing else changes.
for unit in systemd/*.service systemd/*.socket systemd/*.path; do
  sed "s#/usr/bin/uag#$bin#g" "$unit" >"$tmp/$(basename "$unit")"
done
systemd-analyze verify --man=no "$tmp"/*
echo "check-deploy: systemd-analyze verify: ok"
for unit in "$tmp"/*.service; do
  # The threshold is on systemd's 0-100 scale: 20 is the exposure level 2.0.
  line=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1 | tail -n 1) || {
    echo "check-deploy: $(basename "$unit") is above exposure 2.0: $line" >&2
    systemd-analyze security --offline=true "$unit" | grep -v '✓' >&2 || true
    exit 1
  }
  echo "check-deploy: $(basename "$unit"): ${line#→ }"
done

sh -n deploy/install.sh && echo "check-deploy: deploy/install.sh: syntax ok"

for f in docker-compose.yml docker-compose.prod.yml; do
  docker-compose -f "$f" config -q
  echo "check-deploy: $f: valid"
done

promtool check config deploy/prometheus/prometheus.yml >/dev/null
promtool check rules deploy/prometheus/alerts.yml >/dev/null
(cd deploy/prometheus && promtool test rules alerts_test.yml >/dev/null)
echo "check-deploy: prometheus config, alert rules and rule tests: ok"

python3 scripts/yocto-crates.py --check
