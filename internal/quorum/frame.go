package quorum

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Transport frames: a 4-byte big-endian length (of kind + payload), a kind
// byte, the payload. A connection opens with frameHello from the dialer,
// answered by frameHello (accepted) or frameReject (refused, with a reason);
// then the dialer sends frameMessage frames (one protobuf raftpb.Message
// each) and frameKeepalive when idle. Traffic is one-way: each node sends
// on its own outbound connection.
const (
	frameHello     byte = 1
	frameReject    byte = 2
	frameMessage   byte = 3
	frameKeepalive byte = 4

	helloMagic   = "EXQR"
	helloVersion = 1
)

func appendFrame(buf []byte, kind byte, payload []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(1+len(payload)))
	buf = append(buf, kind)
	return append(buf, payload...)
}

// readFrame reads one frame, refusing a length above max before allocating.
func readFrame(r io.Reader, max int) (kind byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[:4])
	if n == 0 {
		return 0, nil, errors.New("empty frame")
	}
	if int64(n) > int64(max) {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d limit", n, max)
	}
	if _, err := io.ReadFull(r, h[4:5]); err != nil {
		return 0, nil, noEOF(err)
	}
	payload = make([]byte, n-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, noEOF(err)
	}
	return h[4], payload, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// hello is the handshake: who is speaking, for which cluster, from which
// storage directory.
type hello struct {
	ClusterID   string
	NodeID      uint64
	DirectoryID DirectoryID
}

// Payload: magic [4], version u8, node id u64 BE, directory id [16],
// cluster id length u8, cluster id.
func (h hello) encode() []byte {
	b := make([]byte, 0, 30+len(h.ClusterID))
	b = append(b, helloMagic...)
	b = append(b, helloVersion)
	b = binary.BigEndian.AppendUint64(b, h.NodeID)
	b = append(b, h.DirectoryID[:]...)
	b = append(b, byte(len(h.ClusterID)))
	return append(b, h.ClusterID...)
}

func decodeHello(b []byte) (hello, error) {
	var h hello
	const fixed = 4 + 1 + 8 + dirIDBytes + 1
	if len(b) < fixed || string(b[:4]) != helloMagic {
		return h, errors.New("not a quorum handshake")
	}
	if b[4] != helloVersion {
		return h, fmt.Errorf("handshake version %d, want %d", b[4], helloVersion)
	}
	h.NodeID = binary.BigEndian.Uint64(b[5:13])
	copy(h.DirectoryID[:], b[13:13+dirIDBytes])
	n := int(b[fixed-1])
	if len(b) != fixed+n {
		return h, fmt.Errorf("handshake of %d bytes, cluster id of %d", len(b), n)
	}
	h.ClusterID = string(b[fixed:])
	if h.NodeID == 0 {
		return h, errors.New("handshake with node id 0")
	}
	return h, nil
}
