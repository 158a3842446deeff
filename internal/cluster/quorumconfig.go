package cluster

// The cluster's configuration keys (KRaft's names).

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Voter is one entry of controller.quorum.voters.
type Voter struct {
	ID   int32
	Addr string // host:port of its controller listener
}

// ParseVoters parses controller.quorum.voters ("1@host:port,2@host:port");
// empty is no quorum (a single node).
func ParseVoters(v string) ([]Voter, error) {
	var out []Voter
	for _, e := range SplitList(v) {
		idStr, addr, ok := strings.Cut(e, "@")
		id, err := strconv.Atoi(idStr)
		if !ok || err != nil || id < 0 || id > 1<<31-1 {
			return nil, fmt.Errorf("controller.quorum.voters entry %q: want ID@host:port with a non-negative node id", e)
		}
		if !isHostPort(addr) {
			return nil, fmt.Errorf("controller.quorum.voters entry %q: %q is not host:port", e, addr)
		}
		if slices.ContainsFunc(out, func(o Voter) bool { return o.ID == int32(id) }) {
			return nil, fmt.Errorf("controller.quorum.voters names node %d twice", id)
		}
		out = append(out, Voter{ID: int32(id), Addr: addr})
	}
	return out, nil
}

func quorumVoters(v string) error {
	_, err := ParseVoters(v)
	return err
}

// ParseBootstrapServers parses controller.quorum.bootstrap.servers
// ("host:port,host:port").
func ParseBootstrapServers(v string) ([]string, error) {
	out := SplitList(v)
	for _, e := range out {
		if !isHostPort(e) {
			return nil, fmt.Errorf("controller.quorum.bootstrap.servers entry %q is not host:port", e)
		}
	}
	return out, nil
}

// isHostPort reports whether addr is host:port with a host and a port
// from 1 to 65535.
func isHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	p, perr := strconv.Atoi(port)
	return err == nil && perr == nil && host != "" && p > 0 && p <= 65535
}

func bootstrapServers(v string) error {
	_, err := ParseBootstrapServers(v)
	return err
}

// Roles is process.roles.
type Roles struct{ Broker, Controller bool }

// ParseRoles parses process.roles: broker, controller or both.
func ParseRoles(v string) (Roles, error) {
	var r Roles
	for _, e := range strings.Split(v, ",") {
		switch strings.TrimSpace(e) {
		case "broker":
			r.Broker = true
		case "controller":
			r.Controller = true
		default:
			return r, fmt.Errorf("process.roles %q: roles are broker and controller", v)
		}
	}
	return r, nil
}

func processRoles(v string) error {
	_, err := ParseRoles(v)
	return err
}

// DerivedClusterID is the cluster id of a cluster whose nodes were not
// formatted with one (exactly format --cluster-id): every node computes the
// same id from controller.quorum.voters, so nodes started with `exactly
// serve` alone agree on it before they can talk. Two clusters with the same
// voters (the same addresses) get the same id; format gives each its own.
func DerivedClusterID(voters []Voter) string {
	vs := slices.Clone(voters)
	slices.SortFunc(vs, func(a, b Voter) int { return int(a.ID - b.ID) })
	h := sha256.New()
	h.Write([]byte("exactly cluster id\x00"))
	for _, v := range vs {
		fmt.Fprintf(h, "%d@%s,", v.ID, v.Addr)
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}
