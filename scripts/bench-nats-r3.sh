#!/usr/bin/env bash
# BENCHMARKS.md "Cluster on Raft": the peer harness's 3-node NATS JetStream cluster with R3 file streams
# and a 3-node ledger, append and watch, in one run. Needs peerbench built
# (CARGO_TARGET_DIR=/tmp/peerbench-target cargo build --release --manifest-path ../shared/bench/peerbench/Cargo.toml),
# nats-server installed, and cargo build --release.
# One run: NATS JetStream 3-node R3 beside a 3-node ledger (Raft), append + watch.
set -uo pipefail
PB=/tmp/peerbench-target/release/peerbench
BIN=$(dirname "$0")/../target/release/converge-ledger
W=/tmp/r3-ledger; rm -rf $W; mkdir -p $W
pids=()
for n in 1 2 3; do
  peers=""; for p in 1 2 3; do [ $p != $n ] && peers+=" --peer 127.0.0.1:1790$p"; done
  $BIN serve --listen 127.0.0.1:1760$n --data-dir $W/n$n --node-name n$n --cluster-listen 127.0.0.1:1790$n $peers --cluster-secret b --log warn > $W/n$n.log 2>&1 &
  pids+=($!)
done
sleep 4
leader=$($BIN status --server 127.0.0.1:17601 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["raft_groups"][0]["leader"])')
lp=1760${leader#n}; echo "ledger leader $leader on $lp"
bash $(dirname "$0")/../../shared/bench/peers.sh cluster3
sleep 2
echo "== nats R3"
$PB run --target nats --nats-url nats://127.0.0.1:14223 --nats-replicas 3 --workload append --label "R3 file, JetStream default sync (fsync every 2 min)"
$PB run --target nats --nats-url nats://127.0.0.1:14223 --nats-replicas 3 --workload watch --label "R3 file, JetStream default sync"
echo "== ledger 3 nodes via leader"
$PB run --target ledger --ledger-url http://127.0.0.1:$lp --workload append --label "3 nodes Raft, fsync per Ready, majority"
$PB run --target ledger --ledger-url http://127.0.0.1:$lp --workload watch --label "3 nodes Raft, fsync"
echo "== nats R3 again"
$PB run --target nats --nats-url nats://127.0.0.1:14223 --nats-replicas 3 --workload append --label "R3 file, JetStream default sync"
bash $(dirname "$0")/../../shared/bench/peers.sh stop-cluster3
kill ${pids[@]}; wait
