// Package acl is the authorization model, with Kafka's semantics: ACL
// bindings (a resource pattern plus a principal, host, operation and
// permission), the decision for one request (super users, DENY before
// ALLOW, implied operations, allow.everyone.if.no.acl.found) and the
// filters of DescribeAcls and DeleteAcls. It is pure: no I/O, no locks.
package acl

import (
	"fmt"
	"net"
	"strings"
)

// ResourceType is what an ACL protects, with Kafka's wire codes.
type ResourceType int8

// Resource types (ANY only in filters).
const (
	ResourceAny             ResourceType = 1
	ResourceTopic           ResourceType = 2
	ResourceGroup           ResourceType = 3
	ResourceCluster         ResourceType = 4
	ResourceTransactionalID ResourceType = 5
)

// PatternType says how an ACL's resource name matches.
type PatternType int8

// Pattern types (ANY and MATCH only in filters).
const (
	PatternAny      PatternType = 1
	PatternMatch    PatternType = 2
	PatternLiteral  PatternType = 3
	PatternPrefixed PatternType = 4
)

// Operation is what a principal does to a resource.
type Operation int8

// Operations, Kafka's codes (ANY only in filters).
const (
	OpAny             Operation = 1
	OpAll             Operation = 2
	OpRead            Operation = 3
	OpWrite           Operation = 4
	OpCreate          Operation = 5
	OpDelete          Operation = 6
	OpAlter           Operation = 7
	OpDescribe        Operation = 8
	OpClusterAction   Operation = 9
	OpDescribeConfigs Operation = 10
	OpAlterConfigs    Operation = 11
	OpIdempotentWrite Operation = 12
)

// Permission is ALLOW or DENY.
type Permission int8

// Permissions (ANY only in filters).
const (
	PermAny   Permission = 1
	PermDeny  Permission = 2
	PermAllow Permission = 3
)

// Wildcard is the literal resource name, principal name and host that
// match everything.
const Wildcard = "*"

// ClusterName is the name of the one CLUSTER resource.
const ClusterName = "kafka-cluster"

var (
	resourceNames = map[ResourceType]string{ResourceAny: "ANY", ResourceTopic: "TOPIC", ResourceGroup: "GROUP",
		ResourceCluster: "CLUSTER", ResourceTransactionalID: "TRANSACTIONAL_ID"}
	patternNames = map[PatternType]string{PatternAny: "ANY", PatternMatch: "MATCH", PatternLiteral: "LITERAL", PatternPrefixed: "PREFIXED"}
	opNames      = map[Operation]string{OpAny: "ANY", OpAll: "ALL", OpRead: "READ", OpWrite: "WRITE", OpCreate: "CREATE",
		OpDelete: "DELETE", OpAlter: "ALTER", OpDescribe: "DESCRIBE", OpClusterAction: "CLUSTER_ACTION",
		OpDescribeConfigs: "DESCRIBE_CONFIGS", OpAlterConfigs: "ALTER_CONFIGS", OpIdempotentWrite: "IDEMPOTENT_WRITE"}
	permNames = map[Permission]string{PermAny: "ANY", PermDeny: "DENY", PermAllow: "ALLOW"}
)

func (t ResourceType) String() string { return nameOr(resourceNames, t) }
func (p PatternType) String() string  { return nameOr(patternNames, p) }
func (o Operation) String() string    { return nameOr(opNames, o) }
func (p Permission) String() string   { return nameOr(permNames, p) }

func nameOr[K ~int8](m map[K]string, k K) string {
	if s, ok := m[k]; ok {
		return s
	}
	return fmt.Sprintf("UNKNOWN(%d)", k)
}

// Binding is one stored ACL.
type Binding struct {
	ResourceType ResourceType `json:"resource_type"`
	ResourceName string       `json:"resource_name"`
	PatternType  PatternType  `json:"pattern_type"`
	Principal    string       `json:"principal"`
	Host         string       `json:"host"`
	Operation    Operation    `json:"operation"`
	Permission   Permission   `json:"permission"`
}

func (b Binding) String() string {
	return fmt.Sprintf("(%s:%s:%s, %s from %s %s %s)", b.ResourceType, b.PatternType, b.ResourceName,
		b.Principal, b.Host, b.Permission, b.Operation)
}

// Validate reports why b cannot be stored, as Kafka's CreateAcls
// refuses it (INVALID_REQUEST).
func (b Binding) Validate() error {
	switch b.ResourceType {
	case ResourceTopic, ResourceGroup, ResourceCluster, ResourceTransactionalID:
	default:
		return fmt.Errorf("invalid resource type %s", b.ResourceType)
	}
	switch b.PatternType {
	case PatternLiteral, PatternPrefixed:
	default:
		return fmt.Errorf("invalid pattern type %s", b.PatternType)
	}
	if b.ResourceName == "" {
		return fmt.Errorf("resource name must not be empty")
	}
	if b.PatternType == PatternPrefixed && b.ResourceName == Wildcard {
		return fmt.Errorf("a PREFIXED pattern cannot be the wildcard %q", Wildcard)
	}
	if b.ResourceType == ResourceCluster && (b.ResourceName != ClusterName || b.PatternType != PatternLiteral) {
		return fmt.Errorf("the cluster resource is the literal %q", ClusterName)
	}
	if _, ok := opNames[b.Operation]; !ok || b.Operation == OpAny {
		return fmt.Errorf("invalid operation %s", b.Operation)
	}
	if !validFor(b.ResourceType, b.Operation) {
		return fmt.Errorf("operation %s does not apply to %s", b.Operation, b.ResourceType)
	}
	if b.Permission != PermAllow && b.Permission != PermDeny {
		return fmt.Errorf("invalid permission %s", b.Permission)
	}
	if err := validPrincipal(b.Principal); err != nil {
		return err
	}
	if b.Host != Wildcard && net.ParseIP(b.Host) == nil {
		return fmt.Errorf("host %q is neither %q nor an IP address", b.Host, Wildcard)
	}
	return nil
}

// validOps are the operations each resource type has (Kafka's
// AclEntry.supportedOperations); ALL applies to every type.
var validOps = map[ResourceType][]Operation{
	ResourceTopic:           {OpRead, OpWrite, OpCreate, OpDescribe, OpDelete, OpAlter, OpDescribeConfigs, OpAlterConfigs},
	ResourceGroup:           {OpRead, OpDescribe, OpDelete, OpDescribeConfigs, OpAlterConfigs},
	ResourceCluster:         {OpCreate, OpClusterAction, OpDescribeConfigs, OpAlterConfigs, OpIdempotentWrite, OpAlter, OpDescribe},
	ResourceTransactionalID: {OpDescribe, OpWrite},
}

func validFor(t ResourceType, op Operation) bool {
	if op == OpAll {
		return true
	}
	for _, o := range validOps[t] {
		if o == op {
			return true
		}
	}
	return false
}

func validPrincipal(p string) error {
	typ, name, ok := strings.Cut(p, ":")
	if !ok || typ == "" || name == "" {
		return fmt.Errorf("principal %q: expected Type:name, e.g. User:alice", p)
	}
	if typ != "User" {
		return fmt.Errorf("principal %q: only User principals exist here", p)
	}
	return nil
}

// Request is one question: may principal, connected from host, perform
// op on the resource?
type Request struct {
	Principal string // "User:alice"
	Host      string // the client's IP
	Op        Operation
	Type      ResourceType
	Name      string
}

// Authorizer decides requests against a set of bindings.
type Authorizer struct {
	// SuperUsers are principals allowed everything.
	SuperUsers map[string]bool
	// AllowIfNoACL allows a request when no ACL matches its resource
	// (allow.everyone.if.no.acl.found).
	AllowIfNoACL bool
	// ACLs are the stored ACLs, indexed (nil: none).
	ACLs *Index
}

// ParseSuperUsers reads super.users: principals separated by ';'.
func ParseSuperUsers(s string) map[string]bool {
	out := map[string]bool{}
	for _, p := range strings.Split(s, ";") {
		if p = strings.TrimSpace(p); p != "" {
			out[p] = true
		}
	}
	return out
}

// Authorize decides r, in Kafka's order: super users are allowed; with
// no ACL on the resource at all, AllowIfNoACL decides; a matching DENY
// refuses; a matching ALLOW (directly or through an implied operation)
// allows; anything else is refused.
func (a *Authorizer) Authorize(r Request) bool {
	if a.SuperUsers[r.Principal] {
		return true
	}
	any, allowed, denied := false, false, false
	a.ACLs.matching(r.Type, r.Name, func(b Binding) bool {
		any = true
		if !principalMatches(b.Principal, r.Principal) || !hostMatches(b.Host, r.Host) {
			return true
		}
		if b.Permission == PermDeny && denyCovers(b.Operation, r.Op) {
			denied = true
			return false
		}
		if b.Permission == PermAllow && allowCovers(b.Operation, r.Op) {
			allowed = true
		}
		return true
	})
	switch {
	case denied:
		return false
	case !any:
		return a.AllowIfNoACL
	}
	return allowed
}

// AuthorizeAny reports whether r.Principal may perform r.Op on at least
// one resource of r.Type (Kafka's authorizeByResourceType, used by
// idempotent InitProducerId: WRITE on any topic). r.Name is ignored.
// Simplified from Kafka: an ALLOW on any resource of the type suffices
// unless a DENY on the type's wildcard refuses it.
func (a *Authorizer) AuthorizeAny(r Request) bool {
	if a.SuperUsers[r.Principal] {
		return true
	}
	allowed := false
	for _, b := range a.ACLs.ofType(r.Type) {
		if !principalMatches(b.Principal, r.Principal) || !hostMatches(b.Host, r.Host) {
			continue
		}
		if b.Permission == PermDeny && denyCovers(b.Operation, r.Op) && b.PatternType == PatternLiteral && b.ResourceName == Wildcard {
			return false
		}
		if b.Permission == PermAllow && allowCovers(b.Operation, r.Op) {
			allowed = true
		}
	}
	return allowed
}

// resourceMatches reports whether binding b's pattern applies to the
// named resource of type t.
func resourceMatches(b Binding, t ResourceType, name string) bool {
	if b.ResourceType != t {
		return false
	}
	switch b.PatternType {
	case PatternLiteral:
		return b.ResourceName == Wildcard || b.ResourceName == name
	case PatternPrefixed:
		return strings.HasPrefix(name, b.ResourceName)
	}
	return false
}

func principalMatches(acl, p string) bool { return acl == p || acl == "User:"+Wildcard }

func hostMatches(acl, host string) bool {
	if acl == Wildcard || acl == host {
		return true
	}
	a, h := net.ParseIP(acl), net.ParseIP(host)
	return a != nil && h != nil && a.Equal(h)
}

// denyCovers: a DENY refuses only the operation it names (or ALL).
func denyCovers(acl, op Operation) bool { return acl == OpAll || acl == op }

// allowCovers: an ALLOW grants its operation, what it implies, or all.
func allowCovers(acl, op Operation) bool {
	if acl == OpAll || acl == op {
		return true
	}
	switch op {
	case OpDescribe:
		return acl == OpRead || acl == OpWrite || acl == OpDelete || acl == OpAlter
	case OpDescribeConfigs:
		return acl == OpAlterConfigs
	}
	return false
}

// Filter selects bindings for DescribeAcls and DeleteAcls. Empty
// strings (a null on the wire) match anything; ANY matches any value.
type Filter struct {
	ResourceType ResourceType
	ResourceName *string
	PatternType  PatternType
	Principal    *string
	Host         *string
	Operation    Operation
	Permission   Permission
}

// Validate reports why f is not a filter Kafka accepts.
func (f Filter) Validate() error {
	if _, ok := resourceNames[f.ResourceType]; !ok {
		return fmt.Errorf("invalid resource type %s", f.ResourceType)
	}
	if _, ok := patternNames[f.PatternType]; !ok {
		return fmt.Errorf("invalid pattern type %s", f.PatternType)
	}
	if _, ok := opNames[f.Operation]; !ok {
		return fmt.Errorf("invalid operation %s", f.Operation)
	}
	if _, ok := permNames[f.Permission]; !ok {
		return fmt.Errorf("invalid permission %s", f.Permission)
	}
	return nil
}

// Matches reports whether f selects b. MATCH selects every LITERAL or
// PREFIXED binding that applies to the filter's name (the name itself,
// the wildcard, and prefixes of it); with no name it matches any.
func (f Filter) Matches(b Binding) bool {
	if f.ResourceType != ResourceAny && f.ResourceType != b.ResourceType {
		return false
	}
	if f.Operation != OpAny && f.Operation != b.Operation {
		return false
	}
	if f.Permission != PermAny && f.Permission != b.Permission {
		return false
	}
	if f.Principal != nil && *f.Principal != b.Principal {
		return false
	}
	if f.Host != nil && *f.Host != b.Host {
		return false
	}
	switch f.PatternType {
	case PatternAny:
		return f.ResourceName == nil || *f.ResourceName == b.ResourceName
	case PatternMatch:
		if f.ResourceName == nil {
			return true
		}
		return resourceMatches(b, b.ResourceType, *f.ResourceName)
	default:
		return f.PatternType == b.PatternType && (f.ResourceName == nil || *f.ResourceName == b.ResourceName)
	}
}
