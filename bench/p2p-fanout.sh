#!/usr/bin/env bash
# P2P Store fan-out benchmark: one seeder and N = 1, 2, 4, 8 readers, each a
# host in its own network namespace (veth to a bridge), every host's link
# shaped with tc to the same rate in both directions. For each N it measures
# the time until every reader has the object
#   - naive: all readers fetch from the seeder only (`--origin-only`);
#   - p2p:   readers also fetch from each other (the default);
# and the share of delivered bytes the seeder's uplink carried (from the
# readers' reports, cross-checked with the seeder's veth tx counter).
#
#   sudo bench/p2p-fanout.sh [--size 256MiB] [--rate 1gbit] [--shard 4MiB]
#                            [--readers "1 2 4 8"] [--bin target/release/mooncake]
#
# Needs root (ip netns, tc), etcd and python3. Builds nothing: pass --bin or
# build `cargo build --release -p mooncake-cli` first. Everything it creates
# (namespaces, bridge, processes, temp files) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=256MiB RATE=1gbit SHARD=4MiB READERS="1 2 4 8" BIN=target/release/mooncake
while (($#)); do
    case $1 in
    --size) SIZE=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --shard) SHARD=$2; shift 2 ;;
    --readers) READERS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
BIN=$(realpath "$BIN")
[ -x "$BIN" ] || { echo "no mooncake binary at $BIN (cargo build --release -p mooncake-cli)" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not installed" >&2; exit 2; }

MAXN=0
for n in $READERS; do ((n > MAXN)) && MAXN=$n; done
TAG=$$
NET=10.201.$((TAG % 250))
BR=p2pbr$TAG
WORK=$(mktemp -d /tmp/p2p-fanout.XXXXXX)
PIDS=()
NSES=()

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    for i in $(seq 0 "$MAXN"); do ip link del "pv$TAG-$i" 2>/dev/null; done
    for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    ip link del "$BR" 2>/dev/null
    if [ -n "${P2P_BENCH_KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

if ! ip netns add "p2pprobe$TAG" 2>/dev/null; then
    echo "SKIP: cannot create network namespaces here (needs root and CAP_SYS_ADMIN)" >&2
    exit 0
fi
ip netns del "p2pprobe$TAG"

# ---- topology: bridge in the root namespace, host i = namespace p2p$TAG-i ----
ip link add "$BR" type bridge
ip addr add "$NET.1/24" dev "$BR"
ip link set "$BR" up
for i in $(seq 0 "$MAXN"); do
    ns=p2p$TAG-$i
    ip netns add "$ns"
    NSES+=("$ns")
    ip link add "pv$TAG-$i" type veth peer name "pp$TAG-$i"
    ip link set "pp$TAG-$i" netns "$ns"
    ip -n "$ns" link set "pp$TAG-$i" name eth0
    ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip link set "pv$TAG-$i" master "$BR" up
    # Upload: the host's egress; download: the bridge port's egress to it.
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 1mb latency 50ms
    tc qdisc add dev "pv$TAG-$i" root tbf rate "$RATE" burst 1mb latency 50ms
done

# ---- metadata: etcd on the bridge address --------------------------------------
EPORT=$((20000 + TAG % 20000))
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://$NET.1:$EPORT" \
    --advertise-client-urls "http://$NET.1:$EPORT" \
    --listen-peer-urls "http://127.0.0.1:$((EPORT + 1))" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
META=etcd://$NET.1:$EPORT
for _ in $(seq 100); do
    curl -s "http://$NET.1:$EPORT/health" 2>/dev/null | grep -q true && break
    sleep 0.1
done

# ---- the object: one file, served from host 0 ---------------------------------
python3 - "$WORK/object.bin" "$SIZE" <<'EOF'
import os, sys
units = {"": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
s = sys.argv[2].lower()
num = int("".join(c for c in s if c.isdigit()))
n = num * units[s[len(str(num)):]]
with open(sys.argv[1], "wb") as f:
    left = n
    while left:
        k = min(left, 64 << 20)
        f.write(os.urandom(k))
        left -= k
EOF
# `ip netns exec` execs the command, so $! is the process itself.
in_ns() { local i=$1; shift; ip netns exec "p2p$TAG-$i" "$@"; }
ip netns exec "p2p$TAG-0" "$BIN" p2p serve "$WORK/object.bin" --name bench --shard-size "$SHARD" \
    --metadata "$META" --local-hostname "$NET.10" >"$WORK/seed.out" 2>"$WORK/seed.err" &
PIDS+=($!)
for _ in $(seq 600); do [ -s "$WORK/seed.out" ] && break; sleep 0.1; done
[ -s "$WORK/seed.out" ] || { cat "$WORK/seed.err" >&2; exit 1; }
SEED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["segment"])' "$WORK/seed.out")

seed_tx() { in_ns 0 cat /sys/class/net/eth0/statistics/tx_bytes; }

# run MODE N: N readers at once; one JSON report per reader in $WORK/MODE-N/
run() {
    local mode=$1 n=$2 dir=$WORK/$1-$2 flags=()
    [ "$mode" = naive ] && flags=(--origin-only)
    mkdir -p "$dir"
    local tx0 pids=() i
    tx0=$(seed_tx)
    for i in $(seq 1 "$n"); do
        ip netns exec "p2p$TAG-$i" "$BIN" p2p get bench -o "$dir/out$i" --quiet --no-write "${flags[@]}" \
            --metadata "$META" --local-hostname "$NET.$((10 + i))" --stall-timeout 60s \
            >"$dir/r$i.json" 2>"$dir/r$i.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || { echo "reader failed:" >&2; cat "$dir"/r*.err >&2; exit 1; }
    done
    echo $(($(seed_tx) - tx0)) >"$dir/seed_tx"
}

echo "object $SIZE in shards of $SHARD; every link $RATE each way; readers: $READERS" >&2
for n in $READERS; do
    for mode in naive p2p; do
        run "$mode" "$n"
        echo "  $mode N=$n done" >&2
    done
done

python3 - "$WORK" "$SEED" "$READERS" "$SIZE" "$RATE" <<'EOF'
import json, sys, os
work, seed, readers, size, rate = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4], sys.argv[5]
def load(mode, n):
    d = f"{work}/{mode}-{n}"
    reps = [json.load(open(f"{d}/r{i}.json")) for i in range(1, int(n) + 1)]
    total = max(r["secs"] for r in reps)
    delivered = sum(r["bytes"] for r in reps)
    from_seed = sum(r["sources"].get(seed, 0) for r in reps)
    tx = int(open(f"{d}/seed_tx").read())
    return total, from_seed / delivered, tx / delivered
base = {}
print(f"| N | naive (s) | p2p (s) | p2p / naive | p2p vs N=1 p2p | seeder share p2p (reports) | seeder share p2p (veth tx) |")
print("|---|---|---|---|---|---|---|")
for n in readers:
    nt, _, _ = load("naive", n)
    pt, share, txshare = load("p2p", n)
    base.setdefault("p2p", pt)
    print(f"| {n} | {nt:.2f} | {pt:.2f} | {pt / nt:.2f} | {pt / base['p2p']:.2f}x | {share:.0%} | {txshare:.0%} |")
print(f"\nobject {size}, links {rate} each way; time = slowest reader's fetch (process start excluded)")
EOF
