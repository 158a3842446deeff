#!/usr/bin/env bash
# Three exactly nodes on this machine, each a broker and a controller of the metadata quorum:
# Kafka on 127.0.0.1:9092-9094, the quorum on 127.0.0.1:9192-9194, data in ./data/node1-3.
# The same commands as the Procfile, one per node (a process manager such as foreman or
# honcho runs the Procfile instead). Ctrl-C stops all three cleanly.
#
#   examples/cluster/run.sh            build ./exactly from this checkout and start the nodes
set -euo pipefail
cd "$(dirname "$0")"
go build -o exactly ../../cmd/exactly
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
while IFS= read -r line; do
  name=${line%%:*}
  cmd=${line#*: }
  ./$cmd > >(sed "s/^/$name | /") 2>&1 &
  pids+=($!)
done < Procfile
wait
