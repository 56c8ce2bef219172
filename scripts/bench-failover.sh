#!/usr/bin/env bash
# Failover cost with many contexts (BENCHMARKS.md, "Cluster"): three nodes with
# --replication-acks all; N writers each append once to their own context through n1
# (fill), then once more (steady), then n3 is killed with SIGKILL and every writer appends
# once more: about a third of the contexts change owner, each claimed (state asked of the
# survivors, a new epoch persisted) on its first append.
#
#   cargo build --release && N=3000 scripts/bench-failover.sh
set -uo pipefail
BIN=${BIN:-target/release/converge-ledger}
WORK=${WORK:-/tmp/failover-bench}
N=${N:-3000}
rm -rf "$WORK"; mkdir -p "$WORK"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start_node() { # n
  local n=$1 peers=""
  for p in 1 2 3; do [ "$p" != "$n" ] && peers+=" --peer 127.0.0.1:1780$p"; done
  "$BIN" serve --listen 127.0.0.1:1760$n --data-dir "$WORK/node$n" --node-name n$n \
    --cluster-listen 127.0.0.1:1780$n $peers --cluster-secret bench --replication-acks all \
    --log warn >>"$WORK/node$n.log" 2>&1 &
  pids[$n]=$!
}
round() { # label
  echo "-- $1"
  "$BIN" bench --server 127.0.0.1:17601 --run-id failover append --writers "$N" \
    --entries "$N" --warmup 0 --connections 16 2>&1 | grep -E '^\| append|^error'
}
for n in 1 2 3; do start_node $n; done
for _ in $(seq 1 100); do "$BIN" status --server 127.0.0.1:17601 >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
round "fill: $N contexts, one append each, through n1"
round "steady: one more append each"
kill -9 "${pids[3]}"; wait "${pids[3]}" 2>/dev/null; unset 'pids[3]'
sleep 0.5
round "after kill -9 of n3: one more append each (n3's contexts change owner)"
