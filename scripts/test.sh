#!/usr/bin/env bash
# README command 2: set up .venv, start the real backing services, run lint and the whole suite.
# Stops the services afterwards unless they were already running before (a developer's stack).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh || exit 1

# The browser test screenshots the HTML report with Debian's chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium (Debian) for the browser test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 \
      || echo "test: could not install chromium; tests/test_browser.py will fail under CI=true" >&2
  else
    echo "test: chromium is missing and this user cannot apt-get install it" >&2
  fi
fi

started=0
if ! .venv/bin/python scripts/services status --quiet >/dev/null 2>&1; then
  started=1
fi
echo "test: starting backing services (scripts/services up)" >&2
if ! .venv/bin/python scripts/services up; then
  echo "test: FAILED: the backing services did not start (see the message above); integration tests cannot run" >&2
  [ "$started" = 1 ] && .venv/bin/python scripts/services down >/dev/null 2>&1
  exit 1
fi
eval "$(.venv/bin/python scripts/services env)"
cleanup() { [ "$started" = 1 ] && .venv/bin/python scripts/services down >&2; }
trap cleanup EXIT

echo "test: ruff check" >&2
.venv/bin/ruff check forensics tests scripts benchmarks || exit 1

.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test: FAILED: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
