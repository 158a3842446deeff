package quota

// Match types of a DescribeClientQuotas filter component.
const (
	MatchExact     int8 = 0 // the named entity
	MatchDefault   int8 = 1 // the <default> entity
	MatchSpecified int8 = 2 // any entity of the type, named or default
)

// FilterComponent is one component of a DescribeClientQuotas filter.
type FilterComponent struct {
	Type      string
	MatchType int8
	Match     *string
}

// Filter selects entities for DescribeClientQuotas.
type Filter struct {
	exact  map[string]Part // type → the part it must have
	any    map[string]bool // types the entity must have
	strict bool            // no other types allowed
	ip     bool            // filters on ip: matches nothing stored here
}

// ParseFilter checks a DescribeClientQuotas filter the way Kafka does.
func ParseFilter(cs []FilterComponent, strict bool) (Filter, error) {
	f := Filter{exact: map[string]Part{}, any: map[string]bool{}, strict: strict}
	for _, c := range cs {
		if c.Type == "" {
			return f, invalid("Invalid empty entity type.")
		}
		if _, dup := f.exact[c.Type]; dup || f.any[c.Type] {
			return f, invalid("Entity type %s cannot appear more than once in the filter.", c.Type)
		}
		if c.Type != TypeUser && c.Type != TypeClientID && c.Type != TypeIP {
			return f, &Error{Msg: "Unsupported entity type " + c.Type, Unsupported: true}
		}
		switch c.MatchType {
		case MatchExact:
			if c.Match == nil {
				return f, invalid("Request specified MATCH_TYPE_EXACT, but set match string to null.")
			}
			f.exact[c.Type] = Name(*c.Match)
		case MatchDefault:
			if c.Match != nil {
				return f, invalid("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
			}
			f.exact[c.Type] = DefaultPart
		case MatchSpecified:
			if c.Match != nil {
				return f, invalid("Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
			}
			f.any[c.Type] = true
		default:
			return f, invalid("Unknown match type %d", c.MatchType)
		}
	}
	_, ipExact := f.exact[TypeIP]
	f.ip = ipExact || f.any[TypeIP]
	if f.ip && len(f.exact)+len(f.any) > 1 {
		return f, invalid("Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.")
	}
	return f, nil
}

// Matches reports whether e is selected.
func (f Filter) Matches(e Entity) bool {
	if f.ip {
		return false // IP quotas are never stored here
	}
	parts := map[string]Part{TypeUser: e.User, TypeClientID: e.ClientID}
	if f.strict {
		n := 0
		for _, p := range parts {
			if p.Kind != Absent {
				n++
			}
		}
		if n != len(f.exact)+len(f.any) {
			return false
		}
	}
	for typ, want := range f.exact {
		if parts[typ] != want {
			return false
		}
	}
	for typ := range f.any {
		if parts[typ].Kind == Absent {
			return false
		}
	}
	return true
}
