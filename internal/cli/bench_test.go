package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Bad flags are refused with a readable message before any broker starts
// (usage text may follow; a report may not).
func TestBenchRejectsBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--modes exactly-twice":                 "unknown mode",
		"--rounds 0":                            "--rounds must be positive",
		"--duration -1s":                        "--duration must be positive",
		"--bootstrap kafka=":                    "names no broker address",
		"--bootstrap 127.0.0.1:1 --rate -5":     "negative rate",
		"--topic-config compression.type":       "want [target/]key=value",
		"--topic-config /compression.type=zstd": "want [target/]key=value",
		"--bootstrap a=127.0.0.1:1 --topic-config b/compression.type=zstd":     "no --bootstrap target has that name",
		"--bootstrap a=127.0.0.1:1 --metrics-url b=http://127.0.0.1:1/metrics": "no --bootstrap target has that name",
		"--bootstrap a=127.0.0.1:1 --metrics-url a":                            "want name=http://host:port/metrics",
		"--bootstrap a=127.0.0.1:1 --while-cleaning --modes read-committed":    "needs a produce mode",
		"--while-cleaning --cleaning-rate 0":                                   "--cleaning-rate must be positive",
		"--kfake --report bench.jpg":                                           "want a .png or .svg file",
		"--managed=false":                                                      "nothing to measure",
	} {
		cmd := BenchCommand()
		var out, errb bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SetArgs(strings.Fields(args))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error mentioning %q", args, err, want)
		}
		if strings.Contains(out.String(), "MB/s") {
			t.Errorf("%s: printed a report for a benchmark that never ran: %s", args, out.String())
		}
	}
}

// --topic-config splits a target name off at a '/' before the '='.
func TestParseTopicConfigs(t *testing.T) {
	all, per, err := parseTopicConfigs([]string{"compression.type=zstd", "z/compression.zstd.level=9", "z/compression.type=lz4", "x=a/b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all["compression.type"] != "zstd" || all["x"] != "a/b" {
		t.Errorf("every target: %v", all)
	}
	if len(per) != 1 || per["z"]["compression.type"] != "lz4" || per["z"]["compression.zstd.level"] != "9" {
		t.Errorf("per target: %v", per)
	}
}
