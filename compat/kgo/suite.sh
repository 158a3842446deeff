#!/usr/bin/env bash
# franz-go's own integration tests (its pkg/kgo *_test.go) against `exactly serve`.
#
# franz-go's suite runs against any broker named by KGO_SEEDS. This script takes the franz-go
# version pinned in go.mod from the module cache, builds exactly, starts `exactly serve` on a
# fresh data directory, and runs the variants CI runs: the produce/consume, group and
# transaction tests, then TestTxnEtl again with KGO_TEST_UNSAFE (unsafe commits) and
# KGO_TEST_CHAOS (random client kills), then the SCRAM tests (TestSCRAMAuth,
# TestSCRAMAuthBadCredentials) against a broker with a SASL_PLAINTEXT listener on KGO_PORT+1 and
# a SCRAM-SHA-256 user, then the share-group tests (KIP-932: TestShareGroup, TestShareGroupETL,
# TestShareGroupAckOnClose, TestShareGroupOffsetsAdmin, TestConsumeRegexShareSkipsInternal), which
# must each PASS: franz-go skips them against a broker without ShareFetch/ShareAcknowledge v2, and a
# skip fails this variant; then the produce/consume, group and transaction tests against a
# three-node cluster (RF 1 topics spread over the nodes), and again with replication factor 3
# (KGO_TEST_RF=3), then TestTxnEtl and TestGroupETL at RF 3 while node 3 is SIGKILLed and
# restarted during the run, then TestTxnEtl with KGO_TEST_CHAOS at RF 3. Each variant gets fresh
# brokers.
#
# usage: compat/kgo/suite.sh [TEST_REGEX | scram | share | cluster | replicated | coordinator-kill]
#   (scram/share/cluster/replicated: only that variant)
#   env: RECORDS (records per ETL test, default 20000), KGO_PORT (default 19092),
#        RESTART_AFTER (seconds into the restart variant node 3 is killed, default 15),
#        TIMEOUT (per variant, default 20m), KGO_LOG_LEVEL (franz-go's, default none)
# Exit status: non-zero if any variant fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

default_tests='^(TestTxnEtl|TestGroupETL|TestGroupSimple|TestIssue523|TestIssue1034|TestIssue769|TestConsumeRegex|TestClient_Produce|TestClient_ProduceLargeMessages|TestProduceRequestNullBatchEncoding|TestConsumeMaxDecompressBatchBytes|TestPauseIssue489|TestPauseIssueOct2023|TestIssue325|TestIssue337|TestIssue434|TestIssue810|TestIssue865|TestIssueFetchLargerThanBrokerMaxReadBytes)$'
share_tests=(TestShareGroup TestShareGroupETL TestShareGroupAckOnClose TestShareGroupOffsetsAdmin TestConsumeRegexShareSkipsInternal)
tests=${1:-$default_tests}
port=${KGO_PORT:-19092}

work=$(mktemp -d)
broker_pid=
cleanup() {
  stop_broker 2>/dev/null
  chmod -R u+w "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The franz-go source at the version go.mod pins (the module cache's copy is read-only).
src=$(go mod download -json github.com/twmb/franz-go | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "compat/kgo: cannot find franz-go's source in the module cache (go mod download failed)" >&2; exit 2; }
cp -r "$src" "$work/franz-go"
chmod -R u+w "$work/franz-go"
go build -o "$work/exactly" ./cmd/exactly

# start_broker [SERVE_ARGS...]: without arguments one PLAINTEXT listener on $port.
start_broker() {
  rm -rf "$work/data"
  local args=("$@")
  [ ${#args[@]} -eq 0 ] && args=(--listen "127.0.0.1:$port")
  "$work/exactly" serve --data-dir "$work/data" --log-level warn "${args[@]}" &
  broker_pid=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$broker_pid" 2>/dev/null || { echo "compat/kgo: exactly serve exited at start (port $port taken?)" >&2; exit 2; }
    sleep 0.1
  done
  echo "compat/kgo: exactly serve did not listen on 127.0.0.1:$port" >&2
  exit 2
}

# stop_pid PID: SIGTERM, then SIGKILL after 30s; returns once the process is gone (it may be
# no child of this shell: a node restarted by the restarter).
stop_pid() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

stop_broker() {
  [ -n "$broker_pid" ] && stop_pid "$broker_pid"
  broker_pid=
  if [ -n "$restarter_pid" ]; then
    kill "$restarter_pid" 2>/dev/null || true
    wait "$restarter_pid" 2>/dev/null || true
    restarter_pid=
  fi
  if [ -s "$work/restarted.pid" ]; then
    read -r _ pid <"$work/restarted.pid"
    node_pids+=("$pid")
    rm -f "$work/restarted.pid"
  fi
  for pid in "${node_pids[@]}"; do
    stop_pid "$pid"
  done
  node_pids=()
}

# start_cluster: three nodes (node.id 1-3) on $port, $port+1, $port+2, each a broker and a
# controller of the metadata quorum (controller listeners on $port+100..102), as the README's
# three-node example starts them.
node_pids=()
# start_node I: node I on its data directory, as start_cluster starts it; its pid in started_pid.
started_pid=
start_node() {
  local i=$1 voters="1@127.0.0.1:$((port + 100)),2@127.0.0.1:$((port + 101)),3@127.0.0.1:$((port + 102))"
  "$work/exactly" serve --data-dir "$work/node$i" --log-level warn --set "node.id=$i" \
    --set "listeners=PLAINTEXT://127.0.0.1:$((port + i - 1)),CONTROLLER://127.0.0.1:$((port + 99 + i))" \
    --set controller.listener.names=CONTROLLER --set "controller.quorum.voters=$voters" \
    --set "default.replication.factor=${rf:-1}" &
  started_pid=$!
}
start_cluster() {
  for i in 1 2 3; do
    rm -rf "$work/node$i"
    start_node "$i"
    node_pids+=("$started_pid")
  done
  for i in 1 2 3; do
    local p=$((port + i - 1)) up=
    for _ in $(seq 300); do
      (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { up=1; break; }
      sleep 0.1
    done
    [ -n "$up" ] || { echo "compat/kgo: cluster node $i did not listen on 127.0.0.1:$p" >&2; exit 2; }
  done
}

# diagnose SEEDS: after a variant failed on duplicates ("consumed too much", "saw double
# offset"), what the cluster holds. A failing franz-go test leaves its topics, so each topic is read
# from the start with read_committed and with read_uncommitted; every key an ETL test writes is
# unique per record, so a key a read_committed reader gets twice is a duplicate. Prints the counts
# and the first duplicated keys with each copy's partition, offset, producer id and epoch: copies
# from two producers point at two consumers processing the same input, copies from one producer in
# two epochs at a transaction that committed although its client saw it fail.
diagnose() {
  local seeds=$1 t
  for t in $("$work/exactly" topic list -b "$seeds" 2>/dev/null); do
    for iso in read_committed read_uncommitted; do
      "$work/exactly" consume "$t" -b "$seeds" --from-beginning --isolation "$iso" --timeout 2s \
        --format '%p %o %P %E %k\n' >"$work/diag.$iso" 2>/dev/null || true
    done
    awk -v t="$t" -v ru="$(wc -l <"$work/diag.read_uncommitted")" '
      { n[$5]++; at[$5] = at[$5] " p" $1 "o" $2 "/pid" $3 "e" $4; total++ }
      END {
        for (k in n) { keys++; if (n[k] > 1) { dup++; if (dup <= 5) ex = ex "\n    key " k ":" at[k] } }
        printf "compat/kgo: topic %s: %d records read_committed (%d read_uncommitted) over %d keys; duplicated keys: %d%s\n", t, total, ru, keys, dup + 0, ex
      }' "$work/diag.read_committed" >&2
  done
}

failed=0
# run NAME REGEX [ENV=VALUE...]: one variant against a fresh broker (started with the
# serve arguments in the array broker_args, if set).
broker_args=()
require_pass=()
cluster=
rf=
# restart_node: in a cluster variant, the node SIGKILLed restart_after seconds into the run and
# started again on its data (its new pid in $work/restarted.pid, for stop_broker).
restart_node=
restart_after=30
restarter_pid=
run() {
  local name=$1 regex=$2
  shift 2
  echo "== franz-go $name: $regex"
  local seeds="127.0.0.1:$port"
  if [ -n "$cluster" ]; then
    start_cluster
    seeds="127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))"
  else
    start_broker "${broker_args[@]}"
  fi
  if [ -n "$cluster" ] && [ -n "$restart_node" ]; then
    (sleep "$restart_after"
      local n=$restart_node
      if [ "$n" = coordinator ]; then
        # The node running the coordinators: the leader of __consumer_offsets.
        n=$("$work/exactly" topic describe __consumer_offsets -b "$seeds" 2>/dev/null |
          sed -n 's/.*Leader: \([0-9]*\).*/\1/p' | head -1)
        case "$n" in 1 | 2 | 3) ;; *) echo "compat/kgo: no coordinator node found" >&2; exit 0 ;; esac
      fi
      kill -9 "${node_pids[$((n - 1))]}" 2>/dev/null || exit 0
      echo "compat/kgo: SIGKILLed node $n, restarting it" >&2
      sleep 1
      start_node "$n"
      echo "$n $started_pid" >"$work/restarted.pid") &
    restarter_pid=$!
  fi
  local out="$work/$name.log" status=0
  (cd "$work/franz-go" && env "$@" KGO_SEEDS="$seeds" KGO_TEST_RF="${rf:-1}" \
    KGO_TEST_RECORDS="${RECORDS:-20000}" KGO_LOG_LEVEL="${KGO_LOG_LEVEL:-none}" \
    go test -count=1 -timeout "${TIMEOUT:-20m}" -run "$regex" -v ./pkg/kgo) >"$out" 2>&1 || status=$?
  # The verbose log is long; show each test's verdict and any failure lines.
  grep -E '^\s*(--- |PASS|FAIL|ok|panic)|_test\.go:[0-9]+: ' "$out" | grep -vE 'deleting (topic|group)|completed in' || true
  for must in "${require_pass[@]}"; do
    grep -qE "^--- PASS: $must " "$out" || { echo "compat/kgo: $name: $must did not PASS (skipped or missing)" >&2; status=1; }
  done
  if [ "$status" -ne 0 ]; then
    echo "compat/kgo: $name FAILED (go test exit $status); last lines:" >&2
    tail -40 "$out" >&2
    if grep -qE 'consumed too much|saw double offset' "$out"; then
      diagnose "$seeds"
    fi
    failed=1
  fi
  stop_broker
}

run_scram() {
  scram_port=$((port + 1))
  broker_args=(--set "listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$scram_port"
    --set "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512"
    --add-scram 'SCRAM-SHA-256=[name=kgo,password=kgo-secret]')
  run scram '^(TestSCRAMAuth|TestSCRAMAuthBadCredentials)$' \
    KGO_TEST_SCRAM_SEEDS="127.0.0.1:$scram_port" KGO_TEST_SCRAM="kgo:kgo-secret"
  broker_args=()
}

run_share() {
  require_pass=("${share_tests[@]}")
  run share "^($(IFS='|'; echo "${share_tests[*]}"))\$"
  require_pass=()
}

# run_cluster: the produce/consume, group and transaction tests against three nodes, every
# topic's partitions spread over them (replication factor 1).
run_cluster() {
  cluster=1
  run cluster "$default_tests"
  cluster=
}

# run_replicated: the same tests against three nodes with replication factor 3; then
# TestTxnEtl and TestGroupETL while node 3 is SIGKILLed and restarted ($restart_after seconds in); then TestTxnEtl with chaos (random
# client kills) at RF 3.
run_replicated() {
  cluster=1 rf=3
  run replicated "$default_tests"
  restart_node=3 restart_after=${RESTART_AFTER:-15}
  run replicated-restart '^(TestTxnEtl|TestGroupETL)$'
  restart_node=
  run replicated-chaos '^TestTxnEtl$' KGO_TEST_CHAOS=1
  cluster= rf=
}

# run_coordinator_kill (not in the default run): TestTxnEtl while the node running the
# coordinators is SIGKILLed. franz-go looks a coordinator up again only on an error code, not when
# its node stops answering, so the test's own flush can fail with a dial error (seen 1 in 3).
run_coordinator_kill() {
  cluster=1 rf=3 restart_node=coordinator restart_after=${RESTART_AFTER:-15}
  run replicated-restart-coordinator '^TestTxnEtl$'
  cluster= rf= restart_node=
}

case "${1:-}" in
coordinator-kill)
  run_coordinator_kill
  exit "$failed"
  ;;
replicated)
  run_replicated
  exit "$failed"
  ;;
scram)
  run_scram
  exit "$failed"
  ;;
cluster)
  run_cluster
  exit "$failed"
  ;;
share)
  run_share
  exit "$failed"
  ;;
esac
run plain "$tests"
if [ -z "${1:-}" ]; then
  run unsafe '^TestTxnEtl$' KGO_TEST_UNSAFE=1
  run chaos '^TestTxnEtl$' KGO_TEST_CHAOS=1
  run_scram
  run_share
  run_cluster
  run_replicated
fi
exit "$failed"
