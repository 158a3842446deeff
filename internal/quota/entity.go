package quota

import (
	"fmt"
	"math"
	"strings"
)

// Quota keys (Kafka's QuotaConfig names).
const (
	ProducerByteRate       = "producer_byte_rate"
	ConsumerByteRate       = "consumer_byte_rate"
	RequestPercentage      = "request_percentage"
	ControllerMutationRate = "controller_mutation_rate"
)

// Entity types (Kafka's ClientQuotaEntity names).
const (
	TypeUser     = "user"
	TypeClientID = "client-id"
	TypeIP       = "ip"
)

// Anonymous is the user of a connection no listener authenticated
// (Kafka's principal for an unauthenticated connection).
const Anonymous = "ANONYMOUS"

// MaxNameLen bounds an entity name accepted by AlterClientQuotas, so a
// stored quota set stays small: every change rewrites the catalog.
const MaxNameLen = 1024

// MaxEntities bounds the entities with quotas stored.
const MaxEntities = 1000

// PartKind says whether an entity has a component of a type, and which.
type PartKind uint8

// Kinds of an entity component.
const (
	Absent  PartKind = iota // the entity has no component of this type
	Default                 // <default>: a null name on the wire
	Named                   // a specific name
)

// Part is one component of an entity.
type Part struct {
	Kind PartKind
	Name string // set when Kind is Named
}

// Name returns a named part.
func Name(n string) Part { return Part{Kind: Named, Name: n} }

// DefaultPart is the <default> part.
var DefaultPart = Part{Kind: Default}

// wire is the part's name as the protocol carries it (nil for <default>).
func (p Part) wire() *string {
	if p.Kind == Named {
		n := p.Name
		return &n
	}
	return nil
}

func (p Part) String() string {
	if p.Kind == Default {
		return "<default>"
	}
	return p.Name
}

// Entity is what a quota is set on: a user, a client id or both, each a
// name or the default. Comparable, so it keys maps.
type Entity struct {
	User     Part
	ClientID Part
}

// Component is one (type, name) pair as the protocol carries it; a nil
// Name is the default entity.
type Component struct {
	Type string
	Name *string
}

// Components is e in the protocol's form, user first.
func (e Entity) Components() []Component {
	var out []Component
	if e.User.Kind != Absent {
		out = append(out, Component{Type: TypeUser, Name: e.User.wire()})
	}
	if e.ClientID.Kind != Absent {
		out = append(out, Component{Type: TypeClientID, Name: e.ClientID.wire()})
	}
	return out
}

// String formats e like Kafka's ClientQuotaEntity, for error messages.
func (e Entity) String() string {
	var parts []string
	if e.User.Kind != Absent {
		parts = append(parts, TypeUser+"="+e.User.String())
	}
	if e.ClientID.Kind != Absent {
		parts = append(parts, TypeClientID+"="+e.ClientID.String())
	}
	return "ClientQuotaEntity(entries={" + strings.Join(parts, ", ") + "})"
}

// Error is a refused quota request; the broker answers INVALID_REQUEST
// with its text, or UNSUPPORTED_VERSION when Unsupported (Kafka's answer
// to an unknown entity type in DescribeClientQuotas).
type Error struct {
	Msg         string
	Unsupported bool
}

func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// ParseEntity checks an AlterClientQuotas entity the way Kafka's
// controller does and returns it.
func ParseEntity(cs []Component) (Entity, error) {
	var e Entity
	if len(cs) == 0 {
		return e, invalid("Invalid empty client quota entity")
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.Type] {
			return e, invalid("Invalid client quota entity, duplicate entity entry %s", c.Type)
		}
		seen[c.Type] = true
		p := DefaultPart
		if c.Name != nil {
			if *c.Name == "" {
				return e, invalid("Empty %s not supported", c.Type)
			}
			if len(*c.Name) > MaxNameLen {
				return e, invalid("%s name is %d bytes; this broker accepts at most %d", c.Type, len(*c.Name), MaxNameLen)
			}
			p = Name(*c.Name)
		}
		switch c.Type {
		case TypeUser:
			e.User = p
		case TypeClientID:
			e.ClientID = p
		case TypeIP:
			return e, invalid("Unhandled client quota entity type: %s (IP connection-rate quotas are not implemented by this broker)", c.Type)
		default:
			return e, invalid("Unhandled client quota entity type: %s", c.Type)
		}
	}
	return e, nil
}

// integral keys are Kafka LONG configs; the others are DOUBLE.
var keys = map[string]bool{
	ProducerByteRate:       true,
	ConsumerByteRate:       true,
	RequestPercentage:      false,
	ControllerMutationRate: false,
}

// ValidateValue checks one quota key and value as Kafka's controller does
// (plus: NaN and infinity, which Kafka would store, are refused).
func ValidateValue(key string, v float64) error {
	integral, ok := keys[key]
	if !ok {
		return invalid("Invalid configuration key %s", key)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return invalid("Quota %s must be a finite number", key)
	}
	if v <= 0 {
		return invalid("Quota %s must be greater than 0", key)
	}
	if integral {
		if v > math.MaxInt64 {
			return invalid("Proposed value for %s is too large for a LONG.", key)
		}
		if math.Abs(math.Mod(v, 1)) > 1e-6 {
			return invalid("%s cannot be a fractional value.", key)
		}
	}
	return nil
}

// ValidKey reports whether key is a client quota key.
func ValidKey(key string) bool { _, ok := keys[key]; return ok }

// Candidates lists, in Kafka's order of precedence, the entities whose
// quota would apply to a connection of user and clientID, each paired with
// the bucket its usage is counted in:
//
//  1. user=U, client-id=C          bucket (U, C)
//  2. user=U, client-id=<default>  bucket (U, C)
//  3. user=U                       bucket (U): shared by U's clients
//  4. user=<default>, client-id=C  bucket (U, C)
//  5. user=<default>, client-id=<default>  bucket (U, C)
//  6. user=<default>               bucket (U)
//  7. client-id=C                  bucket (C): shared by every user's C
//  8. client-id=<default>          bucket (C)
//
// The first entity that sets a key supplies that key's quota; keys are
// resolved independently, as Kafka's per-type quota managers do.
func Candidates(user, clientID string) [8]Match {
	u, c := Name(user), Name(clientID)
	both := Entity{User: u, ClientID: c}
	onlyUser := Entity{User: u}
	onlyClient := Entity{ClientID: c}
	return [8]Match{
		{Entity{User: u, ClientID: c}, both},
		{Entity{User: u, ClientID: DefaultPart}, both},
		{Entity{User: u}, onlyUser},
		{Entity{User: DefaultPart, ClientID: c}, both},
		{Entity{User: DefaultPart, ClientID: DefaultPart}, both},
		{Entity{User: DefaultPart}, onlyUser},
		{Entity{ClientID: c}, onlyClient},
		{Entity{ClientID: DefaultPart}, onlyClient},
	}
}

// Match pairs a configured entity with the bucket it meters.
type Match struct {
	Entity Entity
	Bucket Entity
}
