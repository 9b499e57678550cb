#!/usr/bin/env bash
# Installs the existing engines a voxgate cluster runs on, from Debian's packages, if missing:
#   postgresql   - the cluster store; the tests start their own throwaway server with it (tests/postgres.py)
#   redis-server - the shared live state of a cluster (tests/redis_server.py starts throwaway servers)
#   haproxy      - the HTTP/WebSocket front door (deploy/haproxy/haproxy.cfg)
#   kamailio     - the SIP front door (deploy/kamailio/kamailio.cfg: dispatcher, uac)
#   sipp         - SIP calls for the cluster tests (Debian package sip-tester)
# Usage: scripts/cluster-tools.sh [TOOL ...]   (default: every tool above)
# The system services the packages start are stopped again: the tests run their own servers on free
# loopback ports. Idempotent. Needs root (CI runs as root on a fresh Debian machine) or sudo.
set -euo pipefail

postgres_bin() {
  # the folder of initdb and pg_ctl: PATH's, else Debian's newest /usr/lib/postgresql/<version>/bin
  local initdb
  if initdb=$(command -v initdb 2>/dev/null) && [ -x "$(dirname "$initdb")/pg_ctl" ]; then
    dirname "$initdb"
    return 0
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | while read -r dir; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
  done | tail -n 1
}

# the front doors (haproxy, kamailio) and sipp: the program each installs, and its Debian package
door_program() {
  case "$1" in
    haproxy) echo /usr/sbin/haproxy ;;
    kamailio) echo /usr/sbin/kamailio ;;
    sipp) echo sipp ;;
  esac
}

door_package() {
  case "$1" in
    sipp) echo sip-tester ;;
    *) echo "$1" ;;
  esac
}

door_stop_service() {
  # the packages start system services on :80/:5060; the tests and deploy/local-cluster.sh run their own
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$1" 2>/dev/null; then
    "${SUDO[@]}" systemctl stop "$1" || true
  elif command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service "$1" stop >/dev/null 2>&1 || true
  fi
}

package() {
  case "$1" in
    haproxy|kamailio|sipp) door_package "$1" ;;
    *) echo "$1" ;;
  esac
}

present() {
  case "$1" in
    postgresql) [ -n "$(postgres_bin)" ] ;;
    redis-server) command -v redis-server >/dev/null 2>&1 ;;
    haproxy|kamailio|sipp) command -v "$(door_program "$1")" >/dev/null 2>&1 ;;
    *) echo "cluster-tools: unknown tool '$1' (known: postgresql, redis-server, haproxy, kamailio, sipp)" >&2; exit 2 ;;
  esac
}

stop_services() {
  case "$1" in
    postgresql)
      # Debian's package creates a cluster 'main' and starts it on :5432
      if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r version name _port status _rest; do
          if [ "$status" = online ]; then
            "${SUDO[@]}" pg_ctlcluster "$version" "$name" stop || true
          fi
        done
      fi
      ;;
    redis-server)
      # Debian's package starts a server on :6379 (systemd, or its init script where there is none)
      if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        "${SUDO[@]}" systemctl stop redis-server || true
      elif [ -x /etc/init.d/redis-server ]; then
        "${SUDO[@]}" /etc/init.d/redis-server stop >/dev/null 2>&1 || true
      fi
      ;;
    haproxy|kamailio) door_stop_service "$1" ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(postgresql redis-server haproxy kamailio sipp)
missing=()
for tool in "${tools[@]}"; do
  present "$tool" || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cluster-tools: ${missing[*]} missing and no apt-get here: install them with your system's packages" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
echo "cluster-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
packages=()
for tool in "${missing[@]}"; do
  packages+=("$(package "$tool")")
done
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
for tool in "${missing[@]}"; do
  stop_services "$tool"
  present "$tool" || { echo "cluster-tools: $tool is still missing after the install" >&2; exit 1; }
done
echo "cluster-tools: done"
