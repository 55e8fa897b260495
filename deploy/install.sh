#!/bin/sh
# Installs uag from its release tarball: run from the unpacked folder as root.
#   ./install.sh              install and start uag.service
#   ./install.sh --no-start   install only
# An existing /etc/uag/uag.toml is kept (the new default goes next to it as uag.toml.new).
# A tarball made with `release.sh --with-models` carries models.tar: its models are verified
# against the binary's manifest and installed before the service starts (no network needed).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
start=1
[ "${1:-}" = "--no-start" ] && start=0
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

install -m 0755 "$here/usr/bin/uag" /usr/bin/uag
install -d -m 0750 /etc/uag
install -d -m 0700 /etc/uag/credentials
if [ -e /etc/uag/uag.toml ]; then
  install -m 0640 "$here/etc/uag/uag.toml" /etc/uag/uag.toml.new
else
  install -m 0640 "$here/etc/uag/uag.toml" /etc/uag/uag.toml
fi
# The access policy the appliance config names; an edited one is kept (the new one goes next to it).
install -d -m 0750 /etc/uag/policy
for f in uag.rego policy-data.json; do
  if [ -e "/etc/uag/policy/$f" ]; then
    install -m 0640 "$here/etc/uag/policy/$f" "/etc/uag/policy/$f.new"
  else
    install -m 0640 "$here/etc/uag/policy/$f" "/etc/uag/policy/$f"
  fi
done
for unit in "$here"/lib/systemd/system/*; do
  install -m 0644 "$unit" "/etc/systemd/system/$(basename "$unit")"
done
install -d /usr/share/doc/uag
cp -r "$here/usr/share/doc/uag/." /usr/share/doc/uag/
/usr/bin/uag config check /etc/uag/uag.toml >/dev/null
if [ -f "$here/models.tar" ]; then
  # A damaged bundle is refused whole (nothing of it installed); stop here so it is noticed.
  if ! /usr/bin/uag --config /etc/uag/uag.toml models import "$here/models.tar"; then
    echo "install.sh: models.tar was refused (reason above); copy the tarball again and rerun ./install.sh" >&2
    exit 1
  fi
fi
systemctl daemon-reload
if [ "$start" = 1 ]; then
  systemctl enable --now uag.service
  echo "install.sh: uag is running; check with: systemctl status uag; journalctl -u uag"
  echo "install.sh: every route but /healthz, /readyz, /metrics and the kiosk page needs an API key;"
  echo "  the keys were made on first start: sudo cat /var/lib/uag/keys/admin.key (operator),"
  echo "  /var/lib/uag/keys/kiosk.key (kiosk: http://THIS-HOST:8080/?access_token=KEY); see DEPLOY.md, \"Access\""
else
  echo "install.sh: installed; start with: systemctl enable --now uag.service"
fi
