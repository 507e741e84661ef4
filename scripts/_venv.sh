# Sourced by scripts/*.sh: create .venv and install certledger with its
# dependencies, once. Re-running is cheap: pip is skipped while pyproject.toml,
# setup.py and the C source it builds (the SMT's batch update) are unchanged
# since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The interpreter .venv is made with (only when .venv does not exist yet): $PYTHON if
# set; else the operating system's own python3 when it is 3.11+ and can build a venv
# with our C extension (venv, ensurepip, Python.h); else python3 on PATH. Distribution
# builds of CPython are compiled with profile-guided optimisation and LTO and link the
# interpreter statically; a default source or pyenv build does neither. On the
# benchmark machine the same certledger code ran its Python hot paths ~25 % faster on
# the distribution build (docs/benchmarks.md, "Interpreter"). Remove .venv to switch.
usable_python() {
  command -v "$1" >/dev/null 2>&1 && "$1" - <<'PYCHECK' >/dev/null 2>&1
import os, sys, sysconfig
import ensurepip, venv  # noqa: F401 - a distribution may ship them separately
sys.exit(sys.version_info < (3, 11)
         or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PYCHECK
}
pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
    return
  fi
  for candidate in /usr/bin/python3 python3; do
    if usable_python "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}
if [ ! -x .venv/bin/python ]; then
  PY="$(pick_python)"
  echo "creating .venv with $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))" >&2
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.certledger-installed
want="$(cat pyproject.toml setup.py ledger/_smtcore.c ledger/_smtcore_records.h ledger/_idcheck.c \
          ledger/_anchors.c |
        sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] ||
   ! compgen -G "ledger/_smtcore*.so" >/dev/null || ! compgen -G "ledger/_idcheck*.so" >/dev/null ||
   ! compgen -G "ledger/_anchors*.so" >/dev/null; then
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
