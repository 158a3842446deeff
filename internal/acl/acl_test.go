package acl

import "testing"

func allow(t ResourceType, name string, pt PatternType, principal string, op Operation) Binding {
	return Binding{ResourceType: t, ResourceName: name, PatternType: pt, Principal: principal, Host: Wildcard, Operation: op, Permission: PermAllow}
}

func deny(b Binding) Binding { b.Permission = PermDeny; return b }

func TestAuthorize(t *testing.T) {
	alice, bob := "User:alice", "User:bob"
	topicW := allow(ResourceTopic, "orders", PatternLiteral, alice, OpWrite)
	prefixR := allow(ResourceTopic, "logs-", PatternPrefixed, alice, OpRead)
	wildR := allow(ResourceTopic, Wildcard, PatternLiteral, "User:*", OpRead)
	hostOnly := topicW
	hostOnly.Host = "10.0.0.1"
	for _, tc := range []struct {
		name string
		a    Authorizer
		r    Request
		want bool
	}{
		{"no acls, default denies", Authorizer{}, Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "t"}, false},
		{"no acls, allow.everyone", Authorizer{AllowIfNoACL: true}, Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "t"}, true},
		{"acl on resource for someone else", Authorizer{AllowIfNoACL: true, ACLs: NewIndex([]Binding{topicW})},
			Request{Principal: bob, Op: OpWrite, Type: ResourceTopic, Name: "orders"}, false},
		{"literal allow", Authorizer{ACLs: NewIndex([]Binding{topicW})}, Request{Principal: alice, Op: OpWrite, Type: ResourceTopic, Name: "orders"}, true},
		{"literal other name", Authorizer{ACLs: NewIndex([]Binding{topicW})}, Request{Principal: alice, Op: OpWrite, Type: ResourceTopic, Name: "orders2"}, false},
		{"write implies describe", Authorizer{ACLs: NewIndex([]Binding{topicW})}, Request{Principal: alice, Op: OpDescribe, Type: ResourceTopic, Name: "orders"}, true},
		{"write does not imply read", Authorizer{ACLs: NewIndex([]Binding{topicW})}, Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "orders"}, false},
		{"alter_configs implies describe_configs", Authorizer{ACLs: NewIndex([]Binding{allow(ResourceTopic, "t", PatternLiteral, alice, OpAlterConfigs)})},
			Request{Principal: alice, Op: OpDescribeConfigs, Type: ResourceTopic, Name: "t"}, true},
		{"prefixed", Authorizer{ACLs: NewIndex([]Binding{prefixR})}, Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "logs-app"}, true},
		{"prefixed miss", Authorizer{ACLs: NewIndex([]Binding{prefixR})}, Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "log"}, false},
		{"wildcard resource and principal", Authorizer{ACLs: NewIndex([]Binding{wildR})}, Request{Principal: bob, Op: OpRead, Type: ResourceTopic, Name: "x"}, true},
		{"deny wins over allow", Authorizer{ACLs: NewIndex([]Binding{wildR, deny(allow(ResourceTopic, "secret", PatternLiteral, bob, OpRead))})},
			Request{Principal: bob, Op: OpRead, Type: ResourceTopic, Name: "secret"}, false},
		{"deny all wins", Authorizer{ACLs: NewIndex([]Binding{topicW, deny(allow(ResourceTopic, "ord", PatternPrefixed, alice, OpAll))})},
			Request{Principal: alice, Op: OpWrite, Type: ResourceTopic, Name: "orders"}, false},
		{"deny read does not deny describe", Authorizer{ACLs: NewIndex([]Binding{topicW, deny(allow(ResourceTopic, "orders", PatternLiteral, alice, OpRead))})},
			Request{Principal: alice, Op: OpDescribe, Type: ResourceTopic, Name: "orders"}, true},
		{"allow all", Authorizer{ACLs: NewIndex([]Binding{allow(ResourceGroup, "g", PatternLiteral, alice, OpAll)})},
			Request{Principal: alice, Op: OpDelete, Type: ResourceGroup, Name: "g"}, true},
		{"type must match", Authorizer{ACLs: NewIndex([]Binding{allow(ResourceGroup, "orders", PatternLiteral, alice, OpAll)})},
			Request{Principal: alice, Op: OpRead, Type: ResourceTopic, Name: "orders"}, false},
		{"super user", Authorizer{SuperUsers: ParseSuperUsers("User:admin; User:ops"), ACLs: NewIndex([]Binding{deny(topicW)})},
			Request{Principal: "User:ops", Op: OpWrite, Type: ResourceTopic, Name: "orders"}, true},
		{"host matches", Authorizer{ACLs: NewIndex([]Binding{hostOnly})}, Request{Principal: alice, Host: "10.0.0.1", Op: OpWrite, Type: ResourceTopic, Name: "orders"}, true},
		{"host differs", Authorizer{ACLs: NewIndex([]Binding{hostOnly})}, Request{Principal: alice, Host: "10.0.0.2", Op: OpWrite, Type: ResourceTopic, Name: "orders"}, false},
	} {
		if got := tc.a.Authorize(tc.r); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAuthorizeAny(t *testing.T) {
	a := Authorizer{ACLs: NewIndex([]Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite)})}
	if !a.AuthorizeAny(Request{Principal: "User:alice", Op: OpWrite, Type: ResourceTopic}) {
		t.Fatal("alice may write a topic")
	}
	if a.AuthorizeAny(Request{Principal: "User:bob", Op: OpWrite, Type: ResourceTopic}) {
		t.Fatal("bob may write none")
	}
	a.ACLs = NewIndex(append(a.ACLs.Bindings(), deny(allow(ResourceTopic, Wildcard, PatternLiteral, "User:alice", OpWrite))))
	if a.AuthorizeAny(Request{Principal: "User:alice", Op: OpWrite, Type: ResourceTopic}) {
		t.Fatal("a wildcard DENY refuses")
	}
}

func TestFilterMatches(t *testing.T) {
	s := func(v string) *string { return &v }
	lit := allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite)
	pre := deny(allow(ResourceTopic, "ord", PatternPrefixed, "User:mallory", OpAll))
	wild := allow(ResourceTopic, Wildcard, PatternLiteral, "User:*", OpRead)
	grp := allow(ResourceGroup, "orders", PatternLiteral, "User:alice", OpRead)
	all := []Binding{lit, pre, wild, grp}
	anyF := Filter{ResourceType: ResourceAny, PatternType: PatternAny, Operation: OpAny, Permission: PermAny}
	for _, tc := range []struct {
		name string
		f    func(Filter) Filter
		want []Binding
	}{
		{"any", func(f Filter) Filter { return f }, all},
		{"topic", func(f Filter) Filter { f.ResourceType = ResourceTopic; return f }, []Binding{lit, pre, wild}},
		{"match orders", func(f Filter) Filter {
			f.ResourceType, f.PatternType, f.ResourceName = ResourceTopic, PatternMatch, s("orders")
			return f
		},
			[]Binding{lit, pre, wild}},
		{"match other", func(f Filter) Filter {
			f.ResourceType, f.PatternType, f.ResourceName = ResourceTopic, PatternMatch, s("x")
			return f
		},
			[]Binding{wild}},
		{"literal orders", func(f Filter) Filter { f.PatternType, f.ResourceName = PatternLiteral, s("orders"); return f }, []Binding{lit, grp}},
		{"any name ord", func(f Filter) Filter { f.ResourceName = s("ord"); return f }, []Binding{pre}},
		{"prefixed", func(f Filter) Filter { f.PatternType = PatternPrefixed; return f }, []Binding{pre}},
		{"principal", func(f Filter) Filter { f.Principal = s("User:alice"); return f }, []Binding{lit, grp}},
		{"deny", func(f Filter) Filter { f.Permission = PermDeny; return f }, []Binding{pre}},
		{"operation read", func(f Filter) Filter { f.Operation = OpRead; return f }, []Binding{wild, grp}},
		{"host", func(f Filter) Filter { f.Host = s("10.0.0.1"); return f }, nil},
	} {
		f := tc.f(anyF)
		var got []Binding
		for _, b := range all {
			if f.Matches(b) {
				got = append(got, b)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	ok := allow(ResourceTopic, "t", PatternLiteral, "User:a", OpRead)
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	// A group's configs (KIP-848) are guarded on the group itself.
	for _, op := range []Operation{OpDescribeConfigs, OpAlterConfigs} {
		if err := allow(ResourceGroup, "g", PatternLiteral, "User:a", op).Validate(); err != nil {
			t.Errorf("group %v: %v", op, err)
		}
	}
	if allow(ResourceGroup, "g", PatternLiteral, "User:a", OpWrite).Validate() == nil {
		t.Error("accepted WRITE on a group")
	}
	for name, mut := range map[string]func(*Binding){
		"any type":          func(b *Binding) { b.ResourceType = ResourceAny },
		"match pattern":     func(b *Binding) { b.PatternType = PatternMatch },
		"empty name":        func(b *Binding) { b.ResourceName = "" },
		"prefixed wildcard": func(b *Binding) { b.PatternType, b.ResourceName = PatternPrefixed, Wildcard },
		"bad principal":     func(b *Binding) { b.Principal = "alice" },
		"group principal":   func(b *Binding) { b.Principal = "Group:x" },
		"bad host":          func(b *Binding) { b.Host = "example.com" },
		"op any":            func(b *Binding) { b.Operation = OpAny },
		"op for type":       func(b *Binding) { b.Operation = OpIdempotentWrite },
		"perm any":          func(b *Binding) { b.Permission = PermAny },
		"cluster name":      func(b *Binding) { b.ResourceType, b.Operation = ResourceCluster, OpAlter },
	} {
		b := ok
		mut(&b)
		if b.Validate() == nil {
			t.Errorf("%s: accepted %v", name, b)
		}
	}
}
