package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// decodeYAML decodes a YAML document onto cfg, which holds the defaults, so
// keys the file leaves out keep them. It reports every unknown key and every
// value of the wrong type, each by its YAML path, which json.Unmarshal cannot
// do: it stops at the first error and names no key for custom types.
//
// A YAML syntax error stops decoding (fatal); unknown keys and values of the
// wrong type are collected (keyErrs) while the rest is still decoded, so
// that the caller can report them together with validation problems.
func decodeYAML(data []byte, cfg *Config) (keyErrs []error, fatal error) {
	raw, err := toGeneric(data)
	if err != nil {
		return nil, err
	}
	var d decoder
	d.value("", raw, reflect.ValueOf(cfg).Elem())
	applyEmailDomainsDefault(raw, cfg)
	d.errs = append(d.errs, applyRedisDefault(raw, cfg)...)
	cfg.inheritApps(raw)
	return d.errs, nil
}

// toGeneric turns YAML into the generic JSON values (map[string]any, []any,
// string, bool, json.Number, nil). YAMLToJSONStrict rejects duplicate keys.
func toGeneric(data []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, yamlError(err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	// Numbers stay json.Number so integers are exact.
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	return raw, nil
}

// duplicateRE matches the YAML library's duplicate key report.
var duplicateRE = regexp.MustCompile(`line (\d+): key (".*") already set in map`)

// yamlError rewrites the YAML library's duplicate key reports as
// `duplicate key "x" (line N)`, one error each.
func yamlError(err error) error {
	matches := duplicateRE.FindAllStringSubmatch(err.Error(), -1)
	if len(matches) == 0 {
		return fmt.Errorf("parse YAML: %w", err)
	}
	errs := make([]error, 0, len(matches))
	for _, m := range matches {
		errs = append(errs, fmt.Errorf("duplicate key %s (line %s)", m[2], m[1]))
	}
	return errors.Join(errs...)
}

// applyEmailDomainsDefault drops the ["*"] default of
// authorization.emailDomains when the file lists authorization.emails but no
// emailDomains: "emails: [alice@x.com]" must admit only alice.
func applyEmailDomainsDefault(raw any, cfg *Config) {
	authz, _ := asMap(raw)["authorization"].(map[string]any)
	_, domains := authz["emailDomains"]
	_, emails := authz["emails"]
	if emails && !domains {
		cfg.Authorization.EmailDomains = nil
	}
}

// applyRedisDefault turns Redis on when the file says where it is
// (session.redis.address or session.redis.sentinel.masterName) and leaves
// session.redis.enabled out: a multi-replica deployment that names its
// Redis and forgets the switch would otherwise replay rotated refresh
// tokens. An explicit enabled: false keeps it off (Warnings says so), and
// contradicts session.store: redis.
func applyRedisDefault(raw any, cfg *Config) []error {
	session := asMap(asMap(raw)["session"])
	redis := asMap(session["redis"])
	_, address := redis["address"]
	_, master := asMap(redis["sentinel"])["masterName"]
	enabled, stated := redis["enabled"]
	r := &cfg.Session.Redis
	switch {
	case !stated && (address || master):
		r.Enabled = true
	case stated && enabled == false && cfg.Session.Store == StoreRedis:
		return []error{errors.New(`session.redis.enabled: false contradicts session.store: redis (the sessions live in Redis); remove it`)}
	case stated && enabled == false && (address || master):
		r.ignored = true
	}
	return nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// decoder walks a generic YAML value against a Go value, collecting errors.
type decoder struct {
	errs []error
}

func (d *decoder) fail(path, format string, args ...any) {
	if path == "" {
		path = "(top level)"
	}
	d.errs = append(d.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// value stores raw into v. Like encoding/json, null sets slices and maps to
// nil and leaves everything else (so: the default) alone.
func (d *decoder) value(path string, raw any, v reflect.Value) {
	if raw == nil {
		if k := v.Kind(); k == reflect.Slice || k == reflect.Map {
			v.SetZero()
		}
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		d.unmarshaler(path, raw, v)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.object(path, raw, v)
	case reflect.Map:
		d.mapping(path, raw, v)
	case reflect.Slice:
		d.list(path, raw, v)
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.fail(path, "expected a string, got %s", kindOf(raw))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.fail(path, "expected true or false, got %s", kindOf(raw))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		d.integer(path, raw, v)
	default:
		// Only reachable by adding a field of a new kind to Config.
		panic(fmt.Sprintf("config: cannot decode into %s at %s", v.Type(), path))
	}
}

// object decodes a YAML mapping into a struct by its json tags, reporting
// every key the struct does not have.
func (d *decoder) object(path string, raw any, v reflect.Value) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.fail(path, "expected a mapping, got %s", kindOf(raw))
		return
	}
	fields := fieldsByTag(v.Type())
	// Sorted, so that errors come out in a stable order.
	for _, key := range slices.Sorted(maps.Keys(m)) {
		sub := joinPath(path, key)
		i, ok := fields[key]
		if !ok {
			d.errs = append(d.errs, fmt.Errorf("unknown key %q", sub))
			continue
		}
		d.value(sub, m[key], v.Field(i))
	}
}

// mapping decodes a YAML mapping into a Go map; any key is accepted.
func (d *decoder) mapping(path string, raw any, v reflect.Value) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.fail(path, "expected a mapping, got %s", kindOf(raw))
		return
	}
	out := reflect.MakeMapWithSize(v.Type(), len(m))
	for _, key := range slices.Sorted(maps.Keys(m)) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(joinPath(path, key), m[key], elem)
		out.SetMapIndex(reflect.ValueOf(key), elem)
	}
	v.Set(out)
}

// list decodes a YAML sequence into a slice, replacing the default.
func (d *decoder) list(path string, raw any, v reflect.Value) {
	items, ok := raw.([]any)
	if !ok {
		d.fail(path, "expected a list, got %s", kindOf(raw))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(items), len(items))
	for i, item := range items {
		d.value(fmt.Sprintf("%s[%d]", path, i), item, out.Index(i))
	}
	v.Set(out)
}

func (d *decoder) integer(path string, raw any, v reflect.Value) {
	n, ok := raw.(json.Number)
	if !ok {
		d.fail(path, "expected an integer, got %s", kindOf(raw))
		return
	}
	i, err := n.Int64()
	if err != nil || v.OverflowInt(i) {
		d.fail(path, "expected an integer, got %s", n)
		return
	}
	v.SetInt(i)
}

// unmarshaler hands raw to the type's own UnmarshalJSON (Duration) and names
// the key in its error.
func (d *decoder) unmarshaler(path string, raw any, v reflect.Value) {
	b, err := json.Marshal(raw)
	if err != nil {
		d.fail(path, "%v", err)
		return
	}
	if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
		d.fail(path, "%v", err)
	}
}

// fieldsByTag maps each json name of t's exported fields to its index;
// fields tagged "-" are not settable from the file.
func fieldsByTag(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = i
	}
	return fields
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// kindOf names a generic YAML value's kind for type errors. It never quotes
// the value: the key may be a secret.
func kindOf(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%T", raw)
	}
}
