#!/usr/bin/env bash
# Installs what the node, the lab and the tests need: Debian packages (iproute2 for
# the lab's namespaces, netcat/socat/iperf3 as real clients for end-to-end tests,
# tshark to decode captures with tools/wireshark/ilnp.lua, tmux to show ilnp-status --watch
# running in a terminal)
# and the project itself, editable, into ./.venv. Idempotent: re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iproute2 netcat-openbsd socat iperf3 procps curl openssh-server openssh-client tshark tmux)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install Debian packages: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # tshark asks whether non-root users may capture: no (the tests run as root)
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
