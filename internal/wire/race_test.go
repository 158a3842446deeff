//go:build race

package wire

// raceEnabled: the race detector changes what the runtime allocates
// (append(s, make(...)...) is no longer fused), so allocation bounds
// measured under it get raceAllocFactor more room.
const raceEnabled = true
