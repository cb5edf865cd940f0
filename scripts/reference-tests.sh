#!/usr/bin/env bash
# Run the reference's own Python tests (kvcache-ai/Mooncake, mooncake-wheel/tests)
# against OUR installed `mooncake` package, with the servers those tests expect
# (master on 127.0.0.1:50051 with the HTTP metadata server on :8080, the
# standalone real client on :50052), and print a per-file table of test
# methods passed / failed / skipped.
#
#   scripts/reference-tests.sh REF_CHECKOUT [-v] [test_file.py ...]
#
# REF_CHECKOUT is a checkout of the reference repository (or any folder with
# mooncake-wheel/tests). Its tests are copied to a scratch folder outside that
# checkout first, so nothing of the reference's own Python package can be
# imported (its conftest would otherwise add the checkout's `mooncake/` to the
# package path). Nothing is copied into this repository.
#
# Env: PYTHON (default .venv/bin/python, with our wheel, pytest and, for the
# tensor files, CPU torch installed), MOONCAKE_BIN (default target/debug/mooncake),
# REFTEST_TIMEOUT (seconds per file, default 300), REFTEST_NETNS=0 to run in
# this network namespace (default: a private one, so the fixed ports the tests
# need clash with nothing else on the machine), REFTEST_OUT (results folder).
# -v lists every test method with its outcome.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = "--in-netns" ]; then
    shift
    ip link set lo up
elif [ "${REFTEST_NETNS:-1}" != 0 ] && command -v unshare >/dev/null \
    && unshare -rn true 2>/dev/null; then
    exec unshare -rn "$0" --in-netns "$@"
fi

REF=${1:?usage: scripts/reference-tests.sh REF_CHECKOUT [-v] [test_file.py ...]}
shift
VERBOSE=0
if [ "${1:-}" = "-v" ]; then VERBOSE=1; shift; fi
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MOONCAKE_BIN=${MOONCAKE_BIN:-$REPO/target/debug/mooncake}
TIMEOUT=${REFTEST_TIMEOUT:-300}
OUT=${REFTEST_OUT:-$(mktemp -d /tmp/reftests.XXXXXX)}
mkdir -p "$OUT"

[ -d "$REF/mooncake-wheel/tests" ] || { echo "no mooncake-wheel/tests under $REF" >&2; exit 2; }
[ -x "$MOONCAKE_BIN" ] || { echo "no mooncake binary at $MOONCAKE_BIN (cargo build -p mooncake-cli)" >&2; exit 2; }
"$PYTHON" -c 'import mooncake, pytest' || { echo "$PYTHON lacks mooncake or pytest" >&2; exit 2; }

WORK=$(mktemp -d /tmp/reftests-src.XXXXXX)
cp -r "$REF/mooncake-wheel/tests" "$WORK/tests"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # port: bounded wait until something listens there
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on :$1" >&2
    return 1
}

"$MOONCAKE_BIN" master --rpc_port=50051 --enable_http_metadata_server=true \
    --http_metadata_server_port=8080 --default_kv_lease_ttl=500 >"$OUT/master.log" 2>&1 &
PIDS+=($!)
wait_port 50051
wait_port 8080
# The standalone real client runs only around the dummy-client files, as in the
# reference's CI (its segment would otherwise hold other files' objects).
REAL_CLIENT=""
start_real_client() {
    "$MOONCAKE_BIN" real-client --port 50052 --master_server_address 127.0.0.1:50051 \
        --metadata_server http://127.0.0.1:8080/metadata >>"$OUT/real-client.log" 2>&1 &
    REAL_CLIENT=$!
    PIDS+=($REAL_CLIENT)
    wait_port 50052
}
stop_real_client() {
    kill "$REAL_CLIENT" 2>/dev/null || true
    wait "$REAL_CLIENT" 2>/dev/null || true
}

# The wheel's console commands (mooncake_master, ...) run our binary.
export PATH="$(dirname "$PYTHON"):$PATH" MOONCAKE_BIN
export MC_METADATA_SERVER=http://127.0.0.1:8080/metadata
export MASTER_SERVER=127.0.0.1:50051 PROTOCOL=tcp LOCAL_HOSTNAME=localhost
export DEFAULT_KV_LEASE_TTL=500 MC_FORCE_TCP=true

cd "$WORK/tests"
if [ $# -gt 0 ]; then FILES=("$@"); else
    FILES=($(ls test_*.py transfer_engine_initiator_test.py 2>/dev/null))
fi

# pytest on one file with a given argv (some files parse sys.argv at import).
run_pytest() { # name file [argv...]
    local name=$1 file=$2; shift 2
    timeout -k 10 "$TIMEOUT" "$PYTHON" - "$OUT/$name.xml" "$file" "$@" >"$OUT/$name.log" 2>&1 <<'EOF' || true
import sys
import pytest
xml, file, *argv = sys.argv[1:]
sys.argv = [file] + argv
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--junitxml", xml, file]))
EOF
}

for f in "${FILES[@]}"; do
    name=${f%.py}
    case "$f" in
    transfer_engine_initiator_test.py)
        "$PYTHON" transfer_engine_target.py >"$OUT/transfer_engine_target.log" 2>&1 &
        tpid=$!
        sleep 2
        run_pytest "$name" "$f"
        kill "$tpid" 2>/dev/null || true
        wait "$tpid" 2>/dev/null || true
        ;;
    test_multi_dummy_clients.py)
        start_real_client
        run_pytest "${name}.client1" "$f" --client-id client1 &
        p1=$!
        run_pytest "${name}.client2" "$f" --client-id client2
        wait "$p1" || true
        stop_real_client
        ;;
    test_dummy_client.py)
        start_real_client
        run_pytest "$name" "$f"
        stop_real_client
        ;;
    *) run_pytest "$name" "$f" ;;
    esac
    echo "ran $f" >&2
done

"$PYTHON" - "$OUT" "$VERBOSE" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET
out, verbose = sys.argv[1], sys.argv[2] == "1"
rows, tot = [], [0, 0, 0]
for xml in sorted(glob.glob(os.path.join(out, "*.xml"))):
    name = os.path.basename(xml)[:-4]
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        rows.append((name, 0, 0, 0, "no result (timeout?)"))
        continue
    p = f = s = 0
    lines = []
    for case in root.iter("testcase"):
        kinds = {c.tag for c in case}
        if "skipped" in kinds:
            s += 1; st = "skip"
        elif kinds & {"failure", "error"}:
            f += 1; st = "FAIL"
        else:
            p += 1; st = "pass"
        lines.append(f"    {st}  {case.get('classname', '')}::{case.get('name')}")
    note = ""
    if p + f + s == 0:
        errs = [c for c in root.iter("error")]
        note = "collection error" if errs else "no tests"
    rows.append((name, p, f, s, note))
    tot[0] += p; tot[1] += f; tot[2] += s
    if verbose:
        print(name); print("\n".join(lines))
print(f"{'file':<48} {'pass':>5} {'fail':>5} {'skip':>5}  note")
for name, p, f, s, note in rows:
    print(f"{name:<48} {p:>5} {f:>5} {s:>5}  {note}")
print(f"{'TOTAL':<48} {tot[0]:>5} {tot[1]:>5} {tot[2]:>5}")
print(f"logs and junit files: {out}")
EOF
