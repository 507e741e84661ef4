#!/usr/bin/env bash
# The main job on the embedded default: a local 4-validator network and a verifier on
# loopback, sample certificates issued, QR codes and wallets written, URLs printed;
# serves until Ctrl-C.
#
#   1. .venv (scripts/_venv.sh); a network in demo-data/net (`certledger network init`:
#      4 validators, each with its own LevelDB under demo-data/net/data/, and two
#      issuers registered at genesis: 示例大学 and 示例市市场监督管理局);
#   2. the 4 `certledger node run` processes, then `issue-batch` of the diplomas, one
#      business licence (`issue`), one diploma revoked (`revoke`);
#   3. a trust bundle (`trust export`), a department API key (`verifier add-key`), the
#      verifier (`verifier run`, waitress) and QR codes (`qr`) for a valid diploma, the
#      revoked one and the licence.
#
# Run it again and it resumes: the network, the certificates and the key are kept
# (each step checks the chain or the files first); only the processes are restarted.
# Ctrl-C (or the end of setup with DEMO_EXIT_AFTER_SETUP=1) stops exactly the
# processes this script started.
#
# Environment: DEMO_DATA (default ./demo-data), DEMO_DIPLOMAS (1000; fixed at the first
# run), DEMO_BASE_PORT (26601, first run only), DEMO_VERIFIER_PORT (8090),
# DEMO_KDF_ITERATIONS (key files; network init's default), DEMO_EXIT_AFTER_SETUP=1.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

DATA="${DEMO_DATA:-$ROOT/demo-data}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
NET="$DATA/net"
LOGS="$DATA/logs"
VDATA="$DATA/verifier"
VPORT="${DEMO_VERIFIER_PORT:-8090}"
VURL="http://127.0.0.1:$VPORT"
UNIVERSITY=11220000013544541J  # unified social credit codes (valid check characters)
BUREAU=12440100MB2C3D4E5K
DIPLOMA=11100000000013338W032  # certificate type codes
LICENCE=11100000MB0000007D001
docs() { python "$ROOT/scripts/demo_docs.py" "$@"; }
say() { printf '== %s\n' "$*"; }
json_get() { python -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

pids=()
names=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -eq 0 ] && return 0
  say "stopping ${names[*]}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid did not stop in time: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {  # start NAME LOGFILE COMMAND...: in the background, remembered for cleanup
  local name=$1 log=$2
  shift 2
  "$@" >>"$log" 2>&1 </dev/null &
  pids+=("$!")
  names+=("$name")
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --------------------------------------------------------------------------- network
if [ ! -f "$NET/network.json" ]; then
  rm -rf "$NET"  # an init that did not finish (network.json is written last)
  say "creating a 4-validator network in $NET"
  certledger network init --validators 4 --chain-id certledger-demo --out "$NET" \
    --issuers "$UNIVERSITY:示例大学 Example University:$DIPLOMA" \
    --issuers "$BUREAU:示例市市场监督管理局 Market Regulation Bureau:$LICENCE" \
    --base-port "${DEMO_BASE_PORT:-26601}" \
    ${DEMO_KDF_ITERATIONS:+--kdf-iterations "$DEMO_KDF_ITERATIONS"} >"$DATA/network-init.txt"
else
  say "resuming the network in $NET"
fi
if [ -z "${CERTLEDGER_PASSPHRASE:-}" ]; then
  if [ ! -f "$NET/env" ]; then
    echo "set CERTLEDGER_PASSPHRASE: $NET was made with your own passphrase" >&2
    exit 1
  fi
  set -a; . "$NET/env"; set +a  # the generated dev passphrase (a local demo only)
fi
mkdir -p "$LOGS" "$VDATA" "$DATA/qr" "$DATA/wallets"

configs=("$NET"/node-*.toml)
nodes=()
for cfg in "${configs[@]}"; do
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$cfg" | head -1)
  if listening "$port"; then
    echo "port $port ($(basename "$cfg" .toml)) is in use: is another demo running?" >&2
    exit 1
  fi
  nodes+=("http://127.0.0.1:$port")
done
if listening "$VPORT"; then
  echo "port $VPORT is in use: stop what uses it or set DEMO_VERIFIER_PORT" >&2
  exit 1
fi
node_args=()
for url in "${nodes[@]}"; do node_args+=(--node "$url"); done

for cfg in "${configs[@]}"; do
  name=$(basename "$cfg" .toml)
  start "$name" "$LOGS/$name.out" certledger node run --config "$cfg"
done
say "starting ${#nodes[@]} validators: ${nodes[*]}"
docs wait --pids="$(IFS=,; echo "${pids[*]}")" 60 "${nodes[@]/%//v1/status}" || {
  # A node that refused to start says why on its last line (an old store, a busy port).
  why=$(tail -qn1 "$LOGS"/node-*.out 2>/dev/null | grep -m1 '^Error:' || true)
  [ -z "$why" ] || echo "$why" >&2
  case "$why" in *"schema version"*)
    echo "$DATA was written by another certledger release: remove it to start a new network" >&2
  esac
  echo "see the logs in $LOGS" >&2; exit 1; }
NODE=${nodes[0]}

# --------------------------------------------------------------------------- certificates
if [ ! -f "$DATA/diplomas.count" ]; then
  echo "${DEMO_DIPLOMAS:-1000}" >"$DATA/diplomas.count"
fi
count=$(cat "$DATA/diplomas.count")
# The documents (deterministic), the ids shown below, and what the chain already holds.
state=$(docs state "$DATA/documents" "$count" "$NODE")
eval "$state"
keys="$NET/keys"

if [ "$HAVE_DIPLOMAS" = 1 ]; then
  say "$count diplomas already on the chain"
else
  say "issuing $count diplomas (one cert.issue_batch, one SM2 signature)"
  certledger issue-batch "$DATA/documents/diplomas.jsonl" --key "$keys/issuer-$UNIVERSITY.key" \
    --wallet-dir "$DATA/wallets/diplomas" "${node_args[@]}" --wait --wait-timeout 300 \
    >"$DATA/issue-batch.json"
fi
if [ "$HAVE_LICENCE" = 1 ]; then
  say "business licence already on the chain"
else
  say "issuing a business licence"
  certledger issue "$DATA/documents/licence.json" --key "$keys/issuer-$BUREAU.key" \
    --wallet-out "$DATA/wallets/licence.json" "${node_args[@]}" --wait >"$DATA/issue-licence.json"
fi
if [ "$HAVE_REVOKED" = 1 ]; then
  say "diploma $REVOKED_ID already revoked"
else
  say "revoking diploma $REVOKED_ID"
  certledger revoke "$REVOKED_ID" --reason "学位授予撤销 (demo)" \
    --key "$keys/issuer-$UNIVERSITY.key" "${node_args[@]}" --wait >"$DATA/revoke.json"
fi
cp "$DATA/wallets/diplomas/$VALID_ID.json" "$DATA/wallets/diploma-valid.json"
cp "$DATA/wallets/diplomas/$REVOKED_ID.json" "$DATA/wallets/diploma-revoked.json"

# --------------------------------------------------------------------------- verifier
say "trust bundle from the freshest verified head"
certledger trust export "${node_args[@]}" --genesis "$NET/genesis.json" \
  --out "$VDATA/trust.json" >"$DATA/trust-export.json"
if [ ! -f "$VDATA/department.key" ]; then
  say "API key for the department gd-hrss (stored hashed; the key text is kept for the demo)"
  (umask 077 && certledger verifier add-key --data "$VDATA" --department gd-hrss \
    --label "广东省人力资源和社会保障厅 (demo)" | json_get api_key >"$VDATA/department.key")
fi
API_KEY=$(cat "$VDATA/department.key")
start verifier "$LOGS/verifier.out" certledger verifier run --trust "$VDATA/trust.json" \
  "${node_args[@]}" --data "$VDATA" --port "$VPORT"

qr() {  # qr NAME WALLET FIELDS: PNG + SVG in demo-data/qr, the URL in NAME.url
  certledger qr "$2" --disclose "$3" --verifier "$VURL" --out "$DATA/qr/$1" | json_get url \
    >"$DATA/qr/$1.url"
}
qr diploma-valid "$DATA/wallets/diploma-valid.json" name,degree &
q1=$!
qr diploma-revoked "$DATA/wallets/diploma-revoked.json" name,degree &
q2=$!
qr licence "$DATA/wallets/licence.json" company_name,legal_representative &
q3=$!
for q in "$q1" "$q2" "$q3"; do
  wait "$q" || { echo "a QR code could not be written (see above)" >&2; exit 1; }
done
URL_VALID=$(cat "$DATA/qr/diploma-valid.url")
URL_REVOKED=$(cat "$DATA/qr/diploma-revoked.url")
URL_LICENCE=$(cat "$DATA/qr/licence.url")
printf '%s\n' "$URL_VALID" "$URL_REVOKED" "$URL_LICENCE" >"$DATA/urls.txt"
docs wait --pids="$(IFS=,; echo "${pids[*]}")" 60 "$VURL/healthz" || { echo "the verifier did not start; see $LOGS/verifier.out" >&2
                                 exit 1; }

cat <<EOF

certledger demo: ${#nodes[@]} validators (${nodes[*]}), verifier $VURL
  chain: $count diplomas from 示例大学 (one revoked), one business licence

Open the citizen QR pages (or scan the PNGs in $DATA/qr/):
  valid diploma     $URL_VALID
  revoked diploma   $URL_REVOKED
  business licence  $URL_LICENCE

Wallets (the holder's files: document + salts): $DATA/wallets/
Verify as a department (API key in $VDATA/department.key):
  curl -s $VURL/v1/verify -H "Authorization: Bearer $API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"purpose": "入学资格审核", "qr": "$URL_VALID"}'
Audit log:   curl -s -H "Authorization: Bearer $API_KEY" '$VURL/v1/audit?format=csv'
Logs:        $LOGS/
EOF

if [ "${DEMO_EXIT_AFTER_SETUP:-0}" = 1 ]; then
  say "DEMO_EXIT_AFTER_SETUP=1: done"
  exit 0
fi
say "serving until Ctrl-C"
set +e
wait -n "${pids[@]}"
code=$?
set -e
echo "a process of the demo exited (status $code); see $LOGS" >&2
exit 1
