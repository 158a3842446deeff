package quorum

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
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
	// frameGroupMessage carries a partition group's raft message (see
	// grouptransport.go).
	frameGroupMessage byte = 5
	// frameGroupBeacon names the partition groups the sender leads
	// quietly (quiesce.go), once per tick.
	frameGroupBeacon byte = 6

	helloMagic   = "EXQR"
	helloVersion = 1
	// helloVersionLearner is the handshake of a learner asking to be
	// admitted: version 1 plus the learner's address.
	helloVersionLearner = 2
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
// storage directory, and, from a learner not yet in the membership, where
// it listens for the leader to add it.
type hello struct {
	ClusterID   string
	NodeID      uint64
	DirectoryID DirectoryID
	// LearnerAddr, when set, asks the acceptor to admit the speaker as a
	// learner listening there (version 2 of the handshake).
	LearnerAddr string
}

// Payload: magic [4], version u8, node id u64 BE, directory id [16],
// cluster id length u8, cluster id; version 2 adds the learner address
// length u8 (1 to 255) and the address (host:port). Version 1 is sent when
// nothing is asked, so a node that knows only version 1 still talks to
// every member.
func (h hello) encode() []byte {
	b := make([]byte, 0, 31+len(h.ClusterID)+len(h.LearnerAddr))
	b = append(b, helloMagic...)
	if h.LearnerAddr == "" {
		b = append(b, helloVersion)
	} else {
		b = append(b, helloVersionLearner)
	}
	b = binary.BigEndian.AppendUint64(b, h.NodeID)
	b = append(b, h.DirectoryID[:]...)
	b = append(b, byte(len(h.ClusterID)))
	b = append(b, h.ClusterID...)
	if h.LearnerAddr != "" {
		b = append(b, byte(len(h.LearnerAddr)))
		b = append(b, h.LearnerAddr...)
	}
	return b
}

func decodeHello(b []byte) (hello, error) {
	var h hello
	const fixed = 4 + 1 + 8 + dirIDBytes + 1
	if len(b) < fixed || string(b[:4]) != helloMagic {
		return h, errors.New("not a quorum handshake")
	}
	version := b[4]
	if version != helloVersion && version != helloVersionLearner {
		return h, fmt.Errorf("handshake version %d, want %d or %d", version, helloVersion, helloVersionLearner)
	}
	h.NodeID = binary.BigEndian.Uint64(b[5:13])
	copy(h.DirectoryID[:], b[13:13+dirIDBytes])
	n := int(b[fixed-1])
	if h.NodeID == 0 {
		return h, errors.New("handshake with node id 0")
	}
	if version == helloVersion {
		if len(b) != fixed+n {
			return h, fmt.Errorf("handshake of %d bytes, cluster id of %d", len(b), n)
		}
		h.ClusterID = string(b[fixed:])
		return h, nil
	}
	if len(b) < fixed+n+1 {
		return h, fmt.Errorf("handshake of %d bytes, cluster id of %d and no learner address", len(b), n)
	}
	h.ClusterID = string(b[fixed : fixed+n])
	rest := b[fixed+n:]
	an := int(rest[0])
	if an == 0 || len(rest) != 1+an {
		return h, fmt.Errorf("handshake learner address of %d bytes in %d", an, len(rest)-1)
	}
	addr := string(rest[1:])
	if err := checkPeerAddr(addr); err != nil {
		return h, fmt.Errorf("handshake learner address: %w", err)
	}
	h.LearnerAddr = addr
	return h, nil
}

// checkPeerAddr accepts host:port with a non-empty, non-wildcard host and
// a port in 1..65535: an address a peer can dial.
func checkPeerAddr(addr string) error {
	if len(addr) > maxAddrBytes {
		return fmt.Errorf("address of %d bytes exceeds the %d limit", len(addr), maxAddrBytes)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("bad port in %q", addr)
	}
	if host == "" {
		return fmt.Errorf("no host in %q", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("wildcard host in %q", addr)
	}
	return nil
}
