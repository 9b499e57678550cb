#!/usr/bin/env bash
# A voxgate cluster on this machine's loopback: PostgreSQL, Redis, N voxgate nodes, HAProxy in front of their
# HTTP/WebSocket ports and Kamailio in front of their SIP agents. For trying a cluster and for the tests
# (tests/cluster/); not for production (see docs/scale-out.md for Compose and Kubernetes).
#
#   deploy/local-cluster.sh start        start everything (fails, and stops what it started, if a part fails)
#   deploy/local-cluster.sh status       what runs, each node's /health, HAProxy's view of the nodes
#   deploy/local-cluster.sh stop         stop everything, remove the throwaway database; logs stay
#   deploy/local-cluster.sh start-node K (re)start node K alone (after a crash, or `kill -9` to try one)
#   deploy/local-cluster.sh stop-node K  stop node K alone
#
# Everything lives in one folder, VOXGATE_CLUSTER_DIR (default .local-cluster/ in the current folder):
# logs/<part>.log, run/<part>.pid, the admin password (admin.password), the shared secrets key
# (secrets.key), the nodes' data folders, the rendered proxy configs. Settings (environment):
#   VOXGATE_CLUSTER_NODES      number of voxgate nodes (2)
#   VOXGATE_CLUSTER_WORKERS    worker processes per node (1; VOXGATE_WORKERS)
#   VOXGATE_CLUSTER_HTTP_PORT  HAProxy's port, the cluster's one HTTP/WebSocket address (8080)
#   VOXGATE_CLUSTER_NODE_PORT  node K serves HTTP on this + K (8100)
#   VOXGATE_CLUSTER_SIP_PORT   Kamailio's UDP port, where a PBX sends calls (5060)
#   VOXGATE_CLUSTER_NODE_SIP_PORT  each node's SIP agent port, on its own loopback address 127.0.0.(10+K) (5070)
#   VOXGATE_CLUSTER_PG_PORT    the throwaway PostgreSQL's port (55432); with VOXGATE_DATABASE_URL set, that
#                              database is used instead and no PostgreSQL is started
#   VOXGATE_CLUSTER_REDIS_PORT the Redis port (56379); VOXGATE_CLUSTER_REDIS=0 starts none (nodes then share
#                              only the store)
#   VOXGATE_CLUSTER_KAMAILIO=0 starts no Kamailio
#   VOXGATE_CLUSTER_PBX_HOST / _PBX_PORT / _PBX_USER / _PBX_PASSWORD / _PBX_DOMAIN: a PBX Kamailio
#                              registers to as one endpoint (uac); unset: the PBX sends calls to Kamailio
#   VOXGATE_PYTHON             the Python that runs voxgate (default: .venv/bin/python of this repository)
#   VOXGATE_ADMIN_PASSWORD     the API account's password (default: generated into admin.password)
# Every other VOXGATE_* variable (VOXGATE_MODEL_DIR, VOXGATE_PROFILE, ...) reaches every node as it is.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DIR=${VOXGATE_CLUSTER_DIR:-$PWD/.local-cluster}
NODES=${VOXGATE_CLUSTER_NODES:-2}
HTTP_PORT=${VOXGATE_CLUSTER_HTTP_PORT:-8080}
NODE_PORT=${VOXGATE_CLUSTER_NODE_PORT:-8100}
SIP_PORT=${VOXGATE_CLUSTER_SIP_PORT:-5060}
NODE_SIP_PORT=${VOXGATE_CLUSTER_NODE_SIP_PORT:-5070}
PG_PORT=${VOXGATE_CLUSTER_PG_PORT:-55432}
REDIS_PORT=${VOXGATE_CLUSTER_REDIS_PORT:-56379}
if [ -z "${VOXGATE_PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then VOXGATE_PYTHON=$REPO/.venv/bin/python; else VOXGATE_PYTHON=python3; fi
fi

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

pidfile() { echo "$DIR/run/$1.pid"; }

running() {  # alive, and not a zombie (a killed part whose parent, this script, is long gone)
  local file state
  file=$(pidfile "$1")
  [ -f "$file" ] || return 1
  state=$(sed 's/.*) //' "/proc/$(cat "$file")/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# run a part in the background, in its own session (so stop can end its whole process group)
launch() {
  local name=$1
  shift
  running "$name" && die "$name is already running (pid $(cat "$(pidfile "$name")"))"
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# TERM to the part's process group, KILL after 10 s
halt() {
  local name=$1 file pid
  file=$(pidfile "$name")
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if running "$name"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      running "$name" || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

wait_for() {  # wait_for NAME SECONDS COMMAND...: until COMMAND succeeds, or NAME's process died
  local name=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    running "$name" || { tail -n 30 "$DIR/logs/$name.log" >&2; die "$name exited (log: $DIR/logs/$name.log)"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$DIR/logs/$name.log" >&2; die "$name did not come up in ${seconds}s"; }
    sleep 0.2
  done
}

# -- PostgreSQL: a throwaway server (initdb in a temporary folder the server's user owns) ---------------------

pg_bin() {
  local initdb
  if initdb=$(command -v initdb 2>/dev/null) && [ -x "$(dirname "$(readlink -f "$initdb")")/pg_ctl" ]; then
    dirname "$(readlink -f "$initdb")"
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg() {  # PostgreSQL refuses to run as root: as root, its commands run as the postgres user
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin folder password
  bin=$(pg_bin)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || die "no PostgreSQL: run scripts/cluster-tools.sh postgresql"
  folder=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-cluster-pg.XXXXXX")
  echo "$folder" >"$DIR/run/postgres.dir"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$folder"
  password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  (umask 077 && echo "$password" >"$folder/pwfile")
  [ "$(id -u)" -ne 0 ] || chown postgres: "$folder/pwfile"
  as_pg "$bin/initdb" --pgdata "$folder/data" --username voxgate --pwfile "$folder/pwfile" \
    --auth-host scram-sha-256 --auth-local trust --encoding UTF8 --locale C.UTF-8 --no-sync \
    >"$DIR/logs/postgres-initdb.log" 2>&1 || die "initdb failed (log: $DIR/logs/postgres-initdb.log)"
  rm -f "$folder/pwfile"
  local as_user=()
  [ "$(id -u)" -ne 0 ] || as_user=(runuser -u postgres --)
  launch postgres "${as_user[@]}" "$bin/postgres" -D "$folder/data" -c listen_addresses=127.0.0.1 \
    -c port="$PG_PORT" -c unix_socket_directories="$folder" -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200
  wait_for postgres 60 as_pg "$bin/psql" --host "$folder" --port "$PG_PORT" --username voxgate \
    --dbname postgres --no-psqlrc --quiet --command "SELECT 1"
  as_pg "$bin/psql" --host "$folder" --port "$PG_PORT" --username voxgate --dbname postgres --no-psqlrc \
    --quiet --command "CREATE DATABASE voxgate" >/dev/null
  echo "postgresql+asyncpg://voxgate:$password@127.0.0.1:$PG_PORT/voxgate" >"$DIR/run/database.url"
}

stop_postgres() {
  halt postgres
  if [ -f "$DIR/run/postgres.dir" ]; then
    rm -rf "$(cat "$DIR/run/postgres.dir")"
    rm -f "$DIR/run/postgres.dir" "$DIR/run/database.url"
  fi
}

# -- Redis ---------------------------------------------------------------------------------------------------

start_redis() {
  command -v redis-server >/dev/null 2>&1 || die "no redis-server: run scripts/cluster-tools.sh redis-server (or VOXGATE_CLUSTER_REDIS=0)"
  mkdir -p "$DIR/redis"
  launch redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$DIR/redis"
  wait_for redis 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG"
  echo "redis://127.0.0.1:$REDIS_PORT/0" >"$DIR/run/redis.url"
}

# -- voxgate nodes -------------------------------------------------------------------------------------------

node_sip_host() { echo "127.0.0.$((10 + $1))"; }

start_node() {
  local k=$1 port=$((NODE_PORT + $1))
  mkdir -p "$DIR/node$k"
  # shellcheck disable=SC2097,SC2098
  launch "node$k" env \
    VOXGATE_DATABASE_URL="$(cat "$DIR/run/database.url")" \
    VOXGATE_REDIS_URL="$(cat "$DIR/run/redis.url" 2>/dev/null || true)" \
    VOXGATE_NODE_ID="node$k" \
    VOXGATE_WORKERS="${VOXGATE_CLUSTER_WORKERS:-1}" \
    VOXGATE_DATA_DIR="$DIR/node$k" \
    VOXGATE_SECRET_KEY_FILE="$DIR/secrets.key" \
    VOXGATE_ADMIN_PASSWORD="$(cat "$DIR/admin.password")" \
    VOXGATE_SIP_BIND_HOST="$(node_sip_host "$k")" \
    VOXGATE_SIP_PUBLIC_HOST="$(node_sip_host "$k")" \
    "$VOXGATE_PYTHON" -m voxgate serve --host 127.0.0.1 --port "$port"
}

wait_node() {
  wait_for "node$1" 180 curl -sf "http://127.0.0.1:$((NODE_PORT + $1))/health"
}

# -- HAProxy -------------------------------------------------------------------------------------------------

start_haproxy() {
  local k servers=""
  for k in $(seq "$NODES"); do
    servers+="    server node$k 127.0.0.1:$((NODE_PORT + k))"$'\n'
  done
  awk -v servers="$servers" '$0 == "@SERVERS@" { printf "%s", servers; next } { print }' \
    "$HERE/haproxy/haproxy.cfg" >"$DIR/haproxy.cfg"
  export VOXGATE_HAPROXY_BIND="127.0.0.1:$HTTP_PORT" VOXGATE_HAPROXY_STATS="$DIR/run/haproxy.sock"
  haproxy -c -q -f "$DIR/haproxy.cfg" || die "the rendered $DIR/haproxy.cfg is invalid"
  launch haproxy haproxy -W -db -f "$DIR/haproxy.cfg"
  wait_for haproxy 20 curl -sf "http://127.0.0.1:$HTTP_PORT/health"
}

# -- Kamailio ------------------------------------------------------------------------------------------------

start_kamailio() {
  local k
  : >"$DIR/dispatcher.list"
  for k in $(seq "$NODES"); do
    echo "1 sip:$(node_sip_host "$k"):$NODE_SIP_PORT 0 0 node=node$k" >>"$DIR/dispatcher.list"
  done
  mkdir -p "$DIR/kamailio"
  local defines=(-A "DISPATCHER_LIST=\"$DIR/dispatcher.list\"")
  if [ -n "${VOXGATE_CLUSTER_PBX_HOST:-}" ]; then
    write_uacreg "$DIR/kamailio/db"
    defines+=(-A WITH_UAC -A "UAC_DB=\"text://$DIR/kamailio/db\"" -A "UAC_CONTACT=\"127.0.0.1:$SIP_PORT\"")
  fi
  kamailio -c -f "$HERE/kamailio/kamailio.cfg" "${defines[@]}" >"$DIR/logs/kamailio-check.log" 2>&1 \
    || die "kamailio.cfg does not load (log: $DIR/logs/kamailio-check.log)"
  launch kamailio kamailio -DD -E -f "$HERE/kamailio/kamailio.cfg" -l "udp:127.0.0.1:$SIP_PORT" \
    -Y "$DIR/kamailio" -w "$DIR/kamailio" -m 64 -M 8 "${defines[@]}"
  wait_for kamailio 20 sip_ping 127.0.0.1 "$SIP_PORT"
}

# the uac module's registrations table, as db_text (one registration: Kamailio as the PBX's one endpoint)
write_uacreg() {
  local db=$1 user=${VOXGATE_CLUSTER_PBX_USER:-voxgate} domain=${VOXGATE_CLUSTER_PBX_DOMAIN:-$VOXGATE_CLUSTER_PBX_HOST}
  local proxy="sip:$VOXGATE_CLUSTER_PBX_HOST:${VOXGATE_CLUSTER_PBX_PORT:-5060}"
  local password=${VOXGATE_CLUSTER_PBX_PASSWORD:-}
  mkdir -p "$db"
  printf 'table_name(string) table_version(int) \nuacreg:5\n' >"$db/version"
  {
    echo "id(int,auto) l_uuid(string) l_username(string) l_domain(string) r_username(string) r_domain(string) realm(string) auth_username(string) auth_password(string) auth_ha1(string,null) auth_proxy(string) expires(int) flags(int) reg_delay(int) contact_addr(string) socket(string,null) "
    local row=(1 voxgate "$user" "$domain" "$user" "$domain" "$domain" "$user" "$password" "" "$proxy" 300 0 0
      "127.0.0.1:$SIP_PORT" "")
    local field line=""
    for field in "${row[@]}"; do line+="${field//:/\\:}:"; done  # db_text escapes ':' in values
    echo "${line%:}"
  } >"$db/uacreg"
}

sip_ping() {  # an OPTIONS to HOST PORT answered 200
  "$VOXGATE_PYTHON" - "$1" "$2" <<'PY'
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.5)
me = s.getsockname()[1]
s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.time_ns()}\r\n"
          f"From: <sip:ping@127.0.0.1>;tag=1\r\nTo: <sip:{host}>\r\nCall-ID: ping{time.time_ns()}@local-cluster\r\n"
          "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (host, port))
sys.exit(0 if s.recv(65535).startswith(b"SIP/2.0 200") else 1)
PY
}

haproxy_api() {  # one command to HAProxy's runtime API (its unix socket; socat is not needed)
  "$VOXGATE_PYTHON" - "$1" "$2" <<'PY'
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode() + b"\n")
    while chunk := s.recv(65536):
        sys.stdout.write(chunk.decode(errors="replace"))
PY
}

# -- commands ------------------------------------------------------------------------------------------------

prepare_dir() {
  mkdir -p "$DIR/logs" "$DIR/run"
  chmod 700 "$DIR"
  if [ ! -f "$DIR/secrets.key" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$DIR/secrets.key")
  fi
  if [ -n "${VOXGATE_ADMIN_PASSWORD:-}" ]; then
    (umask 077 && printf '%s\n' "$VOXGATE_ADMIN_PASSWORD" >"$DIR/admin.password")
  elif [ ! -f "$DIR/admin.password" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$DIR/admin.password")
  fi
}

start() {
  prepare_dir
  STARTING=1
  trap 'if [ "$STARTING" = 1 ]; then say "start failed: stopping what started"; stop; fi' EXIT
  if [ -n "${VOXGATE_DATABASE_URL:-}" ]; then
    echo "$VOXGATE_DATABASE_URL" >"$DIR/run/database.url"
  else
    start_postgres
  fi
  if [ "${VOXGATE_CLUSTER_REDIS:-1}" != 0 ]; then start_redis; fi
  # the first node migrates the new database; the others start together after it
  start_node 1
  wait_node 1
  local k
  for k in $(seq 2 "$NODES"); do start_node "$k"; done
  for k in $(seq 2 "$NODES"); do wait_node "$k"; done
  start_haproxy
  if [ "${VOXGATE_CLUSTER_KAMAILIO:-1}" != 0 ]; then start_kamailio; fi
  STARTING=0
  local sip=""
  [ "${VOXGATE_CLUSTER_KAMAILIO:-1}" = 0 ] || sip=", SIP udp:127.0.0.1:$SIP_PORT (Kamailio)"
  say "up: http://127.0.0.1:$HTTP_PORT (HAProxy over $NODES nodes)$sip;"
  say "    account admin, password in $DIR/admin.password; logs in $DIR/logs"
}

stop() {
  local name file
  halt kamailio
  halt haproxy
  for file in "$DIR"/run/node*.pid; do
    [ -e "$file" ] || continue
    name=$(basename "$file" .pid)
    halt "$name"
  done
  halt redis
  stop_postgres
  rm -f "$DIR/run/redis.url" "$DIR/run/haproxy.sock"
  say "stopped (logs stay in $DIR/logs)"
}

status() {
  local file name state code=0
  for file in "$DIR"/run/*.pid; do
    [ -e "$file" ] || continue
    name=$(basename "$file" .pid)
    if running "$name"; then state="running (pid $(cat "$file"))"; else state="DEAD"; code=1; fi
    case "$name" in
      node*)
        state+=", /health: $(curl -s -m 2 "http://127.0.0.1:$((NODE_PORT + ${name#node}))/health" || echo unreachable)"
        ;;
    esac
    echo "$name: $state"
  done
  if [ -S "$DIR/run/haproxy.sock" ]; then
    echo "haproxy's view (server, operational state: 2 up, 0 down):"
    haproxy_api "$DIR/run/haproxy.sock" "show servers state voxgate_nodes" \
      | awk 'NF > 6 && $1 ~ /^[0-9]+$/ { print "  " $4 ": " $6 }'
  fi
  return $code
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  start-node)
    [ -n "${2:-}" ] || die "usage: $0 start-node K"
    start_node "$2"
    wait_node "$2"
    ;;
  stop-node)
    [ -n "${2:-}" ] || die "usage: $0 stop-node K"
    halt "node$2"
    ;;
  *)
    echo "usage: $0 start|stop|status|start-node K|stop-node K" >&2
    exit 2
    ;;
esac
