package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// QuotaCommand returns the "quota" command and its subcommands describe
// and alter, which read and change client quotas (producer_byte_rate,
// consumer_byte_rate, request_percentage) on user and client-id entities,
// like kafka-configs.sh --entity-type users/clients.
func QuotaCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Describe and alter client quotas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(quotaDescribeCommand(f), quotaAlterCommand(f))
	return cmd
}

// quotaEntityFlags name one quota entity: a user and/or a client id, each
// a name or the default.
type quotaEntityFlags struct {
	user, clientID               string
	defaultUser, defaultClientID bool
}

func (e *quotaEntityFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&e.clientID, "client-id", "", "the client id")
	fl.BoolVar(&e.defaultClientID, "default-client-id", false, "the default client id (<default>)")
	fl.StringVar(&e.user, "user", "", "the user (ANONYMOUS until the broker authenticates)")
	fl.BoolVar(&e.defaultUser, "default-user", false, "the default user (<default>)")
	cmd.MarkFlagsMutuallyExclusive("client-id", "default-client-id")
	cmd.MarkFlagsMutuallyExclusive("user", "default-user")
}

// part is one entity component from a name flag and a default flag; ok is
// false when neither is given.
func part(typ, name string, def bool, named bool) (kadm.ClientQuotaEntityComponent, bool) {
	switch {
	case def:
		return kadm.ClientQuotaEntityComponent{Type: typ}, true
	case named:
		return kadm.ClientQuotaEntityComponent{Type: typ, Name: &name}, true
	}
	return kadm.ClientQuotaEntityComponent{}, false
}

// entity is the entity the flags name, user first; empty when none.
func (e *quotaEntityFlags) entity(cmd *cobra.Command) (kadm.ClientQuotaEntity, error) {
	var out kadm.ClientQuotaEntity
	if c, ok := part("user", e.user, e.defaultUser, cmd.Flags().Changed("user")); ok {
		out = append(out, c)
	}
	if c, ok := part("client-id", e.clientID, e.defaultClientID, cmd.Flags().Changed("client-id")); ok {
		out = append(out, c)
	}
	for _, c := range out {
		if c.Name != nil && *c.Name == "" {
			return nil, fmt.Errorf("--%s must not be empty (use --default-%s for the default)", c.Type, c.Type)
		}
	}
	return out, nil
}

func quotaDescribeCommand(f *adminFlags) *cobra.Command {
	e := &quotaEntityFlags{}
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Show client quotas: all, or exactly the entity the flags name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entity, err := e.entity(cmd)
			if err != nil {
				return err
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				var filter []kadm.DescribeClientQuotaComponent
				for _, c := range entity {
					fc := kadm.DescribeClientQuotaComponent{Type: c.Type, MatchName: c.Name, MatchType: 0}
					if c.Name == nil {
						fc.MatchType = 1
					}
					filter = append(filter, fc)
				}
				qs, err := adm.DescribeClientQuotas(ctx, len(filter) > 0, filter)
				if err != nil {
					return requestError("describing client quotas", f.bootstrap, err)
				}
				printQuotas(cmd.OutOrStdout(), qs)
				return nil
			})
		},
	}
	e.register(cmd)
	return cmd
}

// printQuotas writes one line per entity, sorted: its components, a tab,
// then key=value pairs sorted by key.
func printQuotas(w io.Writer, qs kadm.DescribedClientQuotas) {
	var lines []string
	for _, q := range qs {
		var vals []string
		for _, v := range q.Values {
			vals = append(vals, v.Key+"="+strconv.FormatFloat(v.Value, 'f', -1, 64))
		}
		slices.Sort(vals)
		lines = append(lines, entityString(q.Entity)+"\t"+strings.Join(vals, ","))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// entityString is "user=U, client-id=<default>", user first.
func entityString(e kadm.ClientQuotaEntity) string {
	var parts []string
	for _, typ := range []string{"user", "client-id"} {
		for _, c := range e {
			if c.Type != typ {
				continue
			}
			name := "<default>"
			if c.Name != nil {
				name = *c.Name
			}
			parts = append(parts, typ+"="+name)
		}
	}
	return strings.Join(parts, ", ")
}

func quotaAlterCommand(f *adminFlags) *cobra.Command {
	e := &quotaEntityFlags{}
	var (
		sets, deletes []string
		validateOnly  bool
	)
	cmd := &cobra.Command{
		Use:   "alter",
		Short: "Set and delete client quotas of one entity",
		Example: "  exactly quota alter --client-id billing --set producer_byte_rate=1048576 --delete consumer_byte_rate\n" +
			"  exactly quota alter --default-client-id --set request_percentage=50",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entity, err := e.entity(cmd)
			if err != nil {
				return err
			}
			if len(entity) == 0 {
				return fmt.Errorf("name the entity: --client-id, --default-client-id, --user or --default-user")
			}
			if len(sets)+len(deletes) == 0 {
				return fmt.Errorf("nothing to change: give --set key=value or --delete key")
			}
			var ops []kadm.AlterClientQuotaOp
			for _, s := range sets {
				k, v, err := parseKeyValue("--set", s)
				if err != nil {
					return err
				}
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return fmt.Errorf("invalid --set %q: %q is not a number", s, v)
				}
				ops = append(ops, kadm.AlterClientQuotaOp{Key: k, Value: n})
			}
			for _, k := range deletes {
				ops = append(ops, kadm.AlterClientQuotaOp{Key: k, Remove: true})
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				entries := []kadm.AlterClientQuotaEntry{{Entity: entity, Ops: ops}}
				alter := adm.AlterClientQuotas
				if validateOnly {
					alter = adm.ValidateAlterClientQuotas
				}
				res, err := alter(ctx, entries)
				if err != nil {
					return requestError("altering client quotas", f.bootstrap, err)
				}
				for _, r := range res {
					if r.Err != nil {
						if r.ErrMessage != "" {
							return fmt.Errorf("altering quotas of %s: %w (%s)", entityString(entity), r.Err, r.ErrMessage)
						}
						return fmt.Errorf("altering quotas of %s: %w", entityString(entity), r.Err)
					}
				}
				verb := "Altered"
				if validateOnly {
					verb = "Validated"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s quotas of %s.\n", verb, entityString(entity))
				return nil
			})
		},
	}
	e.register(cmd)
	fl := cmd.Flags()
	fl.StringArrayVar(&sets, "set", nil, "quota key=value to set (repeatable)")
	fl.StringArrayVar(&deletes, "delete", nil, "quota key to delete (repeatable)")
	fl.BoolVar(&validateOnly, "validate-only", false, "have the broker check the change without applying it")
	return cmd
}
