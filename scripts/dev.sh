#!/usr/bin/env bash
# Install into .venv and run the gateway on its embedded default: SQLite and the
# in-process store under ./instance, a demo account and a demo portal.
# Extra arguments go to `sso demo` (e.g. --port 5050).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv
exec "$VENV/bin/sso" --config config/dev.toml demo "$@"
