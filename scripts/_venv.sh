# Sourced by scripts/*: make sure .venv exists and matches pyproject.toml.
# The venv is "stale" when pyproject.toml changed since it was built (a stamp holds its hash).
VENV="${TIDEMQ_VENV:-$root/.venv}"
ensure_venv() {
    local extra="${1:-}"
    local py="${PYTHON:-python3}"
    local want stamp="$VENV/.tidemq-stamp"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)-${extra}"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: TideMQ needs Python >= 3.11; $py is $("$py" --version 2>&1). Set PYTHON=/path/to/python3.11+." >&2
        exit 1
    fi
    echo "Setting up $VENV (first run or pyproject.toml changed)..." >&2
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    if [ -n "$extra" ]; then
        "$VENV/bin/python" -m pip install --quiet -e ".[$extra]" >&2
    else
        "$VENV/bin/python" -m pip install --quiet -e . >&2
    fi
    echo "$want" > "$stamp"
}
