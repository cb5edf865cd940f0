#!/usr/bin/env bash
# Transfer Engine benchmarks against the C++ reference and the machine's limits, all
# measured IN THE SAME RUN on this machine (loopback only):
#   memcpy (our bench's memcpy mode), iperf3 loopback (1 and 2 streams), the
#   reference's transfer_engine_bench --protocol=tcp and ours over
#   block 64KiB/1MiB/4MiB x threads 1/2 (write; read at 1MiB), ours over shm (vs
#   memcpy) and over file (vs fio direct I/O on the same file).
# Writes bench/out/transfer.json, bench/out/transfer.md and prints the table.
#
# Usage: bench/compare-reference.sh            (about 3-4 minutes)
# Env:   DURATION=4 (seconds per point)  BATCH=16 (requests per batch, as the
#        reference measurements)  OURS_MODE=split|both (two processes, as the
#        reference, or target and initiator in one process)  SKIP_BUILD=1
#        MC=path/to/mooncake (default: target/release/mooncake, built here)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
VENV=$ROOT/bench/.venv-ref
DURATION=${DURATION:-4}
BATCH=${BATCH:-16}
OURS_MODE=${OURS_MODE:-split}
WORK=$(mktemp -d /var/tmp/mooncake-bench.XXXXXX)   # a real disk: /tmp may be tmpfs (no O_DIRECT)
RAW=$OUT/raw.jsonl
mkdir -p "$OUT"
: > "$RAW"

# shellcheck source=bench/procs.sh
source "$ROOT/bench/procs.sh"
stop_last() { # kill the most recent background job's process group
  local p=${PIDS[-1]}
  kill -TERM -- "-$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset 'PIDS[-1]'
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# Waits for a listener without connecting to it (iperf3 would take a probe for a client).
wait_port() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
log() { echo "[bench] $*" >&2; }
record() { echo "$1" >> "$RAW"; }   # one JSON object per line

# ---- dependencies
missing=()
for pkg in libibverbs1 librdmacm1 libnuma1 iperf3 fio; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >&2
fi
if [[ ! -x $VENV/bin/transfer_engine_bench ]]; then
  log "installing the reference (mooncake-transfer-engine-non-cuda) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q mooncake-transfer-engine-non-cuda
fi
REF_BENCH=$VENV/bin/transfer_engine_bench
REF_META=$VENV/bin/mooncake_http_metadata_server

if [[ -z ${SKIP_BUILD:-} ]]; then
  log "building ours (release)"
  (cd "$ROOT" && cargo build --release -q -p mooncake-cli)
fi
MC=${MC:-$ROOT/target/release/mooncake}
ours() { "$MC" bench transfer --json --duration "${DURATION}s" "$@" 2>>"$WORK/ours.err" | tail -n1; }

# ---- machine limits
for t in 1 2; do
  j=$(ours --protocol memcpy --block-size 1MiB --batch-size "$BATCH" --threads "$t")
  record "{\"kind\":\"memcpy\",\"who\":\"machine\",\"block\":1048576,\"threads\":$t,\"op\":\"copy\",\"result\":$j}"
  log "memcpy threads=$t: $j"
done

IPORT=$(free_port)
bg "$WORK/iperf-server.log" iperf3 -s -p "$IPORT"
wait_port "$IPORT"
for streams in 1 2; do
  g=$(iperf3 -c 127.0.0.1 -p "$IPORT" -t "$DURATION" -P "$streams" -J \
      | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["end"]["sum_received"]["bits_per_second"]/8e9)')
  record "{\"kind\":\"iperf3\",\"who\":\"machine\",\"streams\":$streams,\"gbps\":$g}"
  log "iperf3 streams=$streams: $g GB/s"
done
stop_last

# ---- tcp: the reference and ours, same block size, batch size, threads. Both targets stay
# up and each point runs the reference and ours back to back, so both see the same load
# (this machine is shared and noisy); iperf3 runs at the start and again at the end.
MATRIX=("65536 1 write" "65536 2 write" "1048576 1 write" "1048576 2 write"
        "4194304 1 write" "4194304 2 write" "1048576 1 read" "1048576 2 read")
REF_BUF=$((1 << 30))
MPORT=$(free_port); RPORT=$(free_port)
bg "$WORK/ref-meta.log" "$REF_META" --port "$MPORT"
wait_port "$MPORT"
REF_MD=http://127.0.0.1:$MPORT/metadata
bg "$WORK/ref-target.log" "$REF_BENCH" --mode=target --protocol=tcp --metadata_server="$REF_MD" \
   --local_server_name="127.0.0.1:$RPORT" --buffer_size=$REF_BUF
OURS_BUF=256MiB
if [[ $OURS_MODE == split ]]; then
  OPORT=$(free_port); TPORT=$(free_port)
  bg "$WORK/ours-meta.log" "$MC" metadata-server --port "$OPORT"
  wait_port "$OPORT"
  OURS_MD=http://127.0.0.1:$OPORT/metadata
  bg "$WORK/ours-target.log" "$MC" bench transfer --mode target --protocol tcp --metadata "$OURS_MD" \
     --local-hostname "127.0.0.1:$TPORT" --buffer-size "$OURS_BUF"
  wait_port "$TPORT"
fi
sleep 2   # the reference target publishes its segment asynchronously; it has no readiness signal
for point in "${MATRIX[@]}"; do
  read -r block threads op <<<"$point"
  IPORT2=$(free_port)
  out=$("$REF_BENCH" --mode=initiator --protocol=tcp --metadata_server="$REF_MD" \
        --local_server_name="127.0.0.1:$IPORT2" --segment_id="127.0.0.1:$RPORT" --operation="$op" \
        --block_size="$block" --batch_size="$BATCH" --threads="$threads" --duration="$DURATION" \
        --buffer_size=$REF_BUF 2>&1 || true)
  g=$(sed -n 's/.*throughput \([0-9.]*\) GB\/s.*/\1/p' <<<"$out" | tail -n1)
  record "{\"kind\":\"tcp\",\"who\":\"reference\",\"block\":$block,\"threads\":$threads,\"op\":\"$op\",\"gbps\":${g:-null}}"
  log "reference tcp $op block=$block threads=$threads: ${g:-FAILED} GB/s"
  if [[ $OURS_MODE == split ]]; then
    j=$(ours --mode initiator --protocol tcp --metadata "$OURS_MD" --segment-id "127.0.0.1:$TPORT" \
        --op "$op" --block-size "$block" --batch-size "$BATCH" --threads "$threads" --buffer-size "$OURS_BUF" || true)
  else
    j=$(ours --protocol tcp --op "$op" --block-size "$block" --batch-size "$BATCH" --threads "$threads" || true)
  fi
  record "{\"kind\":\"tcp\",\"who\":\"ours\",\"block\":$block,\"threads\":$threads,\"op\":\"$op\",\"result\":${j:-null}}"
  log "ours tcp $op block=$block threads=$threads: $j"
done
if [[ $OURS_MODE == split ]]; then stop_last; stop_last; fi
stop_last; stop_last

# iperf3 again: the table uses the better of the two runs per stream count
IPORT=$(free_port)
bg "$WORK/iperf-server2.log" iperf3 -s -p "$IPORT"
wait_port "$IPORT"
for streams in 1 2; do
  g=$(iperf3 -c 127.0.0.1 -p "$IPORT" -t "$DURATION" -P "$streams" -J \
      | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["end"]["sum_received"]["bits_per_second"]/8e9)')
  record "{\"kind\":\"iperf3\",\"who\":\"machine\",\"streams\":$streams,\"gbps\":$g}"
  log "iperf3 streams=$streams (second run): $g GB/s"
done
stop_last

# ---- shm (ours, one process: two engines, the target's managed buffer mapped) vs memcpy
for point in "1048576 1" "1048576 2" "4194304 1"; do
  read -r block threads <<<"$point"
  j=$(ours --protocol shm --op write --block-size "$block" --batch-size "$BATCH" --threads "$threads" || true)
  record "{\"kind\":\"shm\",\"who\":\"ours\",\"block\":$block,\"threads\":$threads,\"op\":\"write\",\"result\":${j:-null}}"
  m=$(ours --protocol memcpy --block-size "$block" --batch-size "$BATCH" --threads "$threads")
  record "{\"kind\":\"memcpy\",\"who\":\"machine\",\"block\":$block,\"threads\":$threads,\"op\":\"copy\",\"result\":$m}"
  log "ours shm block=$block threads=$threads: $j (memcpy $m)"
done

# ---- file (ours, io_uring + O_DIRECT) vs fio direct I/O on the same file, with as many
# requests in flight as ours at most has (batch x threads)
FILE=$WORK/file-segment.dat
FILE_LEN=$((1 << 30))
for point in "write 1" "read 1" "read 2"; do
  read -r op threads <<<"$point"
  j=$(ours --protocol file --op "$op" --file "$FILE" --buffer-size "$FILE_LEN" --block-size 1MiB \
      --batch-size "$BATCH" --threads "$threads" || true)
  record "{\"kind\":\"file\",\"who\":\"ours\",\"block\":1048576,\"threads\":$threads,\"op\":\"$op\",\"result\":${j:-null}}"
  g=$(fio --name=direct --filename="$FILE" --rw="$op" --bs=1M --direct=1 --ioengine=io_uring \
        --iodepth=$((BATCH * threads)) --size="$FILE_LEN" --runtime="$DURATION" --time_based --output-format=json 2>/dev/null \
      | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['jobs'][0]['$op']['bw_bytes']/1e9)" || echo null)
  record "{\"kind\":\"fio\",\"who\":\"machine\",\"block\":1048576,\"threads\":$threads,\"op\":\"$op\",\"iodepth\":$((BATCH * threads)),\"gbps\":$g}"
  log "ours file $op threads=$threads: $j (fio direct iodepth $((BATCH * threads)): $g GB/s)"
done

python3 "$ROOT/bench/summarise.py" "$RAW" "$OUT/transfer.json" "$OUT/transfer.md" \
  --command "bench/compare-reference.sh (DURATION=$DURATION BATCH=$BATCH OURS_MODE=$OURS_MODE)"
cat "$OUT/transfer.md"
