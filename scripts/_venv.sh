# Sourced by scripts/*.sh: create .venv and install certledger with its
# dependencies, once. Re-running is cheap: pip is skipped while pyproject.toml,
# setup.py and the C source it builds (the SMT's batch update) are unchanged
# since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.certledger-installed
want="$(cat pyproject.toml setup.py ledger/_smtcore.c ledger/_smtcore_records.h | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] ||
   ! compgen -G "ledger/_smtcore*.so" >/dev/null; then
  log=.venv/install.log
  echo "setting up .venv (log: $log)" >&2
  if ! { python -m pip install --disable-pip-version-check --upgrade pip &&
         python -m pip install --disable-pip-version-check -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing certledger's dependencies failed; see $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
