#!/usr/bin/env bash
# The main job on the embedded default. Today: an issuer key, a sample diploma
# committed with per-field salts, its signed anchor, a two-field presentation
# and its verification. Safe to run twice (it works in ./demo-data/offline).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

out="$ROOT/demo-data/offline"
mkdir -p "$out"
# A demo passphrase: real deployments are prompted or set it from a secret store.
export CERTLEDGER_PASSPHRASE="${CERTLEDGER_PASSPHRASE:-demo-passphrase-not-for-production}"
chain=certledger-demo

if [ ! -f "$out/issuer.key" ]; then
  certledger keys gen --out "$out/issuer.key" --label "示例大学 Example University"
fi
certledger keys show "$out/issuer.key"
certledger cert digest "$ROOT/scripts/samples/diploma.json" --wallet-out "$out/wallet.json"
certledger cert sign "$out/wallet.json" --key "$out/issuer.key" --chain-id "$chain" \
  --out "$out/anchor.json"
certledger cert present "$out/wallet.json" --disclose name,degree --out "$out/presentation.json"
echo "== verifying the presentation (reveals name and degree only)"
certledger cert check "$out/presentation.json" --anchor "$out/anchor.json" \
  --issuer-key "$out/issuer.key" --chain-id "$chain"
echo "== files in $out: issuer.key (encrypted), wallet.json (holder), anchor.json (public), presentation.json"
