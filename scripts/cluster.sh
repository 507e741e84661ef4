#!/usr/bin/env bash
# Local validator cluster: scripts/cluster.sh start|stop|status DIR
#
#   start   if DIR has no network.json, create one first (certledger network init:
#           $VALIDATORS validators, default 4, with a sample issuer), then start one
#           `certledger node run` per DIR/node-*.toml in the background.
#           pids go to DIR/pids/<node>.pid, output to DIR/logs/<node>.out (the
#           node's JSON log is DIR/logs/<node>.log).
#   stop    SIGTERM each pid recorded in DIR/pids (only those, and only while the pid
#           still runs our `node run` command), wait up to $STOP_TIMEOUT s (default
#           15), then SIGKILL what is left and say so.
#   status  per node: running or not, and its /v1/status height and peers.
#
# The passphrase comes from $CERTLEDGER_PASSPHRASE, else from DIR/env (written by
# `network init` for a dev network only).
# A relative DIR is relative to the caller's working directory (_venv.sh cd's to the
# repository, so DIR and this script's path are made absolute before it is sourced).
set -euo pipefail
usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] && [ -n "$2" ] || usage
cmd=$1
case "$cmd" in start|stop|status) ;; *) usage ;; esac
case "$2" in
  /*) dir_arg=$2 ;;
  *) dir_arg="$PWD/$2" ;;
esac
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
. "$(dirname "$self")/_venv.sh"

dir=$(mkdir -p "$dir_arg" && cd "$dir_arg" && pwd)
pids="$dir/pids"
logs="$dir/logs"

# ISSUER code:name:types - a valid unified social credit code and certificate type.
SAMPLE_ISSUER="11220000013544541J:示例大学 Example University:11100000000013338W032"

ours() {  # ours PID CONFIG: is PID still the node we started with CONFIG?
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "--config $2"
}

configs() { ls "$dir"/node-*.toml 2>/dev/null | sort -V; }

start() {
  if [ ! -f "$dir/network.json" ]; then
    echo "creating a ${VALIDATORS:-4}-validator network in $dir"
    certledger network init --validators "${VALIDATORS:-4}" --issuers "$SAMPLE_ISSUER" \
      --out "$dir" ${BASE_PORT:+--base-port "$BASE_PORT"} \
      ${KDF_ITERATIONS:+--kdf-iterations "$KDF_ITERATIONS"} >/dev/null
  fi
  if [ -z "${CERTLEDGER_PASSPHRASE:-}" ] && [ -f "$dir/env" ]; then
    set -a; . "$dir/env"; set +a
  fi
  mkdir -p "$pids" "$logs"
  for cfg in $(configs); do
    name=$(basename "$cfg" .toml)
    if [ -f "$pids/$name.pid" ] && ours "$(cat "$pids/$name.pid")" "$cfg"; then
      echo "$name already running (pid $(cat "$pids/$name.pid"))"
      continue
    fi
    nohup certledger node run --config "$cfg" >>"$logs/$name.out" 2>&1 </dev/null &
    echo $! >"$pids/$name.pid"
    echo "$name started (pid $!)"
  done
  echo "logs: $logs   stop: $self stop $dir"
}

stop() {
  [ -d "$pids" ] || { echo "no pids in $dir"; return 0; }
  local waiting=()
  for f in "$pids"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    pid=$(cat "$f")
    if ours "$pid" "$dir/$name.toml"; then
      kill -TERM "$pid" && waiting+=("$name:$pid")
    else
      rm -f "$f"
    fi
  done
  local deadline=$((SECONDS + ${STOP_TIMEOUT:-15}))
  for entry in "${waiting[@]}"; do
    name=${entry%%:*}; pid=${entry##*:}
    while ours "$pid" "$dir/$name.toml" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if ours "$pid" "$dir/$name.toml"; then
      echo "$name (pid $pid) did not stop in time: SIGKILL"
      kill -KILL "$pid" || true
    else
      echo "$name stopped"
    fi
    rm -f "$pids/$name.pid"
  done
}

status() {
  for cfg in $(configs); do
    name=$(basename "$cfg" .toml)
    port=$(sed -n 's/^port = \([0-9]*\)/\1/p' "$cfg" | head -1)
    state="stopped"
    if [ -f "$pids/$name.pid" ] && ours "$(cat "$pids/$name.pid")" "$cfg"; then
      state="running (pid $(cat "$pids/$name.pid"))"
    fi
    info=$( (curl -s --max-time 2 "http://127.0.0.1:$port/v1/status" || true) |
      python -c 'import json,sys
try:
    s = json.load(sys.stdin)
    print("height %s round %s peers up %s/%s mempool %s" % (
        s["height"], s["round"], s["peers_up"], len(s["peers"]), s["mempool"]["size"]))
except Exception:
    print("no answer")')
    echo "$name: $state; :$port $info"
  done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
