// Package wire validates the lengths inside a Kafka request body before
// franz-go's kmsg decodes it.
//
// kmsg checks an array count only against the bytes that remain (one byte
// per element) and then allocates count × sizeof(element) at once, so a few
// megabytes of hostile counts make it allocate hundreds of megabytes.
// CheckCounts walks the body first with the request's wire layout and
// refuses any array, string, bytes or tagged-field length the remaining
// bytes cannot hold at the element's minimum encoded size. After it
// accepts, every allocation kmsg makes is bounded by the bytes that back it.
//
// The layouts are not written by hand: layout.go derives each request's
// from kmsg itself (reflection gives field order and Go types; probing
// kmsg's encoder gives which fields a version encodes, inline or tagged),
// once per key and version, on first use.
package wire

import (
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrMalformed is wrapped by every refusal of CheckCounts.
var ErrMalformed = errors.New("malformed request")

// errTagCount marks a tagged-field count the body cannot hold. kmsg would
// refuse it too, but only after looping once per claimed tag (up to 2^32
// times), which is why the differential test must not hand it to kmsg.
var errTagCount = fmt.Errorf("%w: tagged field count exceeds the body", ErrMalformed)

// CheckCounts walks body, a request of key at version without its header,
// and returns an error wrapping ErrMalformed if any length in it claims
// more than the bytes that follow can hold. It accepts every body kmsg's
// ReadFrom accepts. Bytes after the last field are allowed, as kmsg allows
// them.
func CheckCounts(key, version int16, body []byte) error {
	_, err := DecodeCost(key, version, body)
	return err
}

// DecodeCost is CheckCounts that also returns an upper estimate of the
// bytes kmsg allocates decoding body: every array's count × its Go
// element's size, every string's bytes and every unknown tagged field.
// Counts that fit the body still amplify (a 1-byte element can be a
// 100-byte struct), so the server charges this to its request budget and
// refuses a request whose decoded form alone would exceed the frame limit.
func DecodeCost(key, version int16, body []byte) (int64, error) {
	m, err := layoutFor(key, version)
	if err != nil {
		return 0, err
	}
	w := walker{b: body, flex: m.flexible}
	if err := w.structure(m.root); err != nil {
		return 0, fmt.Errorf("%s v%d: %w", kmsg.NameForKey(key), version, err)
	}
	return w.alloc, nil
}

// message is one request type at one version.
type message struct {
	root     *layout
	flexible bool
}

// cached holds one derivation, done once.
type cached struct {
	once sync.Once
	m    *message
	err  error
}

// layouts maps key<<16|version to *cached.
var layouts sync.Map

// layoutFor returns the layout of key at version, deriving it on first use.
func layoutFor(key, version int16) (*message, error) {
	id := uint32(uint16(key))<<16 | uint32(uint16(version))
	c, ok := layouts.Load(id)
	if !ok {
		c, _ = layouts.LoadOrStore(id, new(cached))
	}
	e := c.(*cached)
	e.once.Do(func() {
		// Derivation runs on a connection's reader goroutine: a kmsg
		// the probes do not fit must fail the request, not the broker.
		defer func() {
			if r := recover(); r != nil {
				e.m, e.err = nil, fmt.Errorf("deriving the layout of %s v%d: %v", kmsg.NameForKey(key), version, r)
			}
		}()
		e.m, e.err = derive(key, version)
	})
	return e.m, e.err
}
