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

	mu        sync.RWMutex // guards the fields below; writers also hold it across the file rewrite
	clusterID string
	byName    map[string]*Topic
	byID      map[TopicID]*Topic
	dynamic   map[string]string
	groupGens int32
	quotas    []ClientQuota
	scram     map[string]map[string]ScramCredential
	acls      *acl.Index
	deleting  []*Topic
}

const catalogName = "cluster.json"

// OpenCatalog loads (or creates) the catalog in dir. static holds the broker
// configs from server.properties and --set, already validated.
func OpenCatalog(fsys vfs.FS, dir string, static map[string]string) (*Catalog, error) {
	c := &Catalog{fs: fsys, dir: dir, static: static, byName: map[string]*Topic{}, byID: map[TopicID]*Topic{}, dynamic: map[string]string{}}
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return nil, err
	}
	err := c.load()
	if errors.Is(err, os.ErrNotExist) {
		c.clusterID = newClusterID()
		if err := c.persistLocked(); err != nil {
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
	c := &Catalog{fs: fsys, dir: dir, byName: map[string]*Topic{}, byID: map[TopicID]*Topic{}, dynamic: map[string]string{}}
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
	var cf catalogFile
	if err := json.Unmarshal(buf, &cf); err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, catalogName), err)
	}
	if cf.Version > catalogVersion {
		return fmt.Errorf("%w: %s has format version %d, newer than this binary reads (up to %d): run the exactly version that wrote it, or a newer one",
			ErrDataDir, filepath.Join(dir, catalogName), cf.Version, catalogVersion)
	}
	c.deleting = cf.Deleting
	c.clusterID = cf.ClusterID
	c.groupGens = cf.GroupGenerations
	c.quotas = cf.ClientQuotas
	c.scram = cf.ScramCredentials
	c.acls = acl.NewIndex(cf.ACLs)
	for _, t := range cf.Topics {
		c.byName[t.Name] = t
		c.byID[t.ID] = t
	}
	for k, v := range cf.BrokerConfigs {
		// A key that was dynamic in an older version but is read-only
		// now is dropped: the operator's static value applies again.
		if d, ok := brokerConfigIndex[k]; ok && d.Dynamic {
			c.dynamic[k] = v
		}
	}
	return nil
}

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

// persistLocked rewrites the catalog file atomically. c.mu must be held.
func (c *Catalog) persistLocked() error {
	cf := catalogFile{Version: catalogVersion, ClusterID: c.clusterID, BrokerConfigs: c.dynamic, GroupGenerations: c.groupGens,
		ClientQuotas: c.quotas, ScramCredentials: c.scram, ACLs: c.acls.Bindings(), Deleting: c.deleting}
	for _, t := range c.byName {
		cf.Topics = append(cf.Topics, t)
	}
	sort.Slice(cf.Topics, func(i, j int) bool { return cf.Topics[i].Name < cf.Topics[j].Name })
	data, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	return vfs.WriteFileAtomic(c.fs, filepath.Join(c.dir, catalogName), data)
}

// ClusterID is the cluster's stable ID, created on first start.
func (c *Catalog) ClusterID() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.clusterID
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
	t, ok := c.byName[name]
	c.mu.RUnlock()
	return t, ok
}

// TopicByID returns the topic with the given ID.
func (c *Catalog) TopicByID(id TopicID) (*Topic, bool) {
	c.mu.RLock()
	t, ok := c.byID[id]
	c.mu.RUnlock()
	return t, ok
}

// Topics returns all topics sorted by name.
func (c *Catalog) Topics() []*Topic {
	c.mu.RLock()
	out := make([]*Topic, 0, len(c.byName))
	for _, t := range c.byName {
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
	if partitions > 100000 {
		return fmt.Errorf("%w: %d is more than this broker allows (100000)", ErrInvalidPartitions, partitions)
	}
	for k, v := range configs {
		if err := ValidateTopicConfig(k, v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if _, ok := c.byName[name]; ok {
		return fmt.Errorf("%w: %q", ErrTopicExists, name)
	}
	key := collisionKey(name)
	for other := range c.byName {
		if collisionKey(other) == key {
			return fmt.Errorf("%w: %q collides with existing topic %q ('.' and '_' are interchangeable in metric names)", ErrInvalidTopic, name, other)
		}
	}
	return nil
}

// CreateTopic adds a topic durably and returns it.
func (c *Catalog) CreateTopic(name string, partitions int32, configs map[string]string, internal bool) (*Topic, error) {
	if err := c.ValidateNewTopic(name, partitions, configs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byName[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrTopicExists, name)
	}
	t := &Topic{Name: name, ID: newTopicID(), Partitions: partitions, Configs: cloneMap(configs), Internal: internal}
	c.byName[name] = t
	c.byID[t.ID] = t
	if err := c.persistLocked(); err != nil {
		delete(c.byName, name)
		delete(c.byID, t.ID)
		return nil, err
	}
	return t, nil
}

// DeleteTopic removes a topic durably and returns what it was.
func (c *Catalog) DeleteTopic(name string) (*Topic, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	delete(c.byName, name)
	delete(c.byID, t.ID)
	oldDeleting := c.deleting
	c.deleting = append(slices.Clip(c.deleting), t)
	if err := c.persistLocked(); err != nil {
		c.byName[name] = t
		c.byID[t.ID] = t
		c.deleting = oldDeleting
		return nil, err
	}
	return t, nil
}

// Deleting returns the deleted topics whose directories may still exist.
func (c *Catalog) Deleting() []*Topic {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.deleting)
}

// DeletionDone durably forgets a deleted topic once its directories are
// gone.
func (c *Catalog) DeletionDone(id TopicID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.deleting, func(t *Topic) bool { return t.ID == id })
	if i < 0 {
		return nil
	}
	old := c.deleting
	c.deleting = slices.Delete(slices.Clone(c.deleting), i, i+1)
	if err := c.persistLocked(); err != nil {
		c.deleting = old
		return err
	}
	return nil
}

// SetPartitions raises a topic's partition count.
func (c *Catalog) SetPartitions(name string, count int32) (*Topic, error) {
	return c.update(name, func(t *Topic) error {
		if count <= t.Partitions {
			return fmt.Errorf("%w: topic %q has %d partitions; the new count %d must be larger", ErrInvalidPartitions, name, t.Partitions, count)
		}
		if count > 100000 {
			return fmt.Errorf("%w: %d is more than this broker allows (100000)", ErrInvalidPartitions, count)
		}
		t.Partitions = count
		return nil
	})
}

// SetTopicConfigs replaces a topic's config overrides.
func (c *Catalog) SetTopicConfigs(name string, configs map[string]string) (*Topic, error) {
	for k, v := range configs {
		if err := ValidateTopicConfig(k, v); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	return c.update(name, func(t *Topic) error {
		t.Configs = cloneMap(configs)
		return nil
	})
}

func (c *Catalog) update(name string, fn func(*Topic) error) (*Topic, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	nt := *old
	nt.Configs = cloneMap(old.Configs)
	if err := fn(&nt); err != nil {
		return nil, err
	}
	c.byName[name] = &nt
	c.byID[nt.ID] = &nt
	if err := c.persistLocked(); err != nil {
		c.byName[name] = old
		c.byID[old.ID] = old
		return nil, err
	}
	return &nt, nil
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
	v, ok := c.dynamic[key]
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
	return cloneMap(c.dynamic)
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
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.dynamic
	c.dynamic = cloneMap(m)
	if c.dynamic == nil {
		c.dynamic = map[string]string{}
	}
	if err := c.persistLocked(); err != nil {
		c.dynamic = old
		return err
	}
	return nil
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
	return c.groupGens
}

// ReserveGroupGenerations durably records that group generations up to
// upto may be handed out, so a restarted coordinator starts above them.
func (c *Catalog) ReserveGroupGenerations(upto int32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if upto <= c.groupGens {
		return nil
	}
	old := c.groupGens
	c.groupGens = upto
	if err := c.persistLocked(); err != nil {
		c.groupGens = old
		return err
	}
	return nil
}

// ClientQuotas returns the stored client quotas. The slice is shared: the
// caller must not modify it.
func (c *Catalog) ClientQuotas() []ClientQuota {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.quotas
}

// SetClientQuotas replaces the stored client quotas durably. The catalog
// keeps q; the caller must not modify it afterwards.
func (c *Catalog) SetClientQuotas(q []ClientQuota) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.quotas
	c.quotas = q
	if err := c.persistLocked(); err != nil {
		c.quotas = old
		return err
	}
	return nil
}

// ScramCredential returns a user's stored credential for a SCRAM
// mechanism.
func (c *Catalog) ScramCredential(user, mechanism string) (ScramCredential, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cr, ok := c.scram[user][mechanism]
	return cr, ok
}

// ScramCredentials returns the stored SCRAM credentials by user and
// mechanism. The maps are shared: the caller must not modify them.
func (c *Catalog) ScramCredentials() map[string]map[string]ScramCredential {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.scram
}

// SetScramCredentials replaces the stored SCRAM credentials durably. The
// catalog keeps m; the caller must not modify it afterwards.
func (c *Catalog) SetScramCredentials(m map[string]map[string]ScramCredential) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.scram
	c.scram = m
	if err := c.persistLocked(); err != nil {
		c.scram = old
		return err
	}
	return nil
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
	return c.acls
}

// SetACLs replaces the stored ACL bindings durably. The catalog keeps
// bs; the caller must not modify it afterwards.
func (c *Catalog) SetACLs(bs []acl.Binding) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.acls
	c.acls = acl.NewIndex(bs)
	if err := c.persistLocked(); err != nil {
		c.acls = old
		return err
	}
	return nil
}
