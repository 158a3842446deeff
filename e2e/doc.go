// Package e2e holds end-to-end tests that run the exactly binary as a
// subprocess (so it can be SIGKILLed) or the embedded broker across
// restarts, and check what real clients observe.
package e2e
