package exactly

// Starting a node of a cluster: KRaft's keys (docs/DESIGN.md, "Cluster").

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/broker"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
)

// clusterConfig reads the cluster keys. Without controller.quorum.voters
// the broker is a single node (nil, and the listeners unchanged);
// otherwise the controller listener is taken out of lns for the metadata
// quorum and the client listeners are returned.
func clusterConfig(static map[string]string, lns []server.Listener, join, adopt bool) (*broker.ClusterConfig, []server.Listener, error) {
	voters, err := cluster.ParseVoters(static["controller.quorum.voters"])
	if err != nil {
		return nil, nil, err
	}
	if len(voters) == 0 {
		if join || adopt {
			return nil, nil, fmt.Errorf("joining or founding a cluster needs controller.quorum.voters")
		}
		if err := ownBootstrapServers(static, lns); err != nil {
			return nil, nil, err
		}
		return nil, lns, nil
	}
	id, err := strconv.Atoi(static["node.id"])
	if err != nil || id < 1 {
		return nil, nil, fmt.Errorf("a cluster node needs node.id set to a positive integer (got %q): controller.quorum.voters names the nodes by it", static["node.id"])
	}
	roles, err := cluster.ParseRoles(defaulted(static, "process.roles"))
	if err != nil {
		return nil, nil, err
	}
	if !roles.Broker {
		return nil, nil, fmt.Errorf("process.roles=%s: a controller-only node is not supported yet; give broker,controller (the default) or broker", static["process.roles"])
	}
	voter := slices.ContainsFunc(voters, func(v cluster.Voter) bool { return v.ID == int32(id) })
	learner := !roles.Controller
	if learner && voter {
		return nil, nil, fmt.Errorf("node.id=%d is in controller.quorum.voters but process.roles=broker: a voter is a controller", id)
	}
	if !learner && !join && !voter {
		return nil, nil, fmt.Errorf("node.id=%d is not in controller.quorum.voters=%s: a controller must be a voter (a new one starts with --join and is added with exactly cluster add-voter)", id, static["controller.quorum.voters"])
	}
	names := controllerListenerNames(static)
	cc := &broker.ClusterConfig{
		Voters:            voters,
		ElectionTimeout:   msKey(static, "controller.quorum.election.timeout.ms"),
		HeartbeatInterval: msKey(static, "broker.heartbeat.interval.ms"),
		SessionTimeout:    msKey(static, "broker.session.timeout.ms"),
		Join:              join,
		Adopt:             adopt,
		Learner:           learner,
	}
	var clients []server.Listener
	for _, l := range lns {
		if slices.Contains(names, l.Name) {
			if cc.Controller != nil {
				return nil, nil, fmt.Errorf("listeners has more than one controller listener (%s): give one", l.Name)
			}
			cc.Controller = l.Net
			continue
		}
		clients = append(clients, l)
	}
	if cc.Controller == nil && learner {
		return nil, nil, fmt.Errorf("a broker-only node (process.roles=broker) also needs a listener named in controller.listener.names=%s: the quorum's leader sends it the metadata log there (e.g. CONTROLLER://host:port)", defaulted(static, "controller.listener.names"))
	}
	if cc.Controller == nil {
		return nil, nil, fmt.Errorf("no listener named in controller.listener.names=%s: add one to listeners, e.g. CONTROLLER://host:port, at this node's address in controller.quorum.voters", defaulted(static, "controller.listener.names"))
	}
	if len(clients) == 0 {
		return nil, nil, fmt.Errorf("listeners has only the controller listener: add one for clients, e.g. PLAINTEXT://host:port")
	}
	if name := strings.ToUpper(static["inter.broker.listener.name"]); name != "" {
		if !slices.ContainsFunc(clients, func(l server.Listener) bool { return l.Name == name }) {
			return nil, nil, fmt.Errorf("inter.broker.listener.name=%s is not one of this node's client listeners", name)
		}
		if l := clients[slices.IndexFunc(clients, func(l server.Listener) bool { return l.Name == name })]; l.Protocol != security.Plaintext {
			return nil, nil, fmt.Errorf("inter.broker.listener.name=%s is %s: requests between nodes are PLAINTEXT only for now", name, l.Protocol)
		}
		cc.InterBrokerListener = name
	}
	if cc.SessionTimeout <= cc.HeartbeatInterval {
		return nil, nil, fmt.Errorf("broker.session.timeout.ms (%v) must be longer than broker.heartbeat.interval.ms (%v)", cc.SessionTimeout, cc.HeartbeatInterval)
	}
	return cc, clients, nil
}

// registeredListeners are the advertised client listeners a node
// registers, in listener order.
func registeredListeners(lns []server.Listener, advertised map[string]broker.Endpoint) []cluster.Endpoint {
	var out []cluster.Endpoint
	for _, l := range lns {
		a := advertised[l.Name]
		out = append(out, cluster.Endpoint{Name: l.Name, Host: a.Host, Port: a.Port, SecurityProtocol: string(l.Protocol)})
	}
	return out
}

func defaulted(static map[string]string, key string) string {
	if v, ok := static[key]; ok {
		return v
	}
	return cluster.BrokerConfigDefault(key)
}

func msKey(static map[string]string, key string) time.Duration {
	return time.Duration(cluster.Int64(defaulted(static, key), 0)) * time.Millisecond
}

// ownBootstrapServers accepts controller.quorum.bootstrap.servers on a
// node without controller.quorum.voters only if every address is this
// node's own controller listener: Kafka's shipped server.properties, a
// single node. A list naming another controller means a cluster this node
// cannot join that way, and starting alone would split it.
func ownBootstrapServers(static map[string]string, lns []server.Listener) error {
	servers, err := cluster.ParseBootstrapServers(static["controller.quorum.bootstrap.servers"])
	if err != nil || len(servers) == 0 {
		return err
	}
	names := controllerListenerNames(static)
	for _, s := range servers {
		if !slices.ContainsFunc(lns, func(l server.Listener) bool { return slices.Contains(names, l.Name) && isLocalListener(s, l) }) {
			return fmt.Errorf("controller.quorum.bootstrap.servers=%s: %s is not this node's controller listener (%s); "+
				"nodes form a cluster from controller.quorum.voters (id@host:port of every voter, the same on each node), "+
				"and a single node needs neither", static["controller.quorum.bootstrap.servers"], s, strings.Join(names, ","))
		}
	}
	return nil
}

// isLocalListener reports whether addr (host:port) reaches l: the same
// port, and a host that resolves to this machine.
func isLocalListener(addr string, l server.Listener) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	bound, ok := l.Net.Addr().(*net.TCPAddr)
	if !ok || strconv.Itoa(bound.Port) != port {
		return false
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() && !slices.ContainsFunc(local, func(a net.Addr) bool {
			n, ok := a.(*net.IPNet)
			return ok && n.IP.Equal(ip)
		}) {
			return false
		}
	}
	return true
}
