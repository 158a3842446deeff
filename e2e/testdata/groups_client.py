"""A kafka-python consumer-group worker for the e2e group tests.

Run by the Go tests with the system interpreter (/usr/bin/python3, where
Debian's python3-kafka 2.0.2 lives). One JSON request on stdin:

  {"bootstrap": "host:port", "topic": t, "group": g,
   "mode": "auto" | "after" | "before",
   "batch": n,                 # max_poll_records
   "limit": n,                 # stop after processing this many records
   "crash": null | "before_commit" | "before_processing" | "after_processing",
   "idle_ms": ms,              # stop after this long assigned without a record (10 s before the first)
   "auto_commit_interval_ms": ms}

Modes are the consumer patterns of docs/GUARANTEES.md:
  auto    enable.auto.commit=true: offsets are committed in the background
          (and on close), whether or not processing finished.
  after   at-least-once: process a batch, then commit it.
  before  at-most-once: commit a batch, then process it.

"Processing" a record prints one JSON line {"partition", "offset", "value"}
to stdout (flushed at once, so it survives a crash). A crash is
os._exit(3): no close, no final commit, no LeaveGroup — as if the process
were killed.
"""

import json
import os
import sys
import time

from kafka import KafkaConsumer


def process(rec):
    sys.stdout.write(json.dumps({"partition": rec.partition, "offset": rec.offset,
                                 "value": rec.value.decode()}) + "\n")
    sys.stdout.flush()


def crash():
    sys.stdout.flush()
    os._exit(3)


def main():
    req = json.load(sys.stdin)
    mode = req["mode"]
    crash_at = req.get("crash")
    consumer = KafkaConsumer(
        req["topic"],
        bootstrap_servers=req["bootstrap"],
        group_id=req["group"],
        client_id="kafka-python-" + mode,
        enable_auto_commit=(mode == "auto"),
        auto_commit_interval_ms=req.get("auto_commit_interval_ms", 5000),
        auto_offset_reset="earliest",
        max_poll_records=req.get("batch", 500),
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    limit = req.get("limit", 1 << 30)
    idle = req.get("idle_ms", 3000) / 1000.0
    # Until the first record, a slow start (the offset lookup and first
    # fetch after the assignment, on a loaded machine) is not idleness:
    # every caller expects records.
    first_wait = max(idle, 10.0)
    processed = 0
    last = time.time()
    give_up = last + 60
    while processed < limit and time.time() - last < (idle if processed else first_wait) and time.time() < give_up:
        batches = consumer.poll(timeout_ms=200)
        records = [r for rs in batches.values() for r in rs]
        if not consumer.assignment():
            # Idle counts from the assignment: joining waits for the
            # rebalance, which waits out a crashed member's session.
            last = time.time()
            continue
        if not records:
            continue
        last = time.time()
        if mode == "before":
            consumer.commit()
            if crash_at == "before_processing":
                crash()
        for r in records:
            process(r)
            processed += 1
        if mode == "after":
            if crash_at == "before_commit":
                crash()
            consumer.commit()
    if crash_at == "after_processing":
        # Keep polling (so auto commit may run) until idle, then die.
        end = time.time() + idle
        while time.time() < end:
            consumer.poll(timeout_ms=100)
        crash()
    consumer.close()


if __name__ == "__main__":
    main()
