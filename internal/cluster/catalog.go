// Package cluster keeps the broker's metadata: the topic catalog (names,
// topic IDs, partition counts, per-topic config overrides), the cluster ID,
// dynamic broker configs and client quotas, and resolves effective config
// values.
//
// The catalog is one small JSON file rewritten atomically (temp file, fsync,
// rename, directory fsync) on every change, so a crash leaves either the old
// or the new catalog, never a mix. Topic metadata changes are rare; the hot
// path reads immutable *Topic values without locking beyond a map lookup.
package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/vfs"
)

// Errors returned by catalog operations; the broker maps them to Kafka codes.
var (
	ErrTopicExists       = errors.New("topic already exists")
	ErrUnknownTopic      = errors.New("unknown topic")
	ErrInvalidTopic      = errors.New("invalid topic name")
	ErrInvalidPartitions = errors.New("invalid partition count")
	ErrInvalidConfig     = errors.New("invalid config")
	// ErrReadOnlyConfig names broker keys that cannot change at runtime;
	// Kafka answers INVALID_REQUEST with this text.
	ErrReadOnlyConfig = errors.New("Cannot update these configs dynamically")
)

// MaxTopicNameLen is Kafka's limit on topic name length.
const MaxTopicNameLen = 249

// TopicID is a topic's 16-byte UUID.
type TopicID [16]byte

// String formats the ID like Kafka's tools (URL-safe base64, no padding).
func (id TopicID) String() string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// Topic is an immutable snapshot of one topic's metadata.
type Topic struct {
	Name       string            `json:"name"`
	ID         TopicID           `json:"id"`
	Partitions int32             `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
	// Internal marks broker-owned topics (offsets, transactions).
	Internal bool `json:"internal,omitempty"`
	// Replicas lists each partition's replicas by node id, the first
	// being the preferred leader; nil on a single node, where this node
	// holds every partition.
	Replicas [][]int32 `json:"replicas,omitempty"`
	// Pending, for a deleted topic in a cluster, lists the nodes that
	// may still hold its directories.
	Pending []int32 `json:"pending,omitempty"`
	// Leaders are the replicated partitions' published leaderships, by
	// partition (shorter than Partitions, or zero entries, where none was
	// reported).
	Leaders []PartitionLeader `json:"leaders,omitempty"`
}

type catalogFile struct {
	// Version is the catalog's format; absent (0) in catalogs written
	// before it was recorded, which read as version 1.
	Version       int               `json:"version,omitempty"`
	ClusterID     string            `json:"cluster_id"`
	Topics        []*Topic          `json:"topics"`
	BrokerConfigs map[string]string `json:"broker_configs,omitempty"`
	// GroupGenerations is the highest classic group generation the group
	// coordinator may have handed out (reserved ahead in blocks).
	GroupGenerations int32 `json:"group_generations,omitempty"`
	// ClientQuotas are the client quotas set by AlterClientQuotas.
	ClientQuotas []ClientQuota `json:"client_quotas,omitempty"`
	// ScramCredentials are the SCRAM credentials by user and mechanism
	// (KIP-554), absent from catalogs written before SASL existed.
	ScramCredentials map[string]map[string]ScramCredential `json:"scram_credentials,omitempty"`
	// ACLs are the bindings CreateAcls stored (absent in older catalogs).
	ACLs []acl.Binding `json:"acls,omitempty"`
	// Brokers are the registered brokers of a cluster (absent on a
	// single node).
	Brokers []*Broker `json:"brokers,omitempty"`
	// NextProducerID is the first producer id not reserved for a node
	// (absent on a single node).
	NextProducerID int64 `json:"next_producer_id,omitempty"`
	// Deleting lists deleted topics whose partition directories may still
	// exist: a topic moves here from Topics in the same write that deletes
	// it, and leaves once its directories are gone. Only directories these
	// entries (or live topics) name are ever removed.
	Deleting []*Topic `json:"deleting,omitempty"`
}

// ClientQuota is one entity's client quotas as stored: the entity in the
// protocol's form (type, name; a null name is <default>) and its values.
type ClientQuota struct {
	Entity []QuotaEntityPart  `json:"entity"`
	Values map[string]float64 `json:"values"`
}

// ScramCredential is one user's stored SCRAM credential for one mechanism
// (RFC 5802): salt, iterations and the two derived keys, never the
// password. Byte fields are base64 in the file.
type ScramCredential struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// QuotaEntityPart is one component of a quota entity.
type QuotaEntityPart struct {
	Type string  `json:"type"`
	Name *string `json:"name"`
}

// catalogVersion is the catalog format this binary writes and the newest
// it reads.
const catalogVersion = 1

// Catalog is the durable topic and config catalog.
type Catalog struct {
	fs     vfs.FS
	dir    string
	static map[string]string

	// mu guards st; writers also hold it across the file rewrite, so
	// the file's order is the order of changes.
	mu sync.RWMutex
	st *state
	// propose is set in a cluster (Replicate): changes go through the
	// metadata quorum instead of the file.
	propose Proposer
	// changed is closed at the next change (Changed); nil until asked.
	changed chan struct{}
	// heard is told of applied broker heartbeats (OnHeartbeat).
	heard func(id int32, epoch int64)
}

const catalogName = "cluster.json"

// OpenCatalog loads (or creates) the catalog in dir. static holds the broker
// configs from server.properties and --set, already validated.
func OpenCatalog(fsys vfs.FS, dir string, static map[string]string) (*Catalog, error) {
	c := &Catalog{fs: fsys, dir: dir, static: static}
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return nil, err
	}
	err := c.load()
	if errors.Is(err, os.ErrNotExist) {
		c.st = newState(newClusterID())
		if err := c.persist(c.st); err != nil {
			return nil, err
		}
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ReadCatalog loads the catalog in dir for an offline tool: nothing is
// created or written.
func ReadCatalog(fsys vfs.FS, dir string) (*Catalog, error) {
	c := &Catalog{fs: fsys, dir: dir}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the catalog file; a missing file is fs.ErrNotExist.
func (c *Catalog) load() error {
	dir := c.dir
	f, err := c.fs.OpenFile(filepath.Join(dir, catalogName), os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	st, err := decodeState(buf)
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, catalogName), err)
	}
	c.st = st
	return nil
}

// decodeState parses the catalog's file form (cluster.json, and the
// metadata quorum's snapshots).
func decodeState(buf []byte) (*state, error) {
	var cf catalogFile
	if err := json.Unmarshal(buf, &cf); err != nil {
		return nil, err
	}
	if cf.Version > catalogVersion {
		return nil, fmt.Errorf("%w: format version %d, newer than this binary reads (up to %d): run the exactly version that wrote it, or a newer one",
			ErrDataDir, cf.Version, catalogVersion)
	}
	st := newState(cf.ClusterID)
	st.deleting = cf.Deleting
	st.groupGens = cf.GroupGenerations
	st.quotas = cf.ClientQuotas
	st.scram = cf.ScramCredentials
	st.acls = acl.NewIndex(cf.ACLs)
	st.nextProducerID = cf.NextProducerID
	for _, b := range cf.Brokers {
		st.brokers[b.ID] = b
	}
	for _, t := range cf.Topics {
		st.byName[t.Name] = t
		st.byID[t.ID] = t
	}
	for k, v := range cf.BrokerConfigs {
		// A key that was dynamic in an older version but is read-only
		// now is dropped: the operator's static value applies again.
		if d, ok := brokerConfigIndex[k]; ok && d.Dynamic {
			st.dynamic[k] = v
		}
	}
	return st, nil
}

// NewClusterID is a fresh random cluster id (Kafka's form: 16 bytes,
// URL-safe base64).
func NewClusterID() string { return newClusterID() }

func newClusterID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newTopicID() TopicID {
	var id TopicID
	for id == (TopicID{}) {
		rand.Read(id[:])
	}
	return id
}

// encode is the state's file form.
func (s *state) encode() ([]byte, error) {
	cf := catalogFile{Version: catalogVersion, ClusterID: s.clusterID, BrokerConfigs: s.dynamic, GroupGenerations: s.groupGens,
		ClientQuotas: s.quotas, ScramCredentials: s.scram, ACLs: s.acls.Bindings(), Deleting: s.deleting,
		NextProducerID: s.nextProducerID}
	for _, t := range s.byName {
		cf.Topics = append(cf.Topics, t)
	}
	sort.Slice(cf.Topics, func(i, j int) bool { return cf.Topics[i].Name < cf.Topics[j].Name })
	for _, b := range s.brokers {
		cf.Brokers = append(cf.Brokers, b)
	}
	sort.Slice(cf.Brokers, func(i, j int) bool { return cf.Brokers[i].ID < cf.Brokers[j].ID })
	return json.MarshalIndent(cf, "", "  ")
}

// persist rewrites the catalog file atomically with st.
func (c *Catalog) persist(st *state) error {
	data, err := st.encode()
	if err != nil {
		return err
	}
	return vfs.WriteFileAtomic(c.fs, filepath.Join(c.dir, catalogName), data)
}

// commit applies cmd and makes the result durable: the catalog changes
// only if both succeed.
func (c *Catalog) commit(cmd Command) (any, error) {
	c.mu.Lock()
	if c.propose != nil {
		c.mu.Unlock()
		return c.proposeCommand(cmd)
	}
	defer c.mu.Unlock()
	next := c.st.clone()
	res, err := next.apply(cmd)
	if err != nil {
		return nil, err
	}
	if err := c.persist(next); err != nil {
		return nil, err
	}
	c.st = next
	c.changedLocked()
	return res, nil
}

// commitTopic is commit of a command whose result is a topic.
func (c *Catalog) commitTopic(cmd Command) (*Topic, error) {
	res, err := c.commit(cmd)
	if err != nil {
		return nil, err
	}
	return res.(*Topic), nil
}

// ClusterID is the cluster's stable ID, created on first start.
func (c *Catalog) ClusterID() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.clusterID
}

// ValidateTopicName checks Kafka's topic naming rules.
func ValidateTopicName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: name is empty", ErrInvalidTopic)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %q is not allowed", ErrInvalidTopic, name)
	}
	if len(name) > MaxTopicNameLen {
		return fmt.Errorf("%w: name is %d characters, the limit is %d", ErrInvalidTopic, len(name), MaxTopicNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: %q contains a character other than ASCII alphanumerics, '.', '_' and '-'", ErrInvalidTopic, name)
		}
	}
	return nil
}

// collisionKey maps names that Kafka's metrics would confuse ('.' vs '_').
func collisionKey(name string) string { return strings.ReplaceAll(name, ".", "_") }

// Topic returns the topic named name.
func (c *Catalog) Topic(name string) (*Topic, bool) {
	c.mu.RLock()
	t, ok := c.st.byName[name]
	c.mu.RUnlock()
	return t, ok
}

// TopicByID returns the topic with the given ID.
func (c *Catalog) TopicByID(id TopicID) (*Topic, bool) {
	c.mu.RLock()
	t, ok := c.st.byID[id]
	c.mu.RUnlock()
	return t, ok
}

// Topics returns all topics sorted by name.
func (c *Catalog) Topics() []*Topic {
	c.mu.RLock()
	out := make([]*Topic, 0, len(c.st.byName))
	for _, t := range c.st.byName {
		out = append(out, t)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ValidateNewTopic checks a creation request without applying it.
func (c *Catalog) ValidateNewTopic(name string, partitions int32, configs map[string]string) error {
	if err := ValidateTopicName(name); err != nil {
		return err
	}
	if partitions < 1 {
		return fmt.Errorf("%w: %d (must be at least 1)", ErrInvalidPartitions, partitions)
	}
	if partitions > maxPartitions {
		return fmt.Errorf("%w: %d is more than this broker allows (%d)", ErrInvalidPartitions, partitions, maxPartitions)
	}
	for k, v := range configs {
		if err := ValidateTopicConfig(k, v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if _, ok := c.st.byName[name]; ok {
		return fmt.Errorf("%w: %q", ErrTopicExists, name)
	}
	if other, ok := c.st.collision(name); ok {
		return fmt.Errorf("%w: %q collides with existing topic %q ('.' and '_' are interchangeable in metric names)", ErrInvalidTopic, name, other)
	}
	return nil
}

// maxPartitions bounds a topic's partition count.
const maxPartitions = 100000

// CreateTopic adds a topic durably and returns it.
func (c *Catalog) CreateTopic(name string, partitions int32, configs map[string]string, internal bool) (*Topic, error) {
	return c.CreateTopicOn(name, partitions, configs, internal, nil)
}

// CreateTopicOn is CreateTopic in a cluster: replicas lists each
// partition's replicas (see Place).
func (c *Catalog) CreateTopicOn(name string, partitions int32, configs map[string]string, internal bool, replicas [][]int32) (*Topic, error) {
	if err := c.ValidateNewTopic(name, partitions, configs); err != nil {
		return nil, err
	}
	return c.commitTopic(Command{Op: OpCreateTopic, Topic: &Topic{Name: name, ID: newTopicID(), Partitions: partitions, Configs: configs, Internal: internal, Replicas: replicas}})
}

// DeleteTopic removes a topic durably and returns what it was. It stays
// listed by Deleting until DeletionDone.
func (c *Catalog) DeleteTopic(name string) (*Topic, error) {
	return c.commitTopic(Command{Op: OpDeleteTopic, Name: name})
}

// Deleting returns the deleted topics whose directories may still exist.
func (c *Catalog) Deleting() []*Topic {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.st.deleting)
}

// DeletionDone durably records that node deleted its directories of a
// deleted topic; the topic is forgotten once no node may hold any (on a
// single node, at once).
func (c *Catalog) DeletionDone(id TopicID, node int32) error {
	c.mu.RLock()
	known := slices.ContainsFunc(c.st.deleting, func(t *Topic) bool {
		return t.ID == id && (len(t.Pending) == 0 || slices.Contains(t.Pending, node))
	})
	c.mu.RUnlock()
	if !known {
		return nil
	}
	_, err := c.commit(Command{Op: OpDeletionDone, ID: id, BrokerID: node})
	return err
}

// SetPartitions raises a topic's partition count; in a cluster, replicas
// lists the new partitions' replicas.
func (c *Catalog) SetPartitions(name string, count int32, replicas [][]int32) (*Topic, error) {
	return c.commitTopic(Command{Op: OpSetPartitions, Name: name, Partitions: count, Replicas: replicas})
}

// SetTopicConfigs replaces a topic's config overrides.
func (c *Catalog) SetTopicConfigs(name string, configs map[string]string) (*Topic, error) {
	for k, v := range configs {
		if err := ValidateTopicConfig(k, v); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	return c.commitTopic(Command{Op: OpSetTopicConfigs, Name: name, Configs: configs})
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// BrokerConfig resolves a broker key: dynamic override, then static
// (server.properties / --set), then the built-in default.
func (c *Catalog) BrokerConfig(key string) (string, ConfigSource) {
	c.mu.RLock()
	v, ok := c.st.dynamic[key]
	c.mu.RUnlock()
	if ok {
		return v, SourceDynamicDefaultBroker
	}
	if v, ok := c.static[key]; ok {
		return v, SourceStaticBroker
	}
	if v, ok := derivedStatic(c.static, key); ok {
		return v, SourceStaticBroker
	}
	if d, ok := brokerConfigIndex[key]; ok {
		return d.Default, SourceDefault
	}
	return "", SourceDefault
}

// derivedStatic applies Kafka's coarser aliases (log.retention.hours,
// log.roll.hours) when the millisecond key is not set.
func derivedStatic(static map[string]string, key string) (string, bool) {
	mul := func(k string, factor int64) (string, bool) {
		v, ok := static[k]
		if !ok {
			return "", false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", false
		}
		if n < 0 {
			return "-1", true
		}
		return strconv.FormatInt(n*factor, 10), true
	}
	switch key {
	case "log.retention.ms":
		if v, ok := mul("log.retention.minutes", 60_000); ok {
			return v, true
		}
		return mul("log.retention.hours", 3_600_000)
	case "log.roll.ms":
		return mul("log.roll.hours", 3_600_000)
	}
	return "", false
}

// BrokerDynamic returns a copy of the dynamic broker overrides.
func (c *Catalog) BrokerDynamic() map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return cloneMap(c.st.dynamic)
}

// SetBrokerDynamic replaces the dynamic broker overrides durably.
func (c *Catalog) SetBrokerDynamic(m map[string]string) error {
	for k, v := range m {
		d, ok := brokerConfigIndex[k]
		if !ok {
			return fmt.Errorf("%w: unknown broker config %q", ErrInvalidConfig, k)
		}
		if !d.Dynamic {
			return fmt.Errorf("%w: %s", ErrReadOnlyConfig, k)
		}
		if err := ValidateBrokerConfig(k, v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	_, err := c.commit(Command{Op: OpSetBrokerConfigs, Configs: m})
	return err
}

// TopicConfig resolves a topic key: topic override, then the broker key that
// supplies its default, then the built-in default.
func (c *Catalog) TopicConfig(t *Topic, key string) (string, ConfigSource) {
	if v, ok := t.Configs[key]; ok {
		return v, SourceDynamicTopic
	}
	d, ok := topicConfigIndex[key]
	if !ok {
		return "", SourceDefault
	}
	if d.BrokerKey != "" {
		if v, src := c.BrokerConfig(d.BrokerKey); src != SourceDefault {
			return v, src
		}
	}
	return d.Default, SourceDefault
}

// GroupGenerationsReserved is the generation reservation recorded before
// the last stop: every classic group generation handed out is at most this.
func (c *Catalog) GroupGenerationsReserved() int32 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.groupGens
}

// ReserveGroupGenerations durably records that group generations up to
// upto may be handed out, so a restarted coordinator starts above them.
func (c *Catalog) ReserveGroupGenerations(upto int32) error {
	if upto <= c.GroupGenerationsReserved() {
		return nil
	}
	_, err := c.commit(Command{Op: OpReserveGroupGenerations, GroupGenerations: upto})
	return err
}

// ClientQuotas returns the stored client quotas. The slice is shared: the
// caller must not modify it.
func (c *Catalog) ClientQuotas() []ClientQuota {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.quotas
}

// SetClientQuotas replaces the stored client quotas durably. The catalog
// keeps q; the caller must not modify it afterwards.
func (c *Catalog) SetClientQuotas(q []ClientQuota) error {
	_, err := c.commit(Command{Op: OpSetClientQuotas, ClientQuotas: q})
	return err
}

// ScramCredential returns a user's stored credential for a SCRAM
// mechanism.
func (c *Catalog) ScramCredential(user, mechanism string) (ScramCredential, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cr, ok := c.st.scram[user][mechanism]
	return cr, ok
}

// ScramCredentials returns the stored SCRAM credentials by user and
// mechanism. The maps are shared: the caller must not modify them.
func (c *Catalog) ScramCredentials() map[string]map[string]ScramCredential {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.scram
}

// SetScramCredentials replaces the stored SCRAM credentials durably. The
// catalog keeps m; the caller must not modify it afterwards.
func (c *Catalog) SetScramCredentials(m map[string]map[string]ScramCredential) error {
	_, err := c.commit(Command{Op: OpSetScramCredentials, ScramCredentials: m})
	return err
}

// ACLs returns the stored ACL bindings. The slice is shared: the caller
// must not modify it.
func (c *Catalog) ACLs() []acl.Binding {
	return c.ACLIndex().Bindings()
}

// ACLIndex is the stored ACL bindings indexed for authorization; it is
// rebuilt on every change, never modified.
func (c *Catalog) ACLIndex() *acl.Index {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.acls
}

// SetACLs replaces the stored ACL bindings durably. The catalog keeps
// bs; the caller must not modify it afterwards.
func (c *Catalog) SetACLs(bs []acl.Binding) error {
	_, err := c.commit(Command{Op: OpSetACLs, ACLs: bs})
	return err
}
