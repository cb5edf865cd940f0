#!/usr/bin/env bash
# Mooncake Store against the C++ reference, IN THE SAME RUN on this machine (loopback):
#   reference: mooncake_master (embedded HTTP metadata) + a Python holder process mounting
#              3 GiB + a Python MooncakeDistributedStore with segment 0 timing put / get /
#              is_exist over tcp, DURATION s per figure (as the reference measurement);
#              and CLIENTS8 processes doing is_exist together (master ops/s).
#   ours:      `mooncake bench store` against its own `mooncake up` child (3 GiB segment),
#              --transport tcp (same-host shm off, like the reference run), then 8 clients
#              doing is_exist, then gets through same-host shared memory.
# Prints the table of ratios and writes bench/out/store.json.
#
# Usage: bench/compare-store.sh        Env: DURATION=2 SIZES=4096,65536,1048576,4194304
#        SKIP_BUILD=1 (use the existing target/release/mooncake)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
VENV=$ROOT/bench/.venv-ref
DURATION=${DURATION:-2}
SIZES=${SIZES:-4096,65536,1048576,4194304}
CLIENTS8=${CLIENTS8:-8}
SEGMENT=$((3 << 30))
WORK=$(mktemp -d)
mkdir -p "$OUT"

# shellcheck source=bench/procs.sh
source "$ROOT/bench/procs.sh"
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
wait_line() { for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1:" >&2; cat "$1" >&2; return 1; }
log() { echo "[compare-store] $*" >&2; }

# ---- the reference
if [ ! -x "$VENV/bin/mooncake_master" ]; then
  log "installing the reference into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q mooncake-transfer-engine-non-cuda
fi
PY=$VENV/bin/python

# ---- ours
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building mooncake (release)"
  (cd "$ROOT" && cargo build --release -p mooncake-cli --quiet)
fi
MC=$ROOT/target/release/mooncake

# ---- reference run
RPC=$(free_port); HTTP=$(free_port); MET=$(free_port)
log "reference: mooncake_master on $RPC, metadata on $HTTP"
bg "$WORK/ref-master.log" "$VENV/bin/mooncake_master" --rpc_port="$RPC" --enable_http_metadata_server=true \
  --http_metadata_server_port="$HTTP" --http_metadata_server_host=127.0.0.1 --metrics_port="$MET"
wait_port "$RPC"; wait_port "$HTTP"
REF_MASTER=127.0.0.1:$RPC
REF_META=http://127.0.0.1:$HTTP/metadata
bg "$WORK/ref-holder.log" "$PY" "$ROOT/bench/ref_store_bench.py" hold "$REF_MASTER" "$REF_META" "$SEGMENT"
wait_line "$WORK/ref-holder.log" READY
log "reference: put/get/is_exist, 1 client, ${DURATION}s per figure"
"$PY" "$ROOT/bench/ref_store_bench.py" run "$REF_MASTER" "$REF_META" "$SIZES" "$DURATION" > "$WORK/ref.json"
log "reference: is_exist with $CLIENTS8 client processes"
"$PY" "$ROOT/bench/ref_store_bench.py" exist "$REF_MASTER" "$REF_META" "$CLIENTS8" "$DURATION" > "$WORK/ref8.json"
REF_RSS=$(ps -o rss= -p "$(pgrep -n -f "mooncake_master --rpc_port=$RPC" || echo 1)" 2>/dev/null || echo 0)
stop_all

# ---- our run (bench starts its own `mooncake up` holder child)
log "ours: put/get/exist over tcp, 1 client"
"$MC" bench store --value-size "$SIZES" --clients 1 --duration "${DURATION}s" --transport tcp \
  --segment-size "$SEGMENT" --json > "$WORK/ours.json"
log "ours: is_exist with $CLIENTS8 clients"
"$MC" bench store --value-size 4096 --ops exist --clients "$CLIENTS8" --duration "${DURATION}s" \
  --segment-size $((256 << 20)) --json > "$WORK/ours8.json"
log "ours: same-host get through shared memory (get, then zero-copy get_into)"
"$MC" bench store --value-size 1048576,4194304 --ops get --clients 1 --duration "${DURATION}s" \
  --transport auto --segment-size $((1 << 30)) --json > "$WORK/ours-shm-copy.json"
"$MC" bench store --value-size 1048576,4194304 --ops get --clients 1 --duration "${DURATION}s" \
  --transport auto --zero-copy --segment-size $((1 << 30)) --json > "$WORK/ours-shm-zc.json"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])) + json.load(open(sys.argv[2]))))' \
  "$WORK/ours-shm-copy.json" "$WORK/ours-shm-zc.json" > "$WORK/ours-shm.json"

python3 - "$WORK" "$OUT/store.json" "$REF_RSS" <<'PYEOF'
import json, sys
work, out, ref_rss = sys.argv[1], sys.argv[2], sys.argv[3]
load = lambda n: json.load(open(f"{work}/{n}.json"))
ref, ours, ref8, ours8, shm = load("ref"), load("ours"), load("ref8"), load("ours8"), load("ours-shm")
key = lambda r: (r["op"], r["value_size"])
R = {key(r): r for r in ref}
def human(n):
    for u, s in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= u and n % u == 0:
            return f"{n // u} {s}"
    return f"{n} B"
print(f"{'op':<6} {'value':>7} | {'ref ops/s':>9} {'ours ops/s':>10} {'ratio':>6} | {'ref GB/s':>8} {'ours GB/s':>9} | {'ref p50/p99 µs':>16} {'ours p50/p99 µs':>16}")
rows = []
for o in ours:
    r = R.get(key(o))
    if not r:
        continue
    ratio = o["ops_per_s"] / r["ops_per_s"] if r["ops_per_s"] else float("nan")
    rows.append({"op": o["op"], "value_size": o["value_size"], "ref": r, "ours": o, "ratio_ops": ratio,
                 "ratio_p50": o["latency_p50_us"] / r["latency_p50_us"] if r["latency_p50_us"] else None,
                 "ratio_p99": o["latency_p99_us"] / r["latency_p99_us"] if r["latency_p99_us"] else None})
    print(f"{o['op']:<6} {human(o['value_size']):>7} | {r['ops_per_s']:>9.0f} {o['ops_per_s']:>10.0f} {ratio:>5.2f}x | "
          f"{r['throughput_gbps']:>8.3f} {o['throughput_gbps']:>9.3f} | "
          f"{r['latency_p50_us']:>7.0f} /{r['latency_p99_us']:>7.0f} {o['latency_p50_us']:>7.0f} /{o['latency_p99_us']:>7.0f}")
r8, o8 = ref8[0], ours8[0]
print(f"\nis_exist, {o8['clients']} clients: ref {r8['ops_per_s']:.0f} ops/s, ours {o8['ops_per_s']:.0f} ops/s "
      f"-> {o8['ops_per_s'] / r8['ops_per_s']:.2f}x (target >= 2x)")
for s in shm:
    api = "get_into (zero-copy)" if s.get("zero_copy") else "get"
    print(f"same-host shm {api} {human(s['value_size'])}: {s['throughput_gbps']:.2f} GB/s (target >= 4 GB/s), "
          f"p50 {s['latency_p50_us']:.0f} µs")
print("\ntargets: put >= 4x at 1 MiB & 4 MiB; get >= 1.5x; is_exist p50 and p99 <= 0.5x the reference")
for r in rows:
    if r["op"] == "put" and r["value_size"] >= 1 << 20:
        print(f"  put {human(r['value_size'])}: {r['ratio_ops']:.2f}x")
    if r["op"] == "get":
        print(f"  get {human(r['value_size'])}: {r['ratio_ops']:.2f}x")
    if r["op"] == "exist":
        print(f"  is_exist ({human(r['value_size'])} keys): p50 {r['ratio_p50']:.2f}x, p99 {r['ratio_p99']:.2f}x")
print(f"reference master RSS after the run: {int(ref_rss or 0) / 1024:.0f} MiB")
json.dump({"rows": rows, "exist8": {"ref": r8, "ours": o8}, "shm": shm}, open(out, "w"), indent=1)
PYEOF
