package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Setup mistakes exit 2 before anything starts.
func TestVerifyRejectsBadSetupWithExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"--managed", "--mode", "sometimes"},
		{"--managed", "--faults", "meteor"},
		{"--bootstrap", "127.0.0.1:1", "--faults", "broker-kill"},
		{"--mode", "exactly-once"}, // neither --managed nor --bootstrap
		{"--managed", "--bootstrap", "127.0.0.1:1"},
		{"--managed", "--no-such-flag"},
	} {
		cmd := VerifyCommand()
		var out, errb bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SetArgs(args)
		err := cmd.Execute()
		var ee *ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%v: got %v, want exit 2", args, err)
		}
		if strings.Contains(out.String(), "guarantee") && strings.Contains(out.String(), "acked  ") {
			t.Fatalf("%v: printed a result for a run that never started: %s", args, out.String())
		}
	}
}

// Share mode on a managed cluster is refused at once, saying why: the
// cluster's share coordinator serves only its own node's partitions.
func TestVerifyRefusesShareModeOnAManagedCluster(t *testing.T) {
	cmd := VerifyCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs([]string{"--managed", "--brokers", "3", "--mode", "share", "--faults", "none", "--duration", "1s"})
	err := cmd.Execute()
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(err.Error(), "--brokers 1") {
		t.Fatalf("got %v, want exit 2 naming --brokers 1", err)
	}
}

func TestVerifyHelpNamesModesAndFaults(t *testing.T) {
	cmd := VerifyCommand()
	for _, want := range []string{"at-most-once", "at-least-once", "exactly-once", "lost-ack", "zombie", "broker-kill", "Exit status"} {
		if !strings.Contains(cmd.Long, want) {
			t.Fatalf("help lacks %q", want)
		}
	}
}
