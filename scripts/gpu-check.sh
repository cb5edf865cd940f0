#!/usr/bin/env bash
# GPU checks of issue 15 (GPU memory on the data path), as one short run:
#   1. `mooncake info` finds the CUDA driver;
#   2. Rust GPU tests (crates/transfer/tests/gpu.rs): pointer classification,
#      registration rules, tcp staging device<->device with mixed batches,
#      CUDA IPC between two processes; then the same binary under
#      compute-sanitizer when it is installed;
#   3. pytest with torch CUDA tensors (crates/python/tests/test_gpu.py): store
#      put_from/get_into/batches across two processes, mixed host/device
#      batches, put_tensor/get_tensor, TransferEngine *_on_cuda;
#   4. benchmarks: tcp host vs tcp staging (device -> remote device) against
#      the D2H bandwidth, and same-host CUDA IPC against D2D memcpy, all
#      measured in this run.
#
#   scripts/gpu-check.sh            # builds what it needs (cargo, maturin), then runs
#   GPU_ARTIFACTS=dir gpu-check.sh  # prebuilt: dir/mooncake, dir/gpu-tests,
#                                   # dir/mooncake_rs-*.whl, dir/tests/*.py
#
# Without a GPU every step skips cleanly (exit 0). Output: $OUT/gpu-check.log
# (or ./gpu-check.log) plus PASS/FAIL/SKIP lines and a summary at the end.
# Env: BENCH_SECONDS (default 5).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LOG=${OUT:-.}/gpu-check.log
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
SECS=${BENCH_SECONDS:-5}
FAILS=0
SUMMARY=()
pass() { echo "PASS: $*"; SUMMARY+=("PASS: $*"); }
fail() { echo "FAIL: $*"; SUMMARY+=("FAIL: $*"); FAILS=$((FAILS + 1)); }
skip() { echo "SKIP: $*"; SUMMARY+=("SKIP: $*"); }
step() { echo; echo "=== $* ($(date -u +%T))"; }
finish() {
    echo; echo "=== summary"
    printf '%s\n' "${SUMMARY[@]}"
    echo "failures: $FAILS"
    exit $((FAILS > 0))
}

step "environment"
date -u
HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    HAVE_GPU=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>/dev/null \
    || echo "torch not importable"
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)
echo "compute-sanitizer: ${SANITIZER:-absent}"

# ---- artifacts: prebuilt (GPU_ARTIFACTS) or built here -------------------------
if [ -n "${GPU_ARTIFACTS:-}" ]; then
    A=$(cd "$GPU_ARTIFACTS" && pwd)
    MC=$A/mooncake
    GPU_TESTS=$A/gpu-tests
    WHEEL=$(ls "$A"/mooncake_rs-*.whl 2>/dev/null | head -1)
    PYTESTS=$A/tests
else
    cd "$HERE/.."
    step "build (cargo, maturin)"
    cargo build --release -p mooncake-cli || { fail "cargo build"; finish; }
    MC=$PWD/target/release/mooncake
    GPU_TESTS=$(cargo test --release -p mooncake-transfer --test gpu --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -1)
    WHEEL=
    if command -v maturin >/dev/null 2>&1; then
        rm -rf target/gpu-wheel
        maturin build --release --strip -m crates/python/Cargo.toml -o target/gpu-wheel -q && WHEEL=$(ls target/gpu-wheel/*.whl | head -1)
    fi
    PYTESTS=$PWD/crates/python/tests
fi
for f in "$MC" "$GPU_TESTS"; do
    [ -x "$f" ] || { fail "missing artifact $f"; finish; }
done

# ---- 1. mooncake info ---------------------------------------------------------
step "mooncake info"
INFO=$("$MC" info --json)
echo "$INFO"
if [ $HAVE_GPU = 1 ]; then
    echo "$INFO" | grep -q '"cuda":true' && pass "mooncake info finds CUDA" || fail "mooncake info does not find CUDA"
else
    echo "$INFO" | grep -q '"cuda":false' && pass "mooncake info: no CUDA here" || fail "mooncake info claims CUDA without a GPU"
fi

# ---- 2. Rust GPU tests --------------------------------------------------------
step "Rust GPU tests"
if timeout 300 "$GPU_TESTS" --nocapture --test-threads=1; then
    [ $HAVE_GPU = 1 ] && pass "Rust GPU tests" || skip "Rust GPU tests (no GPU: they skipped)"
else
    fail "Rust GPU tests"
fi
if [ $HAVE_GPU = 1 ] && [ -n "$SANITIZER" ]; then
    step "compute-sanitizer (memcheck) on the in-process GPU tests"
    # API errors are not reported: classification asks the driver about
    # pageable host pointers on purpose (it answers "invalid value").
    if timeout 300 "$SANITIZER" --tool memcheck --report-api-errors no --error-exitcode 9 "$GPU_TESTS" --test-threads=1 \
        classify_and_registration_rules tcp_staging_device_to_device_and_mixed_batches; then
        pass "compute-sanitizer memcheck clean"
    else
        fail "compute-sanitizer memcheck"
    fi
else
    skip "compute-sanitizer (no GPU or not installed)"
fi

# ---- 3. pytest with torch CUDA tensors ----------------------------------------
step "pytest (torch CUDA tensors)"
if [ -z "${WHEEL:-}" ]; then
    skip "pytest: no wheel (maturin missing)"
elif ! python3 -c 'import torch, pytest' 2>/dev/null; then
    skip "pytest: torch or pytest not importable"
else
    SITE=$(mktemp -d /tmp/mooncake-site.XXXXXX)
    if python3 -m pip install -q --disable-pip-version-check --no-deps --target "$SITE" "$WHEEL"; then
        if (cd "$PYTESTS" && PYTHONPATH="$SITE" MOONCAKE_BIN="$MC" MOONCAKE_LOG=warn \
            timeout 300 python3 -m pytest -q -p no:cacheprovider -rs test_gpu.py); then
            [ $HAVE_GPU = 1 ] && pass "pytest GPU" || skip "pytest GPU (no GPU: skipped)"
        else
            fail "pytest GPU"
        fi
    else
        fail "installing the wheel"
    fi
fi

# ---- 4. benchmarks --------------------------------------------------------------
step "benchmarks"
if [ $HAVE_GPU != 1 ]; then
    skip "benchmarks (no GPU)"
    finish
fi
BJ=$(mktemp -d /tmp/mooncake-bench.XXXXXX)
bench() { # name, args...
    local name=$1; shift
    echo "--- $name: mooncake bench transfer $*"
    if timeout $((SECS + 90)) "$MC" bench transfer --duration "${SECS}s" --json "$@" > "$BJ/$name.json"; then
        cat "$BJ/$name.json"
    else
        fail "bench $name"
        rm -f "$BJ/$name.json"
    fi
}
TCP="--protocol tcp --block-size 1MiB --batch-size 32 --threads 4"
bench tcp_host $TCP --location cpu
bench tcp_cuda $TCP --location cuda:0
# Larger slices: more staging chunks per slice to overlap (same for host).
TCP4="--protocol tcp --block-size 4MiB --batch-size 8 --threads 4"
MC_SLICE_SIZE=$((4 << 20)) bench tcp_host4 $TCP4 --location cpu
MC_SLICE_SIZE=$((4 << 20)) bench tcp_cuda4 $TCP4 --location cuda:0
# Same-host CUDA IPC: a target process serving device memory, an initiator in
# another process; shm routes to IPC. Slices as large as blocks (one
# cuMemcpy per request, as the D2D baseline does).
IPC="--protocol shm --block-size 64MiB --batch-size 4 --threads 1 --location cuda:0 --metadata P2PHANDSHAKE"
MC_SLICE_SIZE=$((64 << 20)) "$MC" bench transfer --mode target $IPC --local-hostname 127.0.0.1 \
    > "$BJ/target.out" 2> "$BJ/target.err" &
TPID=$!
SEG=
for _ in $(seq 1 100); do
    SEG=$(head -1 "$BJ/target.out" 2>/dev/null)
    [ -n "$SEG" ] && break
    kill -0 $TPID 2>/dev/null || break
    sleep 0.2
done
if [ -n "$SEG" ]; then
    MC_SLICE_SIZE=$((64 << 20)) bench ipc --mode initiator $IPC --segment-id "$SEG"
else
    fail "IPC target did not start: $(cat "$BJ/target.err")"
fi
kill $TPID 2>/dev/null; wait $TPID 2>/dev/null

python3 - "$BJ" <<'EOF' && pass "benchmark ratios computed" || fail "benchmark ratios"
import json, os, sys
d = sys.argv[1]
def load(n):
    p = os.path.join(d, n + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
host, dev, ipc = load("tcp_host"), load("tcp_cuda"), load("ipc")
if not (host and dev and ipc):
    sys.exit(1)
c = dev["cuda"]
limit = min(host["throughput_gbps"], c["d2h_gbps"])
print(f"device: {c['device']}")
print(f"D2H {c['d2h_gbps']:.2f} GB/s  H2D {c['h2d_gbps']:.2f} GB/s  D2D {ipc['cuda']['d2d_gbps']:.2f} GB/s")
print(f"1 MiB slices: tcp host {host['throughput_gbps']:.2f} GB/s; tcp staging cuda:0 -> cuda:0 {dev['throughput_gbps']:.2f} GB/s"
      f" = {dev['throughput_gbps'] / limit:.0%} of min(tcp host, D2H) (goal >= 80%)")
h4, d4 = load("tcp_host4"), load("tcp_cuda4")
if h4 and d4:
    l4 = min(h4["throughput_gbps"], d4["cuda"]["d2h_gbps"])
    print(f"4 MiB slices: tcp host {h4['throughput_gbps']:.2f} GB/s; tcp staging cuda:0 -> cuda:0 {d4['throughput_gbps']:.2f} GB/s"
          f" = {d4['throughput_gbps'] / l4:.0%} of min(tcp host, D2H) (goal >= 80%)")
print(f"CUDA IPC cuda:0 -> cuda:0 (two processes) {ipc['throughput_gbps']:.2f} GB/s"
      f" = {ipc['throughput_gbps'] / ipc['cuda']['d2d_gbps']:.0%} of D2D memcpy (goal >= 70%)")
EOF
finish
