// Package testenv holds helpers shared by the project's tests: a raw
// Kafka wire connection for sending what no well-behaved client would,
// and record-batch builders. It is imported only from _test.go files.
package testenv
