package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runQuota(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := &cobra.Command{Use: "exactly", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(QuotaCommand())
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustQuota(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runQuota(t, args...)
	if err != nil {
		t.Fatalf("exactly %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestQuotaCommands sets, lists, filters and deletes quotas, and shows
// the broker's refusal of an invalid value.
func TestQuotaCommands(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	if out := mustQuota(t, "quota", "describe", "-b", addr); out != "" {
		t.Fatalf("quotas on a fresh broker: %q", out)
	}
	out := mustQuota(t, "quota", "alter", "-b", addr, "--client-id", "billing",
		"--set", "producer_byte_rate=1048576", "--set", "consumer_byte_rate=2097152")
	if out != "Altered quotas of client-id=billing.\n" {
		t.Errorf("alter output %q", out)
	}
	mustQuota(t, "quota", "alter", "-b", addr, "--default-client-id", "--set", "request_percentage=12.5")
	mustQuota(t, "quota", "alter", "-b", addr, "--user", "ANONYMOUS", "--client-id", "billing", "--set", "producer_byte_rate=4096")
	if out := mustQuota(t, "quota", "alter", "-b", addr, "--default-user", "--set", "producer_byte_rate=1", "--validate-only"); out != "Validated quotas of user=<default>.\n" {
		t.Errorf("validate-only output %q", out)
	}

	want := "client-id=<default>\trequest_percentage=12.5\n" +
		"client-id=billing\tconsumer_byte_rate=2097152,producer_byte_rate=1048576\n" +
		"user=ANONYMOUS, client-id=billing\tproducer_byte_rate=4096\n"
	if out := mustQuota(t, "quota", "describe", "-b", addr); out != want {
		t.Errorf("describe all:\n%s\nwant:\n%s", out, want)
	}
	// A filter names exactly one entity.
	if out := mustQuota(t, "quota", "describe", "-b", addr, "--client-id", "billing"); out != "client-id=billing\tconsumer_byte_rate=2097152,producer_byte_rate=1048576\n" {
		t.Errorf("describe --client-id billing: %q", out)
	}
	if out := mustQuota(t, "quota", "describe", "-b", addr, "--default-client-id"); out != "client-id=<default>\trequest_percentage=12.5\n" {
		t.Errorf("describe --default-client-id: %q", out)
	}

	mustQuota(t, "quota", "alter", "-b", addr, "--client-id", "billing", "--delete", "consumer_byte_rate")
	if out := mustQuota(t, "quota", "describe", "-b", addr, "--client-id", "billing"); out != "client-id=billing\tproducer_byte_rate=1048576\n" {
		t.Errorf("after --delete: %q", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--client-id", "x", "--set", "producer_byte_rate=-1"}, "Quota producer_byte_rate must be greater than 0"},
		{[]string{"--client-id", "x", "--set", "bogus=1"}, "Invalid configuration key bogus"},
		{[]string{"--set", "producer_byte_rate=1"}, "name the entity"},
		{[]string{"--client-id", "x"}, "nothing to change"},
		{[]string{"--client-id", "x", "--set", "producer_byte_rate=fast"}, "not a number"},
		{[]string{"--client-id", "x", "--default-client-id", "--set", "producer_byte_rate=1"}, "none of the others can be"},
	} {
		args := append([]string{"quota", "alter", "-b", addr}, c.args...)
		if _, err := runQuota(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}
