package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ACLCommand returns the "acl" command group: create, list and delete
// ACLs (CreateAcls / DescribeAcls / DeleteAcls) in kafka-acls.sh's shape.
func ACLCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Create, list and delete ACLs",
		Long: `Create, list and delete ACLs, in kafka-acls.sh's shape. Every combination
of principal, host, resource and operation given is one ACL (or one filter).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(aclCreateCommand(f), aclListCommand(f), aclDeleteCommand(f))
	return cmd
}

// aclFlags select principals, hosts, resources, operations and pattern.
type aclFlags struct {
	allow, deny, principals []string
	hosts                   []string
	ops                     []string
	topics, groups, txnIDs  []string
	cluster                 bool
	pattern                 string
	force                   bool
}

func (a *aclFlags) register(cmd *cobra.Command, filter bool, defaultPattern string) {
	fl := cmd.Flags()
	fl.StringArrayVar(&a.allow, "allow-principal", nil, "principal allowed, e.g. User:alice (repeatable)")
	fl.StringArrayVar(&a.deny, "deny-principal", nil, "principal denied (repeatable)")
	ops := "operation: read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs, idempotent-write, all (repeatable)"
	hosts := "host the ACL applies to (repeatable)"
	if filter {
		fl.StringArrayVar(&a.principals, "principal", nil, "principal, allowed or denied (repeatable)")
		ops += "; default any"
		hosts += "; default any"
		fl.StringArrayVar(&a.hosts, "host", nil, hosts)
	} else {
		fl.StringArrayVar(&a.hosts, "host", []string{"*"}, hosts)
	}
	fl.StringArrayVar(&a.ops, "operation", nil, ops)
	fl.StringArrayVar(&a.topics, "topic", nil, "topic name, prefix or * (repeatable)")
	fl.StringArrayVar(&a.groups, "group", nil, "consumer group (repeatable)")
	fl.StringArrayVar(&a.txnIDs, "transactional-id", nil, "transactional id (repeatable)")
	fl.BoolVar(&a.cluster, "cluster", false, "the cluster resource")
	patterns := "literal or prefixed"
	if filter {
		patterns = "literal, prefixed, match (every ACL that applies to the name) or any"
	}
	fl.StringVar(&a.pattern, "resource-pattern-type", defaultPattern, patterns)
}

// aclOperations maps the --operation words to Kafka's operations.
var aclOperations = map[string]kadm.ACLOperation{
	"read": kadm.OpRead, "write": kadm.OpWrite, "create": kadm.OpCreate, "delete": kadm.OpDelete,
	"alter": kadm.OpAlter, "describe": kadm.OpDescribe, "cluster-action": kadm.OpClusterAction,
	"describe-configs": kadm.OpDescribeConfigs, "alter-configs": kadm.OpAlterConfigs,
	"idempotent-write": kadm.OpIdempotentWrite, "all": kadm.OpAll,
}

// parseACLOperation reads an operation in any case, with - or _.
func parseACLOperation(s string) (kadm.ACLOperation, error) {
	k := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
	if op, ok := aclOperations[k]; ok {
		return op, nil
	}
	return 0, fmt.Errorf("invalid --operation %q: must be read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs, idempotent-write or all", s)
}

// parseACLPattern reads a --resource-pattern-type; filter allows match
// and any.
func parseACLPattern(s string, filter bool) (kadm.ACLPattern, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "literal":
		return kadm.ACLPatternLiteral, nil
	case "prefixed":
		return kadm.ACLPatternPrefixed, nil
	case "match":
		if filter {
			return kadm.ACLPatternMatch, nil
		}
	case "any":
		if filter {
			return kadm.ACLPatternAny, nil
		}
	}
	if filter {
		return 0, fmt.Errorf("invalid --resource-pattern-type %q: must be literal, prefixed, match or any", s)
	}
	return 0, fmt.Errorf("invalid --resource-pattern-type %q: must be literal or prefixed", s)
}

// hasResource reports whether a resource flag was given.
func (a *aclFlags) hasResource() bool {
	return len(a.topics) > 0 || len(a.groups) > 0 || len(a.txnIDs) > 0 || a.cluster
}

// checkPrincipals insists on Kafka's Type:name form: the authorizer would
// store "alice" as a principal no one ever authenticates as.
func checkPrincipals(ps ...[]string) error {
	for _, list := range ps {
		for _, p := range list {
			if typ, name, ok := strings.Cut(p, ":"); !ok || typ == "" || name == "" {
				return fmt.Errorf("invalid principal %q: expected Type:name, e.g. User:alice", p)
			}
		}
	}
	return nil
}

// createBuilder is the builder for "acl create".
func (a *aclFlags) createBuilder() (*kadm.ACLBuilder, error) {
	if len(a.allow) == 0 && len(a.deny) == 0 {
		return nil, errors.New("give at least one --allow-principal or --deny-principal")
	}
	if err := checkPrincipals(a.allow, a.deny); err != nil {
		return nil, err
	}
	if len(a.ops) == 0 {
		return nil, errors.New("give at least one --operation")
	}
	if !a.hasResource() {
		return nil, errors.New("give a resource: --topic, --group, --transactional-id or --cluster")
	}
	pat, err := parseACLPattern(a.pattern, false)
	if err != nil {
		return nil, err
	}
	b, err := a.common(pat)
	if err != nil {
		return nil, err
	}
	b.MaybeAllow(a.allow...).MaybeDeny(a.deny...)
	if len(a.allow) > 0 {
		b.AllowHosts(a.hosts...)
	}
	if len(a.deny) > 0 {
		b.DenyHosts(a.hosts...)
	}
	return b, nil
}

// filterBuilder is the builder for "acl list" and "acl delete": every flag
// not given matches anything.
func (a *aclFlags) filterBuilder() (*kadm.ACLBuilder, error) {
	if err := checkPrincipals(a.allow, a.deny, a.principals); err != nil {
		return nil, err
	}
	pat, err := parseACLPattern(a.pattern, true)
	if err != nil {
		return nil, err
	}
	b, err := a.common(pat)
	if err != nil {
		return nil, err
	}
	allow := append(append([]string(nil), a.allow...), a.principals...)
	deny := append(append([]string(nil), a.deny...), a.principals...)
	anyPrincipal := len(allow) == 0 && len(deny) == 0
	if anyPrincipal {
		b.Allow().Deny() // any principal, either permission
	} else {
		b.MaybeAllow(allow...).MaybeDeny(deny...)
	}
	// Each side in use needs a host filter; none given matches any host.
	if anyPrincipal || len(allow) > 0 {
		b.AllowHosts(a.hosts...)
	}
	if anyPrincipal || len(deny) > 0 {
		b.DenyHosts(a.hosts...)
	}
	if !a.hasResource() {
		b.AnyResource()
	}
	return b, nil
}

// common sets resources, operations and pattern.
func (a *aclFlags) common(pat kadm.ACLPattern) (*kadm.ACLBuilder, error) {
	var ops []kadm.ACLOperation
	for _, s := range a.ops {
		op, err := parseACLOperation(s)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
	b := kadm.NewACLs().ResourcePatternType(pat).Operations(ops...)
	if len(a.topics) > 0 {
		b.Topics(a.topics...)
	}
	if len(a.groups) > 0 {
		b.Groups(a.groups...)
	}
	if len(a.txnIDs) > 0 {
		b.TransactionalIDs(a.txnIDs...)
	}
	if a.cluster {
		b.Clusters()
	}
	return b, nil
}

func aclCreateCommand(f *adminFlags) *cobra.Command {
	a := &aclFlags{}
	cmd := &cobra.Command{
		Use:   "create (--allow-principal P | --deny-principal P) --operation OP (--topic T | --group G | --transactional-id T | --cluster)",
		Short: "Create ACLs: every principal × host × resource × operation given",
		Example: `  exactly acl create --allow-principal User:alice --operation write --topic orders --command-config admin.properties
  exactly acl create --allow-principal User:app --operation read --operation describe --topic app. --resource-pattern-type prefixed
  exactly acl create --deny-principal User:mallory --operation all --topic '*'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := a.createBuilder()
			if err != nil {
				return err
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				res, err := adm.CreateACLs(ctx, b)
				if err != nil {
					return requestError("creating ACLs", f.bootstrap, err)
				}
				var failed []string
				tw := newTable(cmd.OutOrStdout(), aclHeader...)
				for _, r := range res {
					if errors.Is(r.Err, kerr.SecurityDisabled) {
						return errNoAuthorizer("creating ACLs")
					}
					if r.Err != nil {
						failed = append(failed, fmt.Sprintf("%s %s %s on %s %q: %v%s", r.Permission, r.Principal, r.Operation, r.Type, r.Name, r.Err, errSuffix(r.ErrMessage)))
						continue
					}
					aclRow(tw, r.Principal, r.Host, r.Type, r.Name, r.Pattern, r.Operation, r.Permission)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(failed) > 0 {
					return fmt.Errorf("creating ACLs: %s", strings.Join(failed, "; "))
				}
				return nil
			})
		},
	}
	a.register(cmd, false, "literal")
	return cmd
}

func aclListCommand(f *adminFlags) *cobra.Command {
	a := &aclFlags{}
	cmd := &cobra.Command{
		Use:   "list [filters]",
		Short: "List ACLs matching the filters (all ACLs without any)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := a.filterBuilder()
			if err != nil {
				return err
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				res, err := adm.DescribeACLs(ctx, b)
				if err != nil {
					return requestError("listing ACLs", f.bootstrap, err)
				}
				var rows []kadm.DescribedACL
				for _, r := range res {
					if errors.Is(r.Err, kerr.SecurityDisabled) {
						return errNoAuthorizer("listing ACLs")
					}
					if r.Err != nil {
						return fmt.Errorf("listing ACLs: %w%s", r.Err, errSuffix(r.ErrMessage))
					}
					rows = append(rows, r.Described...)
				}
				rows = dedupACLs(rows)
				tw := newTable(cmd.OutOrStdout(), aclHeader...)
				for _, d := range rows {
					aclRow(tw, d.Principal, d.Host, d.Type, d.Name, d.Pattern, d.Operation, d.Permission)
				}
				return tw.Flush()
			})
		},
	}
	a.register(cmd, true, "any")
	return cmd
}

func aclDeleteCommand(f *adminFlags) *cobra.Command {
	a := &aclFlags{}
	cmd := &cobra.Command{
		Use:   "delete [filters]",
		Short: "Delete the ACLs matching the filters",
		Long: `Delete every ACL the filters match (see "acl list" with the same flags).
Without a resource or principal filter this would delete every ACL, which
needs --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !a.force && !a.hasResource() && len(a.allow)+len(a.deny)+len(a.principals) == 0 {
				return errors.New("refusing to delete every ACL: give a resource or principal filter, or --force")
			}
			b, err := a.filterBuilder()
			if err != nil {
				return err
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				res, err := adm.DeleteACLs(ctx, b)
				if err != nil {
					return requestError("deleting ACLs", f.bootstrap, err)
				}
				var rows []kadm.DescribedACL
				var failed []string
				for _, r := range res {
					if errors.Is(r.Err, kerr.SecurityDisabled) {
						return errNoAuthorizer("deleting ACLs")
					}
					if r.Err != nil {
						failed = append(failed, fmt.Sprintf("%v%s", r.Err, errSuffix(r.ErrMessage)))
						continue
					}
					for _, d := range r.Deleted {
						if d.Err != nil {
							failed = append(failed, fmt.Sprintf("%s %s on %s %q: %v%s", d.Principal, d.Operation, d.Type, d.Name, d.Err, errSuffix(d.ErrMessage)))
							continue
						}
						rows = append(rows, kadm.DescribedACL{Principal: d.Principal, Host: d.Host, Type: d.Type,
							Name: d.Name, Pattern: d.Pattern, Operation: d.Operation, Permission: d.Permission})
					}
				}
				rows = dedupACLs(rows)
				tw := newTable(cmd.OutOrStdout(), aclHeader...)
				for _, d := range rows {
					aclRow(tw, d.Principal, d.Host, d.Type, d.Name, d.Pattern, d.Operation, d.Permission)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "deleted %d ACLs\n", len(rows))
				if len(failed) > 0 {
					return fmt.Errorf("deleting ACLs: %s", strings.Join(failed, "; "))
				}
				return nil
			})
		},
	}
	a.register(cmd, true, "literal")
	cmd.Flags().BoolVar(&a.force, "force", false, "allow a filter that matches every ACL")
	return cmd
}

// errNoAuthorizer explains SECURITY_DISABLED once, instead of once per
// ACL: the broker stores no ACLs because nothing would check them.
func errNoAuthorizer(doing string) error {
	return fmt.Errorf("%s: the broker has no authorizer (SECURITY_DISABLED): set authorizer.class.name in its configuration to use ACLs", doing)
}

// aclHeader are the columns of every ACL table.
var aclHeader = []string{"PRINCIPAL", "HOST", "RESOURCE-TYPE", "RESOURCE-NAME", "PATTERN", "OPERATION", "PERMISSION"}

func aclRow(tw interface{ Write([]byte) (int, error) }, principal, host string, typ kmsg.ACLResourceType,
	name string, pat kadm.ACLPattern, op kadm.ACLOperation, perm kmsg.ACLPermissionType) {
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", principal, host, typ, name, pat, op, perm)
}

// dedupACLs sorts ACLs and drops repeats: several filters (one per
// principal and permission) can match the same ACL.
func dedupACLs(in []kadm.DescribedACL) []kadm.DescribedACL {
	key := func(d kadm.DescribedACL) string {
		return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s", d.Type, d.Name, d.Pattern, d.Principal, d.Host, d.Operation, d.Permission)
	}
	sort.Slice(in, func(i, j int) bool { return key(in[i]) < key(in[j]) })
	out := in[:0]
	for i, d := range in {
		if i > 0 && key(d) == key(in[i-1]) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// errSuffix formats a broker's optional error message.
func errSuffix(msg string) string {
	if msg == "" {
		return ""
	}
	return " (" + msg + ")"
}
