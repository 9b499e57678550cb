#!/usr/bin/env bash
# Installs the real SIP peers the telephony tests run against, from Debian's packages, if missing:
#   kamailio    - registrar and record-routing proxy (tests/telephony/kamailio.cfg)
#   sip-tester  - sipp, which places the calls and plays speech as RTP
# Idempotent. Needs root (CI runs as root on a fresh Debian machine) or sudo.
set -euo pipefail
missing=()
command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
echo "telephony-peers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the package starts a system kamailio on :5060; the tests run their own on free ports
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
  "${SUDO[@]}" systemctl stop kamailio || true
fi
command -v kamailio >/dev/null && command -v sipp >/dev/null
echo "telephony-peers: done"
