package broker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/share"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config resource types (DescribeConfigs, AlterConfigs).
const (
	resourceTopic        = 2
	resourceBroker       = 4
	resourceBrokerLogger = 8
)

// describeTopicConfigs lists a topic's effective configs; names nil = all.
func (b *Broker) describeTopicConfigs(t *cluster.Topic, names []string, synonyms, docs bool) []kmsg.DescribeConfigsResponseResourceConfig {
	want := nameSet(names)
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, d := range cluster.TopicConfigDefs() {
		if want != nil && !want[d.Name] {
			continue
		}
		v, src := b.catalog.TopicConfig(t, d.Name)
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name = d.Name
		c.Value = kmsg.StringPtr(v)
		c.Source = kmsg.ConfigSource(src)
		c.IsDefault = src == cluster.SourceDefault
		c.ConfigType = kmsg.ConfigType(d.Type)
		if docs && !d.Effective {
			c.Documentation = kmsg.StringPtr("accepted for compatibility; has no effect on this single-node broker")
		}
		if synonyms {
			if tv, ok := t.Configs[d.Name]; ok {
				c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.Name, tv, cluster.SourceDynamicTopic))
			}
			if d.BrokerKey != "" {
				if bv, bsrc := b.catalog.BrokerConfig(d.BrokerKey); bsrc != cluster.SourceDefault {
					c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.BrokerKey, bv, bsrc))
				}
			}
			c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.Name, d.Default, cluster.SourceDefault))
		}
		out = append(out, c)
	}
	return out
}

func synonym(name, value string, src cluster.ConfigSource) kmsg.DescribeConfigsResponseResourceConfigConfigSynonym {
	s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
	s.Name, s.Value, s.Source = name, kmsg.StringPtr(value), kmsg.ConfigSource(src)
	return s
}

// describeBrokerConfigs lists the broker's effective configs.
func (b *Broker) describeBrokerConfigs(names []string, synonyms bool) []kmsg.DescribeConfigsResponseResourceConfig {
	want := nameSet(names)
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, d := range cluster.BrokerConfigDefs() {
		if want != nil && !want[d.Name] {
			continue
		}
		v, src := b.catalog.BrokerConfig(d.Name)
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name = d.Name
		c.Value = kmsg.StringPtr(v)
		c.Source = kmsg.ConfigSource(src)
		c.IsDefault = src == cluster.SourceDefault
		c.ReadOnly = !d.Dynamic
		c.ConfigType = kmsg.ConfigType(d.Type)
		if synonyms {
			c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.Name, v, src))
		}
		out = append(out, c)
	}
	return out
}

func nameSet(names []string) map[string]bool {
	if names == nil {
		return nil
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// checkBrokerResource accepts "" (cluster-wide default) or this node's ID.
func (b *Broker) checkBrokerResource(name string) error {
	if name == "" || name == strconv.Itoa(int(b.cfg.NodeID)) {
		return nil
	}
	return &kerrError{kerr.InvalidRequest, fmt.Sprintf("unknown broker %q (this node is %d)", name, b.cfg.NodeID)}
}

// configOp is one change from AlterConfigs or IncrementalAlterConfigs.
type configOp struct {
	name  string
	op    int8 // 0 set, 1 delete, 2 append, 3 subtract
	value *string
}

// applyConfigOps computes a new override map from ops.
func applyConfigOps(cur map[string]string, ops []configOp, isList func(string) bool) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range cur {
		out[k] = v
	}
	for _, o := range ops {
		switch o.op {
		case 0:
			if o.value == nil {
				return nil, &kerrError{kerr.InvalidConfig, fmt.Sprintf("null value for %s", o.name)}
			}
			out[o.name] = *o.value
		case 1:
			delete(out, o.name)
		case 2, 3:
			if !isList(o.name) {
				return nil, &kerrError{kerr.InvalidConfig, fmt.Sprintf("%s is not a list config; APPEND and SUBTRACT apply to lists only", o.name)}
			}
			if o.value == nil {
				return nil, &kerrError{kerr.InvalidConfig, fmt.Sprintf("null value for %s", o.name)}
			}
			items := cluster.SplitList(out[o.name])
			if o.op == 2 {
				for _, v := range cluster.SplitList(*o.value) {
					if !contains(items, v) {
						items = append(items, v)
					}
				}
			} else {
				var kept []string
				for _, v := range items {
					if !contains(cluster.SplitList(*o.value), v) {
						kept = append(kept, v)
					}
				}
				items = kept
			}
			out[o.name] = strings.Join(items, ",")
		default:
			return nil, &kerrError{kerr.InvalidRequest, fmt.Sprintf("unknown config operation %d", o.op)}
		}
	}
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// refuseReadOnly names every read-only broker key ops touch, as Kafka does
// (INVALID_REQUEST "Cannot update these configs dynamically: [...]").
func refuseReadOnly(ops []configOp) error {
	var ro []string
	for _, o := range ops {
		if d, ok := cluster.LookupBrokerConfig(o.name); ok && !d.Dynamic && !contains(ro, o.name) {
			ro = append(ro, o.name)
		}
	}
	if len(ro) > 0 {
		return fmt.Errorf("%w: %v", cluster.ErrReadOnlyConfig, ro)
	}
	return nil
}

// configResource is one resource of an AlterConfigs or
// IncrementalAlterConfigs request.
type configResource struct {
	typ  int8
	name string
	ops  []configOp
}

// alterConfigResources authorizes and applies each resource of an
// AlterConfigs (replace) or IncrementalAlterConfigs request and returns
// each one's error, in order. GROUP resources this node does not keep go
// to forward together, by their indexes in rs.
func (b *Broker) alterConfigResources(r *server.Request, rs []configResource, replace, validateOnly bool, forward func(at []int) []forwardedAnswer) []error {
	errs := make([]error, len(rs))
	var at []int
	for i, c := range rs {
		err := b.configsAuthorized(r, acl.OpAlterConfigs, c.typ, c.name)
		switch {
		case err != nil:
		case c.typ == resourceGroup && b.groupConfigsElsewhere(r):
			at = append(at, i)
		default:
			err = b.alterConfigs(c.typ, c.name, c.ops, replace, validateOnly)
		}
		errs[i] = err
	}
	if len(at) > 0 {
		for k, a := range forward(at) {
			errs[at[k]] = a.err
		}
	}
	return errs
}

// alterConfigs applies ops to one resource; validateOnly checks only.
func (b *Broker) alterConfigs(resType int8, name string, ops []configOp, replace, validateOnly bool) error {
	switch resType {
	case resourceTopic:
		b.adminMu.Lock()
		defer b.adminMu.Unlock()
		t, ok := b.catalog.Topic(name)
		if !ok {
			return fmt.Errorf("%w: %q", cluster.ErrUnknownTopic, name)
		}
		// The coordinators set their logs' configs (retention off: they
		// compact themselves); a retention a client sets would delete
		// their only record of a group or transactional id.
		if err := refuseInternal(t); err != nil {
			return err
		}
		cur := t.Configs
		if replace {
			cur = nil
		}
		next, err := applyConfigOps(cur, ops, func(k string) bool {
			d, ok := cluster.LookupTopicConfig(k)
			return ok && d.Type == cluster.TypeList
		})
		if err != nil {
			return err
		}
		for k, v := range next {
			if err := cluster.ValidateTopicConfig(k, v); err != nil {
				return fmt.Errorf("%w: %v", cluster.ErrInvalidConfig, err)
			}
		}
		if validateOnly {
			return nil
		}
		nt, err := b.catalog.SetTopicConfigs(name, next)
		if err != nil {
			return err
		}
		b.applyTopicConfig(nt)
		return nil
	case resourceBroker:
		if err := b.checkBrokerResource(name); err != nil {
			return err
		}
		if err := refuseReadOnly(ops); err != nil {
			return err
		}
		b.adminMu.Lock()
		defer b.adminMu.Unlock()
		cur := b.catalog.BrokerDynamic()
		if replace {
			cur = nil
		}
		next, err := applyConfigOps(cur, ops, func(k string) bool {
			d, ok := cluster.LookupBrokerConfig(k)
			return ok && d.Type == cluster.TypeList
		})
		if err != nil {
			return err
		}
		if validateOnly {
			for k, v := range next {
				if _, ok := cluster.LookupBrokerConfig(k); !ok {
					return fmt.Errorf("%w: unknown broker config %q", cluster.ErrInvalidConfig, k)
				}
				if err := cluster.ValidateBrokerConfig(k, v); err != nil {
					return fmt.Errorf("%w: %v", cluster.ErrInvalidConfig, err)
				}
			}
			return nil
		}
		if err := b.catalog.SetBrokerDynamic(next); err != nil {
			return err
		}
		b.applyAllTopicConfigs()
		return nil
	case resourceBrokerLogger:
		return &kerrError{kerr.InvalidRequest, "broker logger configs are not supported"}
	case resourceGroup:
		sops := make([]share.ConfigOp, len(ops))
		for i, o := range ops {
			sops[i] = share.ConfigOp{Name: o.name, Op: o.op, Value: o.value}
		}
		if !b.hosting() {
			return errGroupConfigsNotHere
		}
		return groupConfigErr(b.coords().share.AlterGroupConfigs(name, sops, replace, validateOnly))
	default:
		return &kerrError{kerr.InvalidRequest, fmt.Sprintf("unsupported resource type %d", resType)}
	}
}
