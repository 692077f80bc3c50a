# shellcheck shell=bash
# Sourced by scripts/dev.sh and scripts/test.sh: make .venv (Python >= 3.11) and
# install the project into it, editable, with its test extras.  The install is
# skipped when pyproject.toml, the Python version and the checkout path are the
# same as at the last successful install, so repeated runs start at once.

VENV="${VENV:-.venv}"

find_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return 0; fi
    local candidate
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

ensure_venv() {
    local python
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        python="$(find_python)"
        echo "creating $VENV with $python" >&2
        rm -rf "$VENV"
        if ! "$python" -m venv "$VENV"; then
            echo "error: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
            return 1
        fi
    fi
    local stamp="$VENV/.sso-install-stamp" want
    want="$(cat pyproject.toml; pwd; "$VENV/bin/python" -VV)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "installing the project into $VENV (pip install -e '.[test]')" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet -e '.[test]'
    printf '%s' "$want" >"$stamp"
}
