package acl

import "slices"

// Index arranges bindings by the resources they can match, so a decision
// reads only the bindings that might apply — the literal name, the type's
// wildcard, and the prefixed patterns that are prefixes of the name —
// instead of every stored ACL: with thousands of ACLs a produce request
// checks each of its topics. An Index is immutable; build a new one when
// the bindings change.
type Index struct {
	all      []Binding
	byType   map[ResourceType][]Binding
	literal  map[resourceKey][]Binding
	wildcard map[ResourceType][]Binding
	prefixed map[resourceKey][]Binding
	// prefixLens are the distinct lengths of each type's prefixed
	// patterns, ascending: the only prefixes of a name worth looking up.
	prefixLens map[ResourceType][]int
}

type resourceKey struct {
	t    ResourceType
	name string
}

// NewIndex indexes bs, which it keeps and the caller must not modify.
func NewIndex(bs []Binding) *Index {
	x := &Index{all: bs, byType: map[ResourceType][]Binding{}, literal: map[resourceKey][]Binding{},
		wildcard: map[ResourceType][]Binding{}, prefixed: map[resourceKey][]Binding{}, prefixLens: map[ResourceType][]int{}}
	for _, b := range bs {
		x.byType[b.ResourceType] = append(x.byType[b.ResourceType], b)
		switch {
		case b.PatternType == PatternLiteral && b.ResourceName == Wildcard:
			x.wildcard[b.ResourceType] = append(x.wildcard[b.ResourceType], b)
		case b.PatternType == PatternLiteral:
			k := resourceKey{b.ResourceType, b.ResourceName}
			x.literal[k] = append(x.literal[k], b)
		case b.PatternType == PatternPrefixed:
			k := resourceKey{b.ResourceType, b.ResourceName}
			x.prefixed[k] = append(x.prefixed[k], b)
			if lens := x.prefixLens[b.ResourceType]; !slices.Contains(lens, len(b.ResourceName)) {
				x.prefixLens[b.ResourceType] = append(lens, len(b.ResourceName))
			}
		}
	}
	for _, lens := range x.prefixLens {
		slices.Sort(lens)
	}
	return x
}

// Bindings are the indexed bindings, as given.
func (x *Index) Bindings() []Binding {
	if x == nil {
		return nil
	}
	return x.all
}

// matching calls fn with every binding whose pattern applies to the named
// resource of type t, until fn returns false.
func (x *Index) matching(t ResourceType, name string, fn func(Binding) bool) {
	if x == nil {
		return
	}
	for _, b := range x.literal[resourceKey{t, name}] {
		if !fn(b) {
			return
		}
	}
	for _, b := range x.wildcard[t] {
		if !fn(b) {
			return
		}
	}
	for _, n := range x.prefixLens[t] {
		if n > len(name) {
			break
		}
		for _, b := range x.prefixed[resourceKey{t, name[:n]}] {
			if !fn(b) {
				return
			}
		}
	}
}

// ofType are the bindings on resources of type t.
func (x *Index) ofType(t ResourceType) []Binding {
	if x == nil {
		return nil
	}
	return x.byType[t]
}
