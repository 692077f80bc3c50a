#!/usr/bin/env bash
# Install into .venv and run the demo: the gateway on its embedded default (SQLite and
# the in-process store under ./instance, demo citizens and portals) and the two example
# portals of examples/ (电子税务局 on :5001, 社会保障服务 on :5002), which stop with it.
# Extra arguments go to `sso demo` (e.g. --port 5050; the portals follow the gateway).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv

# Where the gateway listens and writes demo-clients.json (the portals read it).
port=5000
instance="${SSO_INSTANCE_PATH:-instance}"
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="${2:-}"; shift ;;
        --port=*) port="${1#*=}" ;;
        --instance) instance="${2:-}"; shift ;;
        --instance=*) instance="${1#*=}" ;;
    esac
    [ $# -gt 0 ] && shift
done

pids=()
stop_all() {
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Wait until process $1 listens on port $2; fail if it exits first.
wait_for_port() {
    local pid="$1" port="$2"
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    return 1
}

"$VENV/bin/sso" --config config/dev.toml demo ${args[@]+"${args[@]}"} &
gateway=$!
pids+=("$gateway")
if ! wait_for_port "$gateway" "$port"; then
    echo "dev.sh: the gateway did not start on port $port" >&2
    exit 1
fi
# The gateway listens only after writing the portals' secrets and its issuer to demo-clients.json.
for portal in tax_portal:5001 social_portal:5002; do
    "$VENV/bin/python" "examples/${portal%:*}/app.py" --demo-clients "$instance/demo-clients.json" &
    pids+=("$!")
    if ! wait_for_port "$!" "${portal#*:}"; then
        echo "dev.sh: examples/${portal%:*} did not start on port ${portal#*:}" >&2
        exit 1
    fi
done
echo "dev.sh: gateway and both portals are up; start at http://127.0.0.1:5001 (Ctrl+C stops all three)"
wait "$gateway"
