#!/usr/bin/env bash
# The cost of the cluster credential, IN ONE RUN on this machine (loopback):
#   transfer engine tcp, write, 64 KiB and 1 MiB blocks (`mooncake bench transfer
#   --mode both`: target and initiator engines in one process, every pooled
#   connection runs the mutual HMAC handshake), and store put/get of 4 KiB and
#   1 MiB values (`mooncake bench store --transport tcp` against its own
#   `mooncake up` child), each with a credential and with `--insecure`.
# Rounds alternate the two modes (ROUNDS times) and the median of each is kept,
# so drift on a busy machine hits both alike. Prints the ratios (secure /
# insecure throughput) and the `uptime` load, and writes bench/out/security-cost.json.
#
# Usage: bench/security-cost.sh      Env: DURATION=3 (seconds per point) ROUNDS=3
#        SKIP_BUILD=1 MC=path/to/mooncake (default: target/release/mooncake, built here)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
MC=${MC:-$ROOT/target/release/mooncake}
mkdir -p "$OUT"
RAW=$OUT/security-cost.raw.jsonl
: > "$RAW"

if [[ -z "${SKIP_BUILD:-}" && "$MC" == "$ROOT/target/release/mooncake" ]]; then
  (cd "$ROOT" && cargo build --release -p mooncake-cli --quiet)
fi
TOKEN="bench-security-cost-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
unset MC_CLUSTER_TOKEN MC_ADMIN_TOKEN MOONCAKE_CLUSTER_TOKEN_FILE
export MOONCAKE_LOG=error
LOAD_BEFORE=$(uptime)

auth_flags() { # secure|insecure
  if [[ $1 == secure ]]; then echo "--cluster-token $TOKEN"; else echo "--insecure"; fi
}

for round in $(seq "$ROUNDS"); do
  for mode in secure insecure; do
    for block in 65536 1048576; do
      # shellcheck disable=SC2046
      "$MC" bench transfer --protocol tcp --mode both --json --duration "${DURATION}s" \
        --block-size "$block" --batch-size 16 $(auth_flags $mode) \
        | tail -1 | python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'bench':'transfer-tcp-write','size':$block,'mode':'$mode','round':$round,'gbps':r['throughput_gbps']}))" >> "$RAW"
    done
    # shellcheck disable=SC2046
    "$MC" bench store --transport tcp --value-size 4KiB,1MiB --ops put,get --segment-size 1GiB \
      --duration "${DURATION}s" --json $(auth_flags $mode) \
      | python3 -c "
import json, sys
for r in json.load(sys.stdin):
    print(json.dumps({'bench': 'store-' + r['op'], 'size': r['value_size'], 'mode': '$mode', 'round': $round,
                      'gbps': r['throughput_gbps'], 'ops_per_s': r['ops_per_s'], 'errors': r['errors']}))" >> "$RAW"
  done
done
LOAD_AFTER=$(uptime)

python3 - "$RAW" "$OUT/security-cost.json" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, statistics, sys
raw, out, before, after = sys.argv[1:5]
rows = [json.loads(l) for l in open(raw)]
keys = sorted({(r['bench'], r['size']) for r in rows})
table = []
for b, s in keys:
    med = {m: statistics.median(r['gbps'] for r in rows if (r['bench'], r['size'], r['mode']) == (b, s, m))
           for m in ('secure', 'insecure')}
    errs = sum(r.get('errors', 0) for r in rows if (r['bench'], r['size']) == (b, s))
    table.append({'bench': b, 'size': s, 'secure_gbps': med['secure'], 'insecure_gbps': med['insecure'],
                  'ratio': med['secure'] / med['insecure'] if med['insecure'] else None, 'errors': errs})
json.dump({'rows': table, 'load_before': before.strip(), 'load_after': after.strip()}, open(out, 'w'), indent=1)
print(f"{'bench':<20} {'size':>8} {'secure GB/s':>12} {'insecure GB/s':>14} {'secure/insecure':>16} {'errors':>7}")
for t in table:
    r = f"{t['ratio']:.3f}" if t['ratio'] else '-'
    print(f"{t['bench']:<20} {t['size']:>8} {t['secure_gbps']:>12.3f} {t['insecure_gbps']:>14.3f} {r:>16} {t['errors']:>7}")
print('load before:', before.strip())
print('load after: ', after.strip())
PY
