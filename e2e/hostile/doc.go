// Package hostile is the hostile-client suite: each test attacks an
// embedded broker over the wire as an unauthenticated client could
// (abandoned long polls, oversized counts, decompression bombs, connection
// floods, forged transaction markers, ...) and asserts both the bound the
// broker keeps (memory, goroutines, sockets, state) and that a
// well-behaved client is served during and after the attack.
//
// Attacks reach the broker through a target (address, TLS config, SASL
// user), so the same attacks also run, authenticated, against a listener
// whose security protocol is SASL_SSL; further attacks aim at that
// listener's authentication itself (slow and abandoned TLS handshakes and
// SASL exchanges, bad tokens, wrong passwords).
//
// The tests live in their own package so the process's memory and
// goroutine statistics belong to this suite's broker alone.
package hostile
