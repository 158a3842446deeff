package hostile

import "testing"

// TestCanaryIsServed checks the suite's own yardstick on a broker nobody
// attacks.
func TestCanaryIsServed(t *testing.T) {
	b := startBroker(t, nil)
	canary(t, plaintext(b.Addr()), 20)
}
