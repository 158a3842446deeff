package server

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/exactly/exactly/internal/security"
)

// FuzzSASLExchange feeds an arbitrary byte stream to the SASL parsers the
// way a legacy-framing client reaches them (SaslHandshake v0, then raw
// 4-byte-length tokens): the first byte picks PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512, each token goes to the exchange. Nothing may panic, no
// token above the cap may be read, and only the stored password may
// authenticate.
func FuzzSASLExchange(f *testing.F) {
	token := func(s string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
	}
	f.Add(append([]byte{0}, token("\x00alice\x00secret")...))
	f.Add(append([]byte{0}, token("alice\x00alice\x00wrong")...))
	f.Add(append([]byte{1}, token("n,,n=alice,r=abcdef")...))
	f.Add(append(append([]byte{2}, token("n,,n=alice,r=abcdef")...), token("c=biws,r=abcdefXYZ,p=AAAA")...))
	f.Add(append([]byte{2}, token("n,a=bob,n=alice,r=x")...))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	creds := map[string]security.ScramCredential{}
	for _, m := range []string{security.MechScramSHA256, security.MechScramSHA512} {
		c, err := security.NewScramCredential(m, "secret", security.MinScramIterations)
		if err != nil {
			f.Fatal(err)
		}
		creds[m] = c
	}
	lookup := func(user, mech string) (security.ScramCredential, bool) {
		c, ok := creds[mech]
		return c, ok && user == "alice"
	}
	const maxToken = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		mech := []string{security.MechPlain, security.MechScramSHA256, security.MechScramSHA512}[int(data[0])%3]
		ex, err := security.NewExchange(mech, lookup)
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(data[1:])
		for {
			tok, _, err := readLegacyToken(r, maxToken, func(n int) ([]byte, int64, error) {
				if n > maxToken {
					t.Fatalf("asked to read %d bytes, over the %d cap", n, maxToken)
				}
				b := make([]byte, n)
				_, err := io.ReadFull(r, b)
				return b, int64(n), err
			})
			if err != nil {
				return
			}
			_, done, err := ex.Step(tok)
			if err != nil {
				return
			}
			if done {
				if mech == security.MechPlain {
					_, user, pw, perr := security.ParsePlain(tok)
					if perr != nil || user != "alice" || pw != "secret" {
						t.Fatalf("PLAIN authenticated %q", tok)
					}
				}
				if ex.User() != "alice" {
					t.Fatalf("authenticated as %q", ex.User())
				}
				return
			}
		}
	})
}
