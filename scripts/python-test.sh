#!/usr/bin/env bash
# Python tests of the `mooncake` module (crates/python): makes a venv, builds the
# wheel with maturin, installs it, builds the `mooncake` binary the fixtures start
# (master with its embedded HTTP metadata server), then runs pytest.
#
#   scripts/python-test.sh [pytest args...]
#
# Env: MOONCAKE_PY_VENV (default .venv), MOONCAKE_PY_PROFILE=release for an
# optimised wheel (default: dev profile, faster to build).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MOONCAKE_PY_VENV:-.venv}
PROFILE=${MOONCAKE_PY_PROFILE:-dev}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import maturin, pytest, numpy' >/dev/null 2>&1 \
    || [ ! -x "$VENV/bin/maturin" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check maturin pytest numpy
fi

cargo build -p mooncake-cli

WHEELS=target/python-wheels
rm -rf "$WHEELS"
if [ "$PROFILE" = release ]; then
    "$VENV/bin/maturin" build --release -m crates/python/Cargo.toml -o "$WHEELS" -q
else
    "$VENV/bin/maturin" build -m crates/python/Cargo.toml -o "$WHEELS" -q
fi
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEELS"/mooncake_rs-*.whl

export MOONCAKE_BIN=${MOONCAKE_BIN:-$PWD/target/debug/mooncake}
# Run from the tests folder so `import mooncake` resolves to the installed wheel.
cd crates/python/tests
exec "../../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
