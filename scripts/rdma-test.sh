#!/usr/bin/env bash
# The rdma transport against Soft-RoCE: builds the rdma test binary (and, with
# --bench, a release `mooncake` with the feature) on this host and runs it in
# the rxe VM (../shared/tools/rxe-vm/run.sh, or $RXE_VM_RUN):
#   1. one VM:  loopback both ways byte for byte, out-of-range refusals,
#               peer killed mid-batch and restarted;
#   2. two VMs (--nodes 2): node 1 writes/reads node 0's buffer over the link;
#      then the store: master + storage node on node 0, `mooncake client
#      --protocol rdma` put/get (byte-compared) on node 1.
#   --bench:    one VM: `mooncake bench transfer --protocol rdma` vs
#               ib_write_bw / ib_read_bw at 64 KiB and 1 MiB, same VM run.
# Usage: scripts/rdma-test.sh [--bench] [--no-two-nodes]   (as root: QEMU)
# Cost: ~60-90 s per VM run with a cached image; the first run builds the
# image (1-5 min, cached in /var/tmp/rxe-vm).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
run_vm=${RXE_VM_RUN:-}
if [ -z "$run_vm" ]; then
    for d in "$root/../shared" "$root/../../shared"; do
        [ -x "$d/tools/rxe-vm/run.sh" ] && { run_vm=$d/tools/rxe-vm/run.sh; break; }
    done
fi
bench=0
two=1
for a in "$@"; do
    case $a in
        --bench) bench=1 ;;
        --no-two-nodes) two=0 ;;
        *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
[ -n "$run_vm" ] && [ -x "$run_vm" ] || { echo "rxe VM tool (shared/tools/rxe-vm/run.sh) not found; set RXE_VM_RUN" >&2; exit 2; }
log() { printf '\n== %s ==\n' "$*"; }

log "build the rdma test binary"
bin=$(cargo test -p mooncake-transfer --features rdma --test rdma --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="rdma" and m.get("executable"): print(m["executable"])' | tail -1)
[ -n "$bin" ] || { echo "could not build the rdma test binary" >&2; exit 1; }
bin=$(realpath --relative-to="$root" "$bin")

log "one VM: loopback, refusals, peer killed and restarted"
"$run_vm" --share "$root" --timeout 600 -- "./$bin" --test-threads=1

if [ $two = 1 ]; then
    log "two VMs: node 1 against node 0"
    job=$(mktemp -d "$root/target/rdma-two-nodes.XXXXXX")
    done_file="$job/done"
    "$run_vm" --nodes 2 --cpus 1 --share "$root" --timeout 600 \
        --env MC_RDMA_TEST_DONE_FILE="$done_file" -- bash -c '
        if [ "$RXE_NODE" = 0 ]; then
            MC_RDMA_TEST_PEER=$RXE_IP:17777 MC_RDMA_TEST_PEER_LEN=$((64<<20)) \
                ./'"$bin"' --exact rdma_peer_process --ignored --nocapture
        else
            ./'"$bin"' --exact two_nodes --nocapture
        fi'
    rm -rf "$job"
fi

if [ $two = 1 ]; then
    log "build mooncake with --features rdma"
    cargo build -p mooncake-cli --features rdma
    # The store over rdma between two VMs: node 0 runs the master (with its
    # HTTP metadata server) and a storage node; node 1 puts and gets 3 MiB+
    # values with the `mooncake client` (its own engine, no segment), byte-checked.
    log "two VMs: store put/get over protocol=rdma"
    job=$(mktemp -d "$root/target/rdma-store.XXXXXX")
    head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom > "$job/value"
    "$run_vm" --nodes 2 --cpus 1 --share "$root" --timeout 600 --env JOB="$job" -- bash -c '
        mc=./target/debug/mooncake
        if [ "$RXE_NODE" = 0 ]; then
            $mc master --rpc_address $RXE_IP --rpc_port 50051 --enable_http_metadata_server=true \
                --http_metadata_server_host $RXE_IP --http_metadata_server_port 8080 & m=$!
            sleep 3
            $mc store-node --master $RXE_IP:50051 --metadata http://$RXE_IP:8080/metadata \
                --local-hostname $RXE_IP --protocol rdma --segment-size 64MiB & s=$!
            for i in $(seq 1 600); do [ -e $JOB/done ] && break; sleep 0.5; done
            kill $s $m; wait
        else
            c="$mc client --master $RXE_PEER_IP:50051 --metadata http://$RXE_PEER_IP:8080/metadata --local-hostname $RXE_IP --protocol rdma"
            rc=1
            for i in $(seq 1 30); do $c put k1 $JOB/value && { rc=0; break; }; sleep 1; done
            [ $rc = 0 ] && $c get k1 -o /tmp/got && cmp $JOB/value /tmp/got && echo "store put/get over rdma: bytes equal"
            rc=$?
            touch $JOB/done
            exit $rc
        fi'
    rm -rf "$job"
fi

if [ $bench = 1 ]; then
    # Debug profile by default (dependencies are built with opt-level 2; a release
    # build of the whole CLI takes long on small machines): MOONCAKE_PROFILE=release.
    profile=${MOONCAKE_PROFILE:-debug}
    log "bench: mooncake ($profile, --features rdma) vs perftest, one VM"
    if [ "$profile" = release ]; then
        cargo build --release -p mooncake-cli --features rdma
    else
        cargo build -p mooncake-cli --features rdma
    fi
    "$run_vm" --share "$root" --timeout 900 -- bash -c '
        mc=./target/'"$profile"'/mooncake
        for size in 64KiB 1MiB; do
            for op in write read; do
                printf "mooncake %s %s: " $op $size
                $mc bench transfer --protocol rdma --op $op --block-size $size --batch-size 128 \
                    --duration 5s --json --local-hostname $RXE_IP
            done
        done
        # perftest keeps 128 messages in flight (its default tx depth), as the
        # 128-request batches above; 1 MiB by iterations (-D 5 may end before
        # the first 128 MiB window completes on Soft-RoCE).
        for spec in "65536 -D 5" "1048576 -n 60"; do
            set -- $spec
            for tool in ib_write_bw ib_read_bw; do
                echo "$tool $1:"
                $tool -d rxe0 -s $1 $2 $3 -F >/dev/null 2>&1 & srv=$!
                sleep 2
                $tool -d rxe0 -s $1 $2 $3 -F $RXE_IP | grep -A1 "#bytes"
                wait $srv
            done
        done'
fi
log "rdma tests passed"
