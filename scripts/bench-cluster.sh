#!/usr/bin/env bash
# Single-node vs 3-node (one Raft group) figures for BENCHMARKS.md ("Cluster"): appends with
# --replication-acks majority and all, through the leader and through a follower (which
# forwards), watch on a follower, and the time a restarted node takes to catch up 100,000
# entries from the Raft log. Everything on 127.0.0.1; data under $WORK (default
# /tmp/cl-bench). The failover times are `cargo test --release --test raft_cluster
# failover_benchmark -- --ignored --nocapture`.
#
#   cargo build --release && scripts/bench-cluster.sh
set -euo pipefail
BIN=${BIN:-target/release/converge-ledger}
WORK=${WORK:-/tmp/cl-bench}
ENTRIES=${ENTRIES:-20000}
CATCHUP=${CATCHUP:-100000}
rm -rf "$WORK"; mkdir -p "$WORK"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() { # url
  for _ in $(seq 1 200); do
    "$BIN" status --server "$1" >/dev/null 2>&1 && return 0; sleep 0.1
  done; echo "server $1 not ready" >&2; return 1
}

start_node() { # n acks extra...
  local n=$1 acks=$2; shift 2
  local peers=""
  for p in 1 2 3; do [ "$p" != "$n" ] && peers+=" --peer 127.0.0.1:1770$p"; done
  "$BIN" serve --listen 127.0.0.1:1750$n --data-dir "$WORK/node$n" --node-name n$n \
    --cluster-listen 127.0.0.1:1770$n $peers --cluster-secret bench \
    --replication-acks "$acks" --log warn "$@" >>"$WORK/node$n.log" 2>&1 &
  pids[$n]=$!
}

leader_port() { # url: the gRPC port of the node the group's leader is
  for _ in $(seq 1 200); do
    local l
    l=$("$BIN" status --server "$1" --json | python3 -c 'import json,sys; g=json.load(sys.stdin)["raft_groups"]; print(g[0]["leader"] if g else "")')
    [ -n "$l" ] && { echo "1750${l#n}"; return 0; }; sleep 0.1
  done; echo "no leader" >&2; return 1
}

wait_members() { # url count
  for _ in $(seq 1 200); do
    local up
    up=$("$BIN" status --server "$1" --json | python3 -c 'import json,sys; print(sum(m["state"] in ("this","up") for m in json.load(sys.stdin)["members"]))')
    [ "$up" = "$2" ] && return 0; sleep 0.1
  done; echo "cluster did not form" >&2; return 1
}

total() { # url: sum of latest sequences over every context
  "$BIN" status --server "$1" --limit 0 --json | python3 -c 'import json,sys; print(sum(c["latest_sequence"] for c in json.load(sys.stdin)["contexts"]))'
}

stop_all() { cleanup; pids=(); }

echo "== single node (fsync)"
"$BIN" serve --listen 127.0.0.1:17500 --data-dir "$WORK/single" --log warn >"$WORK/single.log" 2>&1 &
pids[0]=$!
wait_ready 127.0.0.1:17500
"$BIN" bench --server 127.0.0.1:17500 append --writers 1,16 --entries "$ENTRIES"
"$BIN" bench --server 127.0.0.1:17500 watch --watchers 1,32 --rate 2000 --duration 10
stop_all

for acks in majority all; do
  rm -rf "$WORK"/node*
  for n in 1 2 3; do start_node $n $acks; done
  for n in 1 2 3; do wait_ready 127.0.0.1:1750$n; done
  wait_members 127.0.0.1:17501 3
  lp=$(leader_port 127.0.0.1:17501)
  fp=17501; [ "$lp" = 17501 ] && fp=17502
  echo "== three nodes, --replication-acks $acks (fsync); appends through the leader ($lp)"
  "$BIN" bench --server 127.0.0.1:$lp append --writers 1,16 --entries "$ENTRIES"
  echo "-- appends through a follower ($fp, forwarded to the leader)"
  "$BIN" bench --server 127.0.0.1:$fp append --writers 1,16 --entries "$ENTRIES"
  echo "-- watch: writer appends through the leader, watchers on a follower ($fp)"
  "$BIN" bench --server 127.0.0.1:$lp watch --watch-server 127.0.0.1:$fp --watchers 1,32 --rate 2000 --duration 10
  stop_all
done

echo "== catch-up: n3 stopped while $CATCHUP entries are appended through n1, then restarted"
rm -rf "$WORK"/node*
for n in 1 2 3; do start_node $n majority; done
for n in 1 2 3; do wait_ready 127.0.0.1:1750$n; done
wait_members 127.0.0.1:17501 3
kill "${pids[3]}"; wait "${pids[3]}" 2>/dev/null || true
wait_members 127.0.0.1:17501 2
"$BIN" bench --server 127.0.0.1:17501 append --writers 16 --entries "$CATCHUP" >/dev/null
want=$(total 127.0.0.1:17501)
have_before=$(total 127.0.0.1:17502)
t0=$(date +%s.%N)
start_node 3 majority
wait_ready 127.0.0.1:17503
while :; do
  have=$(total 127.0.0.1:17503)
  [ "$have" -ge "$want" ] && break
  sleep 0.05
done
t1=$(date +%s.%N)
echo "catch-up: n1 holds $want entries (n2 $have_before); restarted n3 reached $have in $(python3 -c "print(f'{$t1-$t0:.2f}')") s after exec"
