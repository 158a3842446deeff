package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/exactly/exactly/clientconf"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// UserPasswordEnv is the environment variable "user create" reads the new
// user's password from when --password-file is not given. It is not
// EXACTLY_SASL_PASSWORD: that one is the password of the admin connecting.
const UserPasswordEnv = "EXACTLY_USER_PASSWORD"

// UserCommand returns the "user" command group: SCRAM credentials
// (DescribeUserScramCredentials / AlterUserScramCredentials, KIP-554), as
// kafka-configs.sh --entity-type users manages them.
func UserCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Create, delete and list SCRAM users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(userCreateCommand(f), userDeleteCommand(f), userListCommand(f))
	return cmd
}

// parseScramMechanism maps SCRAM-SHA-256/512 (any case) to kadm's enum.
func parseScramMechanism(s string) (kadm.ScramMechanism, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case clientconf.ScramSHA256:
		return kadm.ScramSha256, nil
	case clientconf.ScramSHA512:
		return kadm.ScramSha512, nil
	}
	return 0, fmt.Errorf("invalid --mechanism %q: must be SCRAM-SHA-256 or SCRAM-SHA-512", s)
}

// readNewPassword reads the new user's password from file or, without
// one, from UserPasswordEnv; a trailing newline is not part of it.
func readNewPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("--password-file %s is empty", file)
		}
		return pw, nil
	}
	if pw := os.Getenv(UserPasswordEnv); pw != "" {
		return pw, nil
	}
	return "", fmt.Errorf("the password comes from --password-file or the %s environment variable (never the command line)", UserPasswordEnv)
}

func userCreateCommand(f *adminFlags) *cobra.Command {
	var mechanism, passwordFile string
	var iterations int32
	cmd := &cobra.Command{
		Use:   "create NAME --mechanism SCRAM-SHA-512 --password-file FILE",
		Short: "Create a SCRAM user, or replace its password for that mechanism",
		Long: `Create a SCRAM credential for NAME, or replace the one it has for the
mechanism. The salt is generated here and only the salted password is sent,
as kafka-configs.sh does. The password is read from --password-file or the
` + UserPasswordEnv + ` environment variable, never from the command line.`,
		Example: `  exactly user create alice --mechanism SCRAM-SHA-512 --password-file alice.pw --command-config admin.properties`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mech, err := parseScramMechanism(mechanism)
			if err != nil {
				return err
			}
			if iterations < 4096 || iterations > 16384 {
				return fmt.Errorf("--iterations %d: must be between 4096 and 16384", iterations)
			}
			if args[0] == "" {
				return errors.New("the user name must not be empty")
			}
			pw, err := readNewPassword(passwordFile)
			if err != nil {
				return err
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{
					User: args[0], Mechanism: mech, Iterations: iterations, Password: pw,
				}})
				if err != nil {
					return requestError("creating user", f.bootstrap, err)
				}
				if err := userResultError(res, args[0]); err != nil {
					return fmt.Errorf("creating user %q: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "user %q: %s credential set (%d iterations)\n", args[0], mech, iterations)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&mechanism, "mechanism", clientconf.ScramSHA512, "SCRAM-SHA-256 or SCRAM-SHA-512")
	fl.Int32Var(&iterations, "iterations", 8192, "PBKDF2 iterations (4096 to 16384, as Kafka enforces)")
	fl.StringVar(&passwordFile, "password-file", "", "file holding the new user's password (else $"+UserPasswordEnv+")")
	return cmd
}

// userResultError is the broker's answer for user, with its message.
func userResultError(res kadm.AlteredUserSCRAMs, user string) error {
	r, ok := res[user]
	if !ok {
		return errors.New("the broker did not answer for this user")
	}
	if r.Err == nil {
		return nil
	}
	if r.ErrMessage != "" {
		return fmt.Errorf("%w (%s)", r.Err, r.ErrMessage)
	}
	return r.Err
}

func userDeleteCommand(f *adminFlags) *cobra.Command {
	var mechanism string
	cmd := &cobra.Command{
		Use:   "delete NAME [--mechanism M]",
		Short: "Delete a user's SCRAM credentials (every mechanism unless --mechanism)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			var mechs []kadm.ScramMechanism
			if mechanism != "" {
				m, err := parseScramMechanism(mechanism)
				if err != nil {
					return err
				}
				mechs = []kadm.ScramMechanism{m}
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				if len(mechs) == 0 {
					d, err := adm.DescribeUserSCRAMs(ctx, user)
					if err != nil {
						return requestError("describing user", f.bootstrap, err)
					}
					r, ok := d[user]
					if !ok || r.Err != nil || len(r.CredInfos) == 0 {
						return fmt.Errorf("user %q has no SCRAM credentials", user)
					}
					for _, ci := range r.CredInfos {
						mechs = append(mechs, ci.Mechanism)
					}
				}
				// A user may appear once per request, so each mechanism
				// is its own request.
				for _, m := range mechs {
					res, err := adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: user, Mechanism: m}}, nil)
					if err != nil {
						return requestError("deleting user", f.bootstrap, err)
					}
					if err := userResultError(res, user); err != nil {
						return fmt.Errorf("deleting %s credential of user %q: %w", m, user, err)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "user %q: %s credential deleted\n", user, m)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&mechanism, "mechanism", "", "delete only this mechanism's credential (SCRAM-SHA-256 or SCRAM-SHA-512)")
	return cmd
}

func userListCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [NAME...]",
		Short: "List SCRAM users with their mechanisms and iterations",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				d, err := adm.DescribeUserSCRAMs(ctx, args...)
				if err != nil {
					return requestError("listing users", f.bootstrap, err)
				}
				tw := newTable(cmd.OutOrStdout(), "USER", "MECHANISM", "ITERATIONS")
				var missing []string
				for _, u := range d.Sorted() {
					if u.Err != nil {
						missing = append(missing, fmt.Sprintf("%s: %v", u.User, u.Err))
						continue
					}
					infos := append([]kadm.CredInfo(nil), u.CredInfos...)
					sort.Slice(infos, func(i, j int) bool { return infos[i].Mechanism < infos[j].Mechanism })
					for _, ci := range infos {
						row(tw, u.User, ci.Mechanism, ci.Iterations)
					}
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(missing) > 0 {
					return errors.New(strings.Join(missing, "; "))
				}
				return nil
			})
		},
	}
	return cmd
}
