"""Drive kafka-python for the compat tests.

The Go tests run this with the system interpreter (/usr/bin/python3, where
Debian's python3-kafka lives). One JSON request arrives on stdin and one JSON
answer leaves on stdout; bytes travel base64-encoded so every key, value and
header value is compared exactly, and null stays distinct from empty.

Requests:
  {"op": "codecs"}
      -> {"kafka": "2.0.2", "codecs": {"gzip": true, "snappy": ..., "lz4": ..., "zstd": ...}}
  {"op": "produce", "bootstrap": "host:port", "topic": t, "acks": 0 | 1 | "all",
   "compression": null | "gzip" | "snappy" | "lz4" | "zstd",
   "max_request_size": n,
   "records": [{"partition": p, "key": b64 | null, "value": b64 | null,
                "headers": [[name, b64], ...]}, ...]}
      -> {"offsets": [[partition, offset], ...]}   (offset -1 under acks=0)
  {"op": "consume", "bootstrap": "host:port", "topic": t, "count": n,
   "timeout_ms": ms}
      -> {"records": [{"partition": p, "offset": o, "key": ..., "value": ...,
                       "headers": [...]}, ...]}
     Reads from the earliest offset of every partition without a group and
     stops after count records or timeout_ms without a new record.

produce and consume also take "security": {"protocol": "SASL_SSL",
"mechanism": "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512", "username": u,
"password": p, "cafile": path}, passed to kafka-python as its own
security_protocol / sasl_* / ssl_cafile settings.

Errors go to stderr with a non-zero exit status, after kafka-python's own
warnings (a failed SASL exchange is visible only there: the broker closes
the connection, and kafka-python reports NoBrokersAvailable).
"""

import base64
import json
import logging
import sys

import kafka
from kafka import KafkaConsumer, KafkaProducer
from kafka import codec


def enc(b):
    return None if b is None else base64.b64encode(b).decode("ascii")


def dec(s):
    return None if s is None else base64.b64decode(s)


def codecs(_req):
    return {
        "kafka": kafka.__version__,
        "codecs": {
            "gzip": codec.has_gzip(),
            "snappy": codec.has_snappy(),
            "lz4": codec.has_lz4(),
            "zstd": codec.has_zstd(),
        },
    }


def security(req):
    """kafka-python's connection settings for the request's "security"."""
    sec = req.get("security")
    if not sec:
        return {}
    conf = {
        "security_protocol": sec["protocol"],
        "ssl_cafile": sec["cafile"],
        # The test CA signs for 127.0.0.1 as an IP SAN; kafka-python checks
        # the host name through Python's ssl module, which accepts it.
        "ssl_check_hostname": True,
    }
    if sec.get("mechanism"):
        conf["sasl_mechanism"] = sec["mechanism"]
        conf["sasl_plain_username"] = sec["username"]
        conf["sasl_plain_password"] = sec["password"]
    if sec.get("certfile"):
        # Mutual TLS: the client presents this certificate and key.
        conf["ssl_certfile"] = sec["certfile"]
        conf["ssl_keyfile"] = sec["keyfile"]
    return conf


def produce(req):
    acks = req.get("acks", "all")
    producer = KafkaProducer(
        bootstrap_servers=req["bootstrap"],
        **security(req),
        acks=acks,
        compression_type=req.get("compression"),
        max_request_size=req.get("max_request_size", 1048576),
        # One request in flight and no retries: records land in the order
        # they were sent, or the run fails.
        max_in_flight_requests_per_connection=1,
        # How long send() waits for the topic's metadata: a denied topic
        # never gets any, and kafka-python waits this long to say so.
        max_block_ms=req.get("max_block_ms", 60000),
        retries=0,
        request_timeout_ms=30000,
    )
    try:
        futures = []
        for r in req["records"]:
            headers = [(h[0], dec(h[1])) for h in r.get("headers", [])]
            futures.append(
                producer.send(
                    req["topic"],
                    key=dec(r.get("key")),
                    value=dec(r.get("value")),
                    headers=headers,
                    partition=r["partition"],
                )
            )
        producer.flush(timeout=60)
        offsets = []
        for f in futures:
            md = f.get(timeout=60)
            offsets.append([md.partition, md.offset])
        return {"offsets": offsets}
    finally:
        producer.close(timeout=10)


def consume(req):
    consumer = KafkaConsumer(
        req["topic"],
        bootstrap_servers=req["bootstrap"],
        group_id=None,
        **security(req),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=req.get("timeout_ms", 10000),
    )
    out = []
    try:
        for m in consumer:
            out.append(
                {
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": enc(m.key),
                    "value": enc(m.value),
                    "headers": [[k, enc(v)] for k, v in (m.headers or [])],
                }
            )
            if len(out) >= req["count"]:
                break
    finally:
        consumer.close()
    return {"records": out}


OPS = {"codecs": codecs, "produce": produce, "consume": consume}


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    req = json.load(sys.stdin)
    op = OPS.get(req.get("op"))
    if op is None:
        sys.stderr.write("unknown op %r\n" % req.get("op"))
        return 2
    json.dump(op(req), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
