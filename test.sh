#!/usr/bin/env bash
# The project's one test command, on a fresh machine of the project's kind (Debian, Go, root,
# PostgreSQL and Redis installed): set-up, then vet, the whole suite with the race detector,
# every fuzz target briefly, and franz-go's conformance suite against `exactly serve`.
# .ci/run runs exactly this.
#
#   ./test.sh          everything
#   ./test.sh -short   a quick run: go test -short (subprocess, crash and external-client suites
#                      skip and say so), no fuzzing, no conformance
#
# Set-up, each step only when needed: installs kcat, kafka-python and its codecs (apt), starts
# PostgreSQL and Redis if they are installed but stopped, and gives PostgreSQL logical
# replication (wal_level=logical, restart). EXACTLY_TEST_POSTGRES / EXACTLY_TEST_REDIS point the
# tests at other servers; tests that need a server that is not there fail saying how to provide it.
set -euo pipefail
cd "$(dirname "$0")"
short=
case "${1:-}" in
  -short) short=1 ;;
  "") ;;
  *) echo "usage: ./test.sh [-short]" >&2; exit 2 ;;
esac

echo "== set-up"
# Real Kafka clients for the compatibility tests: kcat (librdkafka) and kafka-python, which runs
# on Debian's /usr/bin/python3, with its codec modules.
need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
/usr/bin/python3 -c 'import kafka' 2>/dev/null || need_apt+=(python3-kafka)
for mod in snappy:python3-snappy lz4:python3-lz4 zstandard:python3-zstandard; do
  /usr/bin/python3 -c "import ${mod%%:*}" 2>/dev/null || need_apt+=("${mod#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) or the compat tests fail" >&2
  fi
fi

# PostgreSQL: the outbox, dedup and sink tests. The CDC relay needs logical replication, a
# setting that only a restart applies, so it is changed only when short.
if [ -z "${EXACTLY_TEST_POSTGRES:-}" ]; then
  pg() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "$1"; }
  if ! pg 'SELECT 1' >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 50); do pg 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if pg 'SELECT 1' >/dev/null 2>&1; then
    restart=
    if [ "$(pg 'SHOW wal_level')" != logical ]; then
      pg "ALTER SYSTEM SET wal_level = logical" >/dev/null; restart=1
    fi
    for s in max_replication_slots max_wal_senders; do
      if [ "$(pg "SHOW $s")" -lt 10 ]; then pg "ALTER SYSTEM SET $s = 10" >/dev/null; restart=1; fi
    done
    if [ -n "$restart" ]; then
      echo "restarting PostgreSQL for logical replication"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart
      for _ in $(seq 50); do pg 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    pg "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 || pg "CREATE DATABASE test" >/dev/null
    echo "PostgreSQL 127.0.0.1:5432: wal_level=$(pg 'SHOW wal_level')"
  else
    echo "PostgreSQL is not reachable at 127.0.0.1:5432: the tests that need it will fail (install and start it, or set EXACTLY_TEST_POSTGRES)" >&2
  fi
fi

# Redis: the dedup store tests.
if [ -z "${EXACTLY_TEST_REDIS:-}" ]; then
  if ! (echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null && command -v redis-server >/dev/null; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/exactly-test.log || true
    for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
  fi
  (echo >/dev/tcp/127.0.0.1/6379) 2>/dev/null && echo "Redis 127.0.0.1:6379" ||
    echo "Redis is not reachable at 127.0.0.1:6379: the tests that need it will fail (install and start it, or set EXACTLY_TEST_REDIS)" >&2
fi

echo "== go vet"
go vet ./...

if [ -n "$short" ]; then
  echo "== tests (-short: subprocess, crash and external-client suites skip; no fuzzing, no conformance)"
  go test -short -race -count=1 -timeout 20m ./...
  exit 0
fi

echo "== tests"
go test -race -count=1 -timeout 45m ./...

echo "== fuzz targets (about 10s each on an idle 2-core machine)"
# Budgets are execution counts, not durations: with a duration, Go 1.26's fuzz
# coordinator can report its own -fuzztime deadline as "context deadline
# exceeded" and fail a target that found nothing (golang/go#75804, fixed in
# Go 1.27). A count never arms that deadline. Each count is about ten seconds
# of that target's rate here; a real crasher still fails and is written under
# testdata/fuzz/. Minimizing an input is bounded by a count too: by default Go
# spends up to 60 s on each new input, which a count budget no longer cuts
# short (one target stood still that long in CI).
fuzz() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$3x" -fuzzminimizetime 2000x "$1"; }
fuzz ./internal/server FuzzDecode 250000
fuzz ./internal/server FuzzSASLExchange 300000
fuzz ./internal/wire FuzzDecodeRequest 400000
fuzz ./internal/record FuzzValidate 400000
fuzz ./internal/record FuzzRecode 150000
fuzz ./internal/log FuzzRecover 70000
fuzz ./internal/log FuzzClean 120000
fuzz ./internal/share FuzzDecodeRecord 350000
fuzz ./internal/producerstate FuzzDecode 600000
fuzz ./internal/group FuzzDecodeRecord 350000
fuzz ./internal/txn FuzzDecodeBatches 400000
fuzz ./internal/cluster FuzzDecodeCommand 200000
fuzz ./internal/quorum FuzzWALRecord 250000
fuzz ./internal/quorum FuzzTransportFrame 300000
fuzz ./internal/quorum FuzzSnapshotDecode 250000
fuzz ./internal/replica FuzzDecodeEntry 400000

echo "== conformance: franz-go's integration tests against exactly serve"
compat/kgo/suite.sh
