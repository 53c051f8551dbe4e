#!/usr/bin/env bash
# The demo: the dissertation's network on the lab: alice (0:0:0:a) - router (a, b, c) - bob (0:0:0:b).
# Brings it up, waits until the nodes know each other, pings bob from alice through the
# router, and leaves the lab running for you to explore (`make demo-down` removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
LAB=${ILNP_LAB:-ilnp}

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the lab needs root (network namespaces): run as root or with sudo" >&2
  exit 1
fi
if ilnp-lab --lab "$LAB" status >/dev/null 2>&1; then
  echo "demo: lab $LAB is already up; 'make demo-down' first to start afresh" >&2
  exit 1
fi
ilnp-lab --lab "$LAB" up router
for i in $(seq 1 100); do
  if ilnp-lab --lab "$LAB" exec alice -- ilnp-hosts --json 2>/dev/null | grep -q '"bob"'; then break; fi
  sleep 0.1
done
echo
echo "== what alice knows (ilnp-lab exec alice -- ilnp-hosts)"
ilnp-lab --lab "$LAB" exec alice -- ilnp-hosts
echo
echo "== alice pings bob through the router (ilnp-lab exec alice -- ilnp-ping -c 5 -i 0.2 bob)"
ilnp-lab --lab "$LAB" exec alice -- ilnp-ping -c 5 -i 0.2 bob
echo
echo "== a TCP service over the overlay: bob's web server, fetched by alice's curl through the stream relays"
mkdir -p /tmp/ilnp-demo-www && echo "hello from bob, over ILNP" > /tmp/ilnp-demo-www/index.html
ilnp-lab --lab "$LAB" exec bob -- python3 -m http.server 8080 --bind 127.0.0.1 --directory /tmp/ilnp-demo-www \
  >/dev/null 2>&1 &
ilnp-lab --lab "$LAB" exec bob -- ilnp-forward serve 80 --to 127.0.0.1:8080
ilnp-lab --lab "$LAB" exec alice -- ilnp-forward listen 9080 bob 80
for i in $(seq 1 50); do
  if ilnp-lab --lab "$LAB" exec alice -- curl -sf http://127.0.0.1:9080/ 2>/dev/null; then break; fi
  sleep 0.2
done
cat <<EOT

The lab is up. Try:
  ilnp-lab exec alice -- ilnp-tap                     # watch alice's bus (Ctrl-C to stop)
  ilnp-lab exec alice -- supervisorctl -c supervisord.conf status
  ilnp-lab exec alice -- ilnp-move 0:0:0:c            # move alice to network c
  ilnp-lab exec router -- ilnp-status                 # counters of every actor
  ilnp-lab exec alice -- ilnp-forward list            # the stream forwards
  ilnp-lab exec alice -- curl http://127.0.0.1:9080/  # bob's web server, over the overlay
  ilnp-lab down                                       # or: make demo-down
(with PATH=$PWD/.venv/bin:\$PATH)
EOT
