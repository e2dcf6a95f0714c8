#!/usr/bin/env bash
# LCM publishes by UDP multicast. A host whose only interface is loopback has
# no multicast route, so LCM's sockets fail (or deliver nothing). Give
# loopback one when we can; otherwise say what to run.
set -euo pipefail
# A specific route keeps test multicast on loopback instead of following the default route out.
has_route() { ip route show 224.0.0.0/4 2>/dev/null | grep -q .; }
lo_multicast() { ip link show lo 2>/dev/null | grep -q MULTICAST; }
if ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq iproute2 >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
  else
    echo "lcm-multicast: 'ip' (iproute2) is missing; install it to let LCM work on loopback" >&2
    exit 0
  fi
fi
if lo_multicast && has_route; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  cat >&2 <<'MSG'
lcm-multicast: LCM needs a multicast route. As root, run:
  ip link set lo multicast on
  ip route add 224.0.0.0/4 dev lo
MSG
  exit 0
fi
lo_multicast || ip link set lo multicast on
ip route show 224.0.0.0/4 | grep -q . || ip route add 224.0.0.0/4 dev lo 2>/dev/null || true
echo "lcm-multicast: enabled multicast on lo with a 224.0.0.0/4 route"
