#!/usr/bin/env bash
# Runs every test: sets up .venv on a fresh machine, then lint, types and pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# The browser test (tests/test_browser.py) renders the QR page in headless Chromium,
# with a CJK font for the screenshots. Install them where we can; never fail for it.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium (apt-get; log .venv/apt-chromium.log)"
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
        fonts-wqy-microhei) >.venv/apt-chromium.log 2>&1 ||
      echo "chromium could not be installed; the browser test will skip"
  else
    echo "chromium is not installed (needs root and apt-get); the browser test will skip"
  fi
fi
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
