#!/usr/bin/env bash
# Runs every test: sets up .venv on a fresh machine, then lint, types and pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== pytest"
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
