package verify

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/exactly/exactly/clientconf"
)

// A worker's spec is on its command line; the SASL password must travel in
// its environment instead.
func TestWorkerPasswordNotInSpec(t *testing.T) {
	sec := clientconf.Settings{TLS: true, Mechanism: clientconf.ScramSHA512, User: "svc", Password: "s3cret"}
	r := &runner{cfg: Config{Security: sec, Env: []string{"A=b"}}}
	b, err := json.Marshal(WorkerSpec{Proc: "p0.0", SASL: clientconf.Settings{Mechanism: sec.Mechanism, User: sec.User, Password: sec.Password}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cret") {
		t.Fatalf("password in the worker spec: %s", b)
	}
	env := r.workerEnv()
	if strings.Join(env, " ") != "A=b "+clientconf.PasswordEnv+"=s3cret" {
		t.Fatalf("worker env %v", env)
	}
	if len(r.cfg.Env) != 1 {
		t.Fatalf("workerEnv changed the configured env: %v", r.cfg.Env)
	}
	// The worker side reads it back.
	t.Setenv(clientconf.PasswordEnv, "s3cret")
	var spec WorkerSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if _, err := spec.saslOpts(); err != nil {
		t.Fatalf("worker SASL options: %v", err)
	}
	t.Setenv(clientconf.PasswordEnv, "")
	if _, err := spec.saslOpts(); err == nil || !strings.Contains(err.Error(), "needs a password") {
		t.Fatalf("worker without the password: %v", err)
	}
}
