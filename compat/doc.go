// Package compat holds client compatibility tests: real Kafka clients
// produce to and consume from an embedded exactly broker, and every record
// is compared byte for byte (key, value, headers, order per partition).
//
// The clients are franz-go (kgo, a Go dependency), kcat (librdkafka, the
// Debian package kcat) and kafka-python (the Debian package python3-kafka,
// run with /usr/bin/python3 through testdata/kafka_client.py, with
// python3-snappy, python3-lz4 and python3-zstandard for its codecs). Records
// written by one client are also read back by the others.
//
// A missing external client skips its tests locally and fails them in CI
// (CI=true), so a CI machine without the packages cannot pass silently.
//
// The package has no non-test code.
package compat
