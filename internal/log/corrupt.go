package log

import (
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by a CorruptionError: damage found in data that
// was durable, which the log never repairs by itself.
var ErrCorrupt = errors.New("log: corrupt data below the recovery point")

// CorruptionError locates damage in a segment file: the first batch there
// that is not whole, valid (CRC-32C) and contiguous with the one before.
type CorruptionError struct {
	// File is the segment file.
	File string
	// Pos is the byte position of the damaged batch in File.
	Pos int64
	// Offset is the offset the damaged batch should start at.
	Offset int64
	// Reason says what is wrong.
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("corrupt data in %s at byte %d (offset %d): %s", e.File, e.Pos, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// RepairHint tells the operator how to bring a corrupt partition back.
const RepairHint = "nothing was truncated; stop the broker, copy the data directory, then run " +
	"`exactly check-data --data-dir DIR --truncate-corrupt TOPIC-PARTITION` (docs/DESIGN.md, Operating: corruption)"

// corrupt takes the log offline for damage in durable data. Unlike an I/O
// failure it names the file, offset and the way back.
func (l *Log) corrupt(ce *CorruptionError) error {
	werr := fmt.Errorf("%w: %w", ErrLogOffline, ce)
	if l.failure.CompareAndSwap(nil, &werr) {
		l.corruption.Store(ce)
		l.logger.Error("partition offline: corrupt data below the recovery point; "+RepairHint,
			"file", ce.File, "byte", ce.Pos, "offset", ce.Offset, "reason", ce.Reason)
		return werr
	}
	return *l.failure.Load()
}

// Corruption returns the damage that took the log offline, or nil if it is
// online or offline for another reason.
func (l *Log) Corruption() *CorruptionError { return l.corruption.Load() }

// asCorruption returns err's CorruptionError, if it is one.
func asCorruption(err error) (*CorruptionError, bool) {
	var ce *CorruptionError
	ok := errors.As(err, &ce)
	return ce, ok
}
