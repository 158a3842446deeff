package hostile

import (
	"sync"
	"testing"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// bombTopic is where attackDecompressionBombs produces.
const bombTopic = "bombs"

// bombsAtOnce is how many bombs of each codec are sent concurrently.
const bombsAtOnce = 4

// bombFrames are Produce requests, one per codec, whose single record is a
// zero-filled value of 64 MiB (16 MiB for snappy, which cannot compress
// better than about 1:21) in a batch under the default max.message.bytes.
// Built once: building them is the attacker's cost, not the broker's.
var bombFrames = sync.OnceValue(func() map[string][]byte {
	out := map[string][]byte{}
	for name, codec := range testenv.Codecs {
		size := 64 << 20
		if name == "snappy" {
			size = 16 << 20
		}
		batch := testenv.Bomb(codec, size)
		out[name] = testenv.Frame(testenv.ProduceRequest(bombTopic, 0, batch), 9, 42)
	}
	return out
})

// attackDecompressionBombs sends bombsAtOnce bombs of every codec at once,
// each on its own connection, and checks each is refused with
// MESSAGE_TOO_LARGE.
func attackDecompressionBombs(t *testing.T, tg target) {
	createTopic(t, tg, bombTopic, 1)
	frames := bombFrames()
	var wg sync.WaitGroup
	for name, frame := range frames {
		for range bombsAtOnce {
			c := tg.dial(t)
			wg.Go(func() {
				c.Send(frame)
				resp := c.ReadResponse(kmsg.NewPtrProduceRequest(), 9, 42).(*kmsg.ProduceResponse)
				if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.MessageTooLarge.Code {
					t.Errorf("%s bomb: error %v, want MESSAGE_TOO_LARGE", name, kerr.ErrorForCode(code))
				}
			})
		}
	}
	wg.Wait()
}

// Decompression bombs of every codec, several at once, are refused with
// MESSAGE_TOO_LARGE once their records pass max.message.bytes: the broker
// allocates a small fraction of what they expand to (before the fix every
// one was expanded in full, 64 MiB each, and accepted), keeps no memory
// afterwards, stores nothing, and serves the canary.
func TestStateDecompressionBombs(t *testing.T) {
	onEachListener(t, nil, func(t *testing.T, _ *exactly.Broker, attacker, well target) {
		bombFrames()
		heapBefore := heapInUse()
		var expanded uint64
		for name := range testenv.Codecs {
			size := uint64(64 << 20)
			if name == "snappy" {
				size = 16 << 20
			}
			expanded += bombsAtOnce * size
		}
		alloc := allocatedDuring(func() { attackDecompressionBombs(t, attacker) })
		// Per bomb: the request frame, a decompressor's buffers (lz4's 4 MiB
		// block; pooled) and records up to the 1 MiB limit.
		if limit := uint64(bombsAtOnce * len(testenv.Codecs) * 4 << 20); alloc > limit {
			t.Errorf("the attack allocated %d MiB in the broker, want under %d MiB (the bombs expand to %d MiB)", alloc>>20, limit>>20, expanded>>20)
		}
		if grown := int64(heapInUse()) - int64(heapBefore); grown > 32<<20 {
			t.Errorf("heap grew by %d MiB after the attack", grown>>20)
		}
		offs, err := adminClient(t, well).ListEndOffsets(t.Context(), bombTopic)
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := offs.Lookup(bombTopic, 0); o.Offset != 0 {
			t.Errorf("%s end offset %d after the attack, want 0: a bomb was stored", bombTopic, o.Offset)
		}
		t.Logf("the attack allocated %d MiB in the broker for %d MiB of expanded bombs", alloc>>20, expanded>>20)
		canary(t, well, 20)
	})
}
