#!/usr/bin/env bash
# Create the checkout's virtual environment (.venv) with a Python >= 3.12 and install wkdist
# with every optional part (pip install -e ".[all]"). Run from anywhere; rerunning it reuses a
# good .venv and brings the install up to date.
#
# The interpreter: $WKDIST_PYTHON if set, else the first of python3.12, python3.13, python3.14
# on PATH, pyenv's latest 3.12 / 3.13 / 3.14 (a pyenv shim for a version that is installed but
# not selected refuses to run, so pyenv is asked directly), then python3 and python, whichever
# runs and is >= 3.12. Exits non-zero, saying what to install, when there is none.
# `bash deploy/bootstrap.sh --print-python` prints that interpreter and does nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
MINIMUM="3.12"

say() { echo "bootstrap: $*" >&2; }

good_python() {  # the command runs and is a CPython >= 3.12
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

version_of() {
    "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?'
}

find_python() {
    local candidate version
    if [ -n "${WKDIST_PYTHON:-}" ]; then
        if good_python "$WKDIST_PYTHON"; then echo "$WKDIST_PYTHON"; return 0; fi
        say "WKDIST_PYTHON=$WKDIST_PYTHON does not run as Python >= $MINIMUM"
        return 1
    fi
    for candidate in python3.12 python3.13 python3.14; do
        if command -v "$candidate" >/dev/null 2>&1 && good_python "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for minor in 3.12 3.13 3.14; do
            version=$(pyenv latest "$minor" 2>/dev/null || true)
            [ -n "$version" ] || continue
            candidate=$(PYENV_VERSION="$version" pyenv which "python$minor" 2>/dev/null || true)
            if [ -n "$candidate" ] && good_python "$candidate"; then
                echo "$candidate"; return 0
            fi
        done
    fi
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && good_python "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    return 1
}

explain_missing() {
    local found=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            found="$found $candidate=$(version_of "$candidate")"
        fi
    done
    say "error: wkdist needs Python >= $MINIMUM (zarr 3 does); none found" \
        "(have:${found:- no python})."
    say "Install one, then rerun this command, for example:"
    say "  pyenv install 3.12          (pyenv; this script finds it without 'pyenv global')"
    say "  sudo apt install python3.12 python3.12-venv    (Debian/Ubuntu with 3.12 packages)"
    say "  uv python install 3.12      (uv; or conda create -n py312 python=3.12)"
    say "or point WKDIST_PYTHON at one: WKDIST_PYTHON=/path/to/python3.12 bash $0"
}

if [ "${1:-}" = "--print-python" ]; then
    find_python || { explain_missing; exit 1; }
    exit 0
elif [ $# -gt 0 ]; then
    say "error: unknown argument $1 (expected none, or --print-python)"
    exit 2
fi

if [ -x "$VENV/bin/python" ] && good_python "$VENV/bin/python"; then
    say "using the existing $VENV (Python $(version_of "$VENV/bin/python"))"
else
    if ! PYTHON=$(find_python); then
        explain_missing
        exit 1
    fi
    say "creating $VENV with $PYTHON (Python $(version_of "$PYTHON"))"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        say "error: $PYTHON cannot create a virtual environment; on Debian/Ubuntu install" \
            "its venv package (e.g. python3.12-venv)"
        exit 1
    fi
fi

say "installing wkdist with all extras (pip install -e \".[all]\"; about a minute)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[all]"
say "done: activate with '. $VENV/bin/activate', then run 'wkdist --help'"
