#!/usr/bin/env bash
# Install into .venv and run the whole test suite, two workers in parallel
# (TEST_WORKERS=auto or a number to change). Extra arguments go to pytest:
#   scripts/test.sh -q            scripts/test.sh tests/test_cli.py -k keys -n 0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv
status=0
"$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-2}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
