package acl

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// authorizeLinear is Authorize by a scan of every binding: the reference
// the index must agree with.
func authorizeLinear(a *Authorizer, bs []Binding, r Request) bool {
	if a.SuperUsers[r.Principal] {
		return true
	}
	any, allowed := false, false
	for _, b := range bs {
		if !resourceMatches(b, r.Type, r.Name) {
			continue
		}
		any = true
		if !principalMatches(b.Principal, r.Principal) || !hostMatches(b.Host, r.Host) {
			continue
		}
		if b.Permission == PermDeny && denyCovers(b.Operation, r.Op) {
			return false
		}
		if b.Permission == PermAllow && allowCovers(b.Operation, r.Op) {
			allowed = true
		}
	}
	if !any {
		return a.AllowIfNoACL
	}
	return allowed
}

// TestIndexAgreesWithScan: over random ACL sets (literal, wildcard and
// prefixed patterns with overlapping prefixes, both permissions, several
// principals and hosts) and random requests, the indexed decision is the
// one a scan of every binding gives.
func TestIndexAgreesWithScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"", "o", "or", "ord", "orders", "orders-eu", "logs", "logs-app", Wildcard}
	principals := []string{"User:alice", "User:bob", "User:*"}
	hosts := []string{Wildcard, "10.0.0.1", "10.0.0.2"}
	types := []ResourceType{ResourceTopic, ResourceGroup, ResourceTransactionalID}
	ops := []Operation{OpRead, OpWrite, OpDescribe, OpAlter, OpAlterConfigs, OpDescribeConfigs, OpDelete, OpAll}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	decisions := map[bool]int{}
	for round := range 300 {
		var bs []Binding
		for range rng.IntN(12) {
			pt := PatternLiteral
			if rng.IntN(3) == 0 {
				pt = PatternPrefixed
			}
			name := pick(names)
			if name == "" || (pt == PatternPrefixed && name == Wildcard) {
				name = "ord"
			}
			perm := PermAllow
			if rng.IntN(4) == 0 {
				perm = PermDeny
			}
			bs = append(bs, Binding{ResourceType: types[rng.IntN(len(types))], ResourceName: name, PatternType: pt,
				Principal: pick(principals), Host: pick(hosts), Operation: ops[rng.IntN(len(ops))], Permission: perm})
		}
		a := &Authorizer{AllowIfNoACL: rng.IntN(2) == 0, ACLs: NewIndex(bs)}
		for range 50 {
			r := Request{Principal: pick(principals[:2]), Host: pick(hosts[1:]), Op: ops[rng.IntN(len(ops)-1)],
				Type: types[rng.IntN(len(types))], Name: pick(names[:8])}
			got, want := a.Authorize(r), authorizeLinear(a, bs, r)
			if got != want {
				t.Fatalf("round %d: %+v over %v: index says %v, scan says %v", round, r, bs, got, want)
			}
			decisions[got]++
		}
	}
	if decisions[true] == 0 || decisions[false] == 0 {
		t.Fatalf("the random cases never decided both ways: %v", decisions)
	}
}

// BenchmarkAuthorize: one produce-path check (WRITE on a topic) among n
// stored ACLs — literal per-service grants, a few prefixed ones — indexed
// and, for comparison, by a scan of every binding.
func BenchmarkAuthorize(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		var bs []Binding
		for i := range n {
			pt, name := PatternLiteral, fmt.Sprintf("topic-%d", i)
			if i%50 == 0 {
				pt, name = PatternPrefixed, fmt.Sprintf("team-%d-", i)
			}
			bs = append(bs, Binding{ResourceType: ResourceTopic, ResourceName: name, PatternType: pt,
				Principal: fmt.Sprintf("User:svc-%d", i), Host: Wildcard, Operation: OpWrite, Permission: PermAllow})
		}
		a := &Authorizer{ACLs: NewIndex(bs)}
		r := Request{Principal: fmt.Sprintf("User:svc-%d", n-1), Host: "10.0.0.1", Op: OpWrite, Type: ResourceTopic, Name: fmt.Sprintf("topic-%d", n-1)}
		b.Run(fmt.Sprintf("indexed/acls=%d", n), func(b *testing.B) {
			for b.Loop() {
				if !a.Authorize(r) {
					b.Fatal("denied")
				}
			}
		})
		b.Run(fmt.Sprintf("scan/acls=%d", n), func(b *testing.B) {
			for b.Loop() {
				if !authorizeLinear(a, bs, r) {
					b.Fatal("denied")
				}
			}
		})
	}
}
