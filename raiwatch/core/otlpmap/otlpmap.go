// Package main is libotlpmap: the OTLP span mapping of raiwatch/core/otlp.py, compiled.
//
// Python's OtlpSpans maps an otlp_proto message span by span through protobuf's Python objects,
// where every field read costs; this library parses the message with the Collector's own pdata,
// checks the bytes as protobuf's own parser would (wellFormed, on the OTLP schema's descriptors),
// and writes each mapped span as the telemetry-event.v1 JSON line msgspec would write for the
// event Python builds, byte for byte. It maps only what it can map exactly: any
// message with something else in it (a span whose event breaks the contract, a value of a type
// the Python mapping turns into its repr, an evaluation in a span event, bytes protobuf refuses)
// is answered "fallback" and Python maps that message itself. tests/test_otlp_native.py holds
// the two equal.
//
// C ABI (ctypes, raiwatch/core/otlpnative.py):
//
//	int otlpmap_abi(void)
//	int otlpmap_new(char *config_json, int n)      -> handle, or -1 (config not understood)
//	int otlpmap_spans(int h, char *msg, int n, char **out, int *outn)  -> 0 mapped, 1 fallback
//	void otlpmap_free(void *p)
//
// The out buffer (little endian): u32 spans, u32 skipped not_genai, u32 operation, u32 no_model,
// u32 events, u32 length + "[" the events' JSON lines joined by "\n" "]"; u32 length + a JSON object of
// the events' gen_ai.response.id by event id; then each event's span start in seconds, f64.
package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	collpb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// abi changes whenever the config, the out buffer or the mapping changes (otlpnative.ABI).
const abi = 1

const (
	earliestNs = 31536000 * 1_000_000_000   // 1971-01-01
	latestNs   = 7258118400 * 1_000_000_000 // 2200-01-01
	evaluation = "gen_ai.evaluation.result" // span events of this name: Python's to map
)

// config is what otlpnative sends: OtelMapping's names, flattened.
type config struct {
	Read          []string     `json:"read"`  // attributes whose values are read
	Flags         []string     `json:"flags"` // markers not read: only their presence counts
	Markers       []string     `json:"markers"`
	Model         []string     `json:"model"`
	Version       []string     `json:"version"`
	IDs           []namedNames `json:"ids"` // deployment, feature, tenant_id, user_id, session_id
	InTokens      []string     `json:"in_tokens"`
	OutTokens     []string     `json:"out_tokens"`
	Texts         []string     `json:"texts"`
	Features      []namedNames `json:"features"`
	Segments      []namedNames `json:"segments"`
	Operations    []string     `json:"operations"`
	SegmentKeysOK bool         `json:"segment_keys_ok"`
	MaxBytes      int          `json:"max_bytes"` // an event's JSON longer than this is rejected
}

type namedNames struct {
	Key   string
	Names []string
}

func (n *namedNames) UnmarshalJSON(b []byte) error {
	var pair [2]json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if err := json.Unmarshal(pair[0], &n.Key); err != nil {
		return err
	}
	return json.Unmarshal(pair[1], &n.Names)
}

type kind uint8

const (
	kNone kind = iota // absent, or a value Python reads as None (kvlist, bytes, unset)
	kStr
	kInt
	kBool
	kDouble
	kList
)

type value struct {
	k    kind
	s    string
	i    int64
	f    float64
	b    bool
	list []value
}

// present: not None and not "" (Python's `v is not None and v != ""`)
func (v *value) present() bool { return v.k != kNone && !(v.k == kStr && v.s == "") }

// truthy: Python's truth value
func (v *value) truthy() bool {
	switch v.k {
	case kStr:
		return v.s != ""
	case kInt:
		return v.i != 0
	case kBool:
		return v.b
	case kDouble:
		return v.f != 0
	case kList:
		return len(v.list) > 0
	}
	return false
}

// str is Python's str(v) for the types whose str is plain; ok false for the others.
func (v *value) str() (string, bool) {
	switch v.k {
	case kStr:
		return v.s, true
	case kInt:
		return strconv.FormatInt(v.i, 10), true
	case kBool:
		if v.b {
			return "True", true
		}
		return "False", true
	}
	return "", false
}

// fromValue: the Python value of an attribute (Python's _value); ok false for a value pdata cannot
// tell apart (an unset value, or one of the newer string_value_strindex, which Python reads as int)
func fromValue(v pcommon.Value) (value, bool) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return value{k: kStr, s: v.Str()}, true
	case pcommon.ValueTypeInt:
		return value{k: kInt, i: v.Int()}, true
	case pcommon.ValueTypeBool:
		return value{k: kBool, b: v.Bool()}, true
	case pcommon.ValueTypeDouble:
		return value{k: kDouble, f: v.Double()}, true
	case pcommon.ValueTypeSlice:
		sl := v.Slice()
		l := make([]value, sl.Len())
		for j := range l {
			l[j], _ = fromValue(sl.At(j)) // an element pdata cannot tell apart stays kNone: never read as such
		}
		return value{k: kList, list: l}, true
	case pcommon.ValueTypeEmpty:
		return value{}, false
	}
	return value{}, true // kvlist, bytes: None
}

// slotted attribute names: span attributes land in a reused slice, not a map per span
type names []int

type mapper struct {
	slot                       map[string]int
	read, flag, marker, text   []bool
	model, version             names
	ids                        [5]names
	inTokens, outTokens        names
	features, segments         []namedSlots
	operations                 map[string]bool
	segmentKeysOK              bool
	maxBytes                   int
	inputValue, inputMessages  int
	prompt, outputValue        int
	outputMessages, completion int
	finishReasons, responseID  int
	errorType, operationName   int
}

type namedSlots struct {
	key   string
	slots names
}

var idOrder = [5]string{"deployment", "feature", "tenant_id", "user_id", "session_id"}

func newMapper(c *config) (*mapper, error) {
	m := &mapper{slot: map[string]int{}, segmentKeysOK: c.SegmentKeysOK, maxBytes: c.MaxBytes}
	add := func(n string) int {
		if s, ok := m.slot[n]; ok {
			return s
		}
		m.slot[n] = len(m.slot)
		m.read, m.flag, m.marker, m.text = append(m.read, false), append(m.flag, false), append(m.marker, false), append(m.text, false)
		return m.slot[n]
	}
	slots := func(ns []string) names {
		out := make(names, len(ns))
		for j, n := range ns {
			out[j] = add(n)
		}
		return out
	}
	for _, n := range c.Read {
		m.read[add(n)] = true
	}
	for _, n := range c.Flags {
		m.flag[add(n)] = true
	}
	for _, n := range c.Markers {
		m.marker[add(n)] = true
	}
	for _, n := range c.Texts {
		m.text[add(n)] = true
	}
	m.model, m.version = slots(c.Model), slots(c.Version)
	for _, id := range c.IDs {
		j := -1
		for k, key := range idOrder {
			if key == id.Key {
				j = k
			}
		}
		if j < 0 {
			return nil, errors.New("unknown id field " + id.Key)
		}
		m.ids[j] = slots(id.Names)
	}
	m.inTokens, m.outTokens = slots(c.InTokens), slots(c.OutTokens)
	for _, f := range c.Features {
		m.features = append(m.features, namedSlots{f.Key, slots(f.Names)})
	}
	for _, s := range c.Segments {
		m.segments = append(m.segments, namedSlots{s.Key, slots(s.Names)})
	}
	if c.Operations != nil {
		m.operations = map[string]bool{}
		for _, o := range c.Operations {
			m.operations[o] = true
		}
	}
	m.inputValue, m.inputMessages, m.prompt = add("input.value"), add("gen_ai.input.messages"), add("gen_ai.prompt")
	m.outputValue, m.outputMessages, m.completion = add("output.value"), add("gen_ai.output.messages"), add("gen_ai.completion")
	m.finishReasons, m.responseID = add("gen_ai.response.finish_reasons"), add("gen_ai.response.id")
	m.errorType, m.operationName = add("error.type"), add("gen_ai.operation.name")
	for _, s := range []int{m.inputValue, m.inputMessages, m.prompt, m.outputValue, m.outputMessages,
		m.completion, m.finishReasons, m.responseID, m.errorType} {
		if !m.read[s] {
			return nil, errors.New("fixed attributes must be read")
		}
	}
	return m, nil
}

// attrs: one span's (or resource's) wanted attributes by slot; has: the key is there at all;
// markers, texts: how many of those keys are markers, content attributes
type attrs struct {
	v              []value
	has            []bool
	set            []int // the slots set, to reset
	markers, texts int
}

func (a *attrs) reset(n int) {
	if len(a.v) < n {
		a.v, a.has = make([]value, n), make([]bool, n)
	}
	for _, s := range a.set {
		a.v[s], a.has[s] = value{}, false
	}
	a.set, a.markers, a.texts = a.set[:0], 0, 0
}

func (a *attrs) put(m *mapper, s int, v value) {
	if !a.has[s] {
		a.has[s] = true
		a.set = append(a.set, s)
		if m.marker[s] {
			a.markers++
		}
		if m.text[s] {
			a.texts++
		}
	}
	a.v[s] = v
}

var errFallback = errors.New("fallback")

// out: what one message maps to (one per call: a mapper is shared by the threads that call it)
type out struct {
	spans, notGenAI, operation, noModel uint32
	lines, rids                         []byte
	starts                              []uint64
	second                              int64  // the last timestamp's whole second ...
	secondText                          string // ... as written
}

// first: the first of names present, span attributes before resource attributes (Python's _first)
func first(sp, res *attrs, ns names) *value {
	for _, s := range ns {
		v := &sp.v[s]
		if v.k == kNone {
			v = &res.v[s]
		}
		if v.present() {
			return v
		}
	}
	return nil
}

func (m *mapper) message(msg []byte, o *out) error {
	if len(msg) == 0 {
		return errFallback
	}
	if !requestWire.wellFormed(msg, 0) {
		return errFallback // Python says why it is not OTLP
	}
	traces, err := unmarshaler.UnmarshalTraces(msg)
	if err != nil {
		return errFallback
	}
	var sp, res attrs
	n := len(m.slot)
	rss := traces.ResourceSpans()
	for r := 0; r < rss.Len(); r++ {
		rs := rss.At(r)
		res.reset(n)
		ok := true
		rs.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
			if s, found := m.slot[k]; found && (m.read[s] || m.marker[s]) {
				var x value
				x, ok = fromValue(v)
				res.put(m, s, x)
			}
			return ok
		})
		if !ok {
			return errFallback
		}
		sss := rs.ScopeSpans()
		for q := 0; q < sss.Len(); q++ {
			spans := sss.At(q).Spans()
			for j := 0; j < spans.Len(); j++ {
				span := spans.At(j)
				o.spans++
				sp.reset(n)
				span.Attributes().Range(func(k string, v pcommon.Value) bool {
					if s, found := m.slot[k]; found {
						if m.read[s] {
							var x value
							x, ok = fromValue(v)
							sp.put(m, s, x)
						} else if m.flag[s] {
							sp.put(m, s, value{k: kBool, b: true})
						}
					}
					return ok
				})
				if !ok {
					return errFallback
				}
				if err := m.span(span, &sp, &res, o); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var unmarshaler = ptrace.ProtoUnmarshaler{}

// wire is a message type's fields as wellFormed needs them, indexed by field number: whether a
// length-delimited field is a string or a message (and which), from the OTLP schema's descriptors.
type wire struct {
	kind []uint8 // 0 anything else (or unknown), 1 string, 2 message
	sub  []*wire
}

var requestWire = wireOf((&collpb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*wire{})

func wireOf(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*wire) *wire {
	if w, ok := seen[md.FullName()]; ok {
		return w // (AnyValue and its lists are recursive)
	}
	w := &wire{}
	seen[md.FullName()] = w
	fields := md.Fields()
	top := 0
	for j := 0; j < fields.Len(); j++ {
		top = max(top, int(fields.Get(j).Number()))
	}
	w.kind, w.sub = make([]uint8, top+1), make([]*wire, top+1)
	for j := 0; j < fields.Len(); j++ {
		fd := fields.Get(j)
		switch fd.Kind() {
		case protoreflect.StringKind:
			w.kind[fd.Number()] = 1
		case protoreflect.MessageKind:
			w.kind[fd.Number()], w.sub[fd.Number()] = 2, wireOf(fd.Message(), seen)
		}
	}
	return w
}

// wellFormed: protobuf's own parser (Python's upb) would accept b as a message of this type.
// pdata reads fast but leniently (no UTF-8 check of strings, groups in unknown fields unmatched,
// no depth limit); this walk over the wire format with the OTLP schema (opentelemetry-proto's Go
// bindings) checks what upb checks, and builds nothing.
func (w *wire) wellFormed(b []byte, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for len(b) > 0 {
		var num protowire.Number
		var typ protowire.Type
		if b[0] < 0x80 { // a one-byte tag (every OTLP field's): protowire.ConsumeTag, inline
			num, typ = protowire.Number(b[0]>>3), protowire.Type(b[0]&7)
			if num == 0 {
				return false
			}
			b = b[1:]
		} else {
			var n int
			if num, typ, n = protowire.ConsumeTag(b); n < 0 {
				return false
			}
			b = b[n:]
		}
		if typ == protowire.BytesType && int(num) < len(w.kind) && w.kind[num] != 0 {
			var v []byte
			if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) { // a one-byte length, inline
				v, b = b[1:1+b[0]], b[1+b[0]:]
			} else {
				n := 0
				if v, n = protowire.ConsumeBytes(b); n < 0 {
					return false
				}
				b = b[n:]
			}
			if w.kind[num] == 1 && !utf8.Valid(v) || w.kind[num] == 2 && !w.sub[num].wellFormed(v, depth+1) {
				return false
			}
			continue
		}
		switch {
		case typ == protowire.Fixed64Type && len(b) >= 8: // (span times: inline)
			b = b[8:]
			continue
		case typ == protowire.VarintType && len(b) > 0 && b[0] < 0x80:
			b = b[1:]
			continue
		}
		n := protowire.ConsumeFieldValue(num, typ, b) // (a group must end with its own number)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

const maxDepth = 60 // messages deep; upb's limit is 100

func (m *mapper) span(span ptrace.Span, sp, res *attrs, o *out) error {
	if sp.markers == 0 {
		o.notGenAI++
		return nil
	}
	if m.operations != nil {
		op := &sp.v[m.operationName]
		if op.k != kStr || !m.operations[op.s] {
			o.operation++
			return nil
		}
	}
	model := first(sp, res, m.model)
	if model == nil {
		o.noModel++
		return nil
	}
	tid, sid := span.TraceID(), span.SpanID()
	start, end := uint64(span.StartTimestamp()), uint64(span.EndTimestamp())
	// (pdata reads an absent id as zeros: Python tells those apart)
	if tid.IsEmpty() || sid.IsEmpty() || start < earliestNs || start >= latestNs {
		return errFallback // a problem: Python words it
	}
	modelID, ok := model.str()
	if !ok || utf8.RuneCountInString(modelID) > 128 {
		return errFallback
	}
	version, hasVersion := "", false
	for _, s := range m.version {
		v := &sp.v[s]
		if v.k == kNone {
			v = &res.v[s]
		}
		if v.present() {
			if v.k != kStr && v.k != kInt || model.k != kStr && model.k != kInt {
				return errFallback // Python compares across types
			}
			if v.k != model.k || v.s != model.s || v.i != model.i {
				version, _ = v.str()
				hasVersion = true
				if utf8.RuneCountInString(version) > 128 {
					return errFallback
				}
			}
			break
		}
	}
	var ids [5]string
	var hasID [5]bool
	for j, ns := range m.ids {
		if v := first(sp, res, ns); v != nil {
			s, ok := v.str()
			if !ok || utf8.RuneCountInString(s) > 128 {
				return errFallback
			}
			ids[j], hasID[j] = s, true
		}
	}
	inTokens, hasIn := tokens(sp, m.inTokens)
	outTokens, hasOut := tokens(sp, m.outTokens)

	finish, hasFinish := "", false
	if r := &sp.v[m.finishReasons]; r.truthy() {
		v := r
		if r.k == kList {
			v = &r.list[0]
		}
		s, ok := v.str()
		if !ok {
			return errFallback
		}
		finish, hasFinish = prefix(s, 64), true
	}
	errText, hasErr := "", false
	if e := &sp.v[m.errorType]; e.k != kNone {
		s, ok := e.str()
		if !ok {
			return errFallback
		}
		errText, hasErr = s, true
	} else if span.Status().Code() == ptrace.StatusCodeError {
		errText, hasErr = span.Status().Message(), true
		if errText == "" {
			errText = "error"
		}
	}
	inText, outText := "", ""
	if sp.texts > 0 {
		var err error
		if inText, err = m.text_(sp, m.inputValue, m.inputMessages, m.prompt, "user"); err != nil {
			return err
		}
		if outText, err = m.text_(sp, m.outputValue, m.outputMessages, m.completion, ""); err != nil {
			return err
		}
	}
	var feats []byte // the features object's members, opened, not closed
	for _, f := range m.features {
		v := first(sp, res, f.slots)
		if v == nil {
			continue
		}
		feats = member(feats, 0, f.key)
		switch v.k {
		case kStr:
			feats = appendString(feats, v.s)
		case kInt:
			feats = appendFloat(feats, float64(v.i)) // the contract's features are floats
		case kDouble:
			if math.IsNaN(v.f) || math.IsInf(v.f, 0) {
				return errFallback
			}
			feats = appendFloat(feats, v.f)
		case kBool:
			feats = strconv.AppendBool(feats, v.b)
		default:
			return errFallback // Python writes its repr
		}
	}
	var segs []byte // the segments object's members, opened, not closed
	for _, g := range m.segments {
		v := first(sp, res, g.slots)
		if v == nil {
			continue
		}
		s, ok := v.str()
		if !ok || !m.segmentKeysOK || utf8.RuneCountInString(s) > 128 {
			return errFallback
		}
		segs = appendString(member(segs, 0, g.key), s)
	}
	rid := ""
	if r := &sp.v[m.responseID]; r.truthy() {
		s, ok := r.str()
		if !ok {
			return errFallback
		}
		rid = s
	}
	for e := 0; e < span.Events().Len(); e++ {
		if span.Events().At(e).Name() == evaluation {
			return errFallback // Python maps evaluations
		}
	}

	// the event, as msgspec encodes TelemetryEvent (omit_defaults, field order)
	b := o.lines
	if len(o.starts) > 0 {
		b = append(b, '\n') // (a line holds no raw newline: JSON strings escape it)
	}
	at := len(b)
	b = append(b, `{"schema_version":1,"event_id":"`...)
	var idbuf [48]byte
	hex.Encode(idbuf[:32], tid[:])
	hex.Encode(idbuf[32:], sid[:])
	b = append(b, idbuf[:]...)
	b = append(b, `","timestamp":"`...)
	b = o.appendTime(b, start)
	b = append(b, `","model":{"id":`...)
	b = appendString(b, modelID)
	if hasVersion {
		b = append(b, `,"version":`...)
		b = appendString(b, version)
	}
	b = append(b, `,"kind":"llm"}`...)
	for j, key := range idOrder {
		if hasID[j] {
			b = append(b, `,"`...)
			b = append(b, key...)
			b = append(b, `":`...)
			b = appendString(b, ids[j])
		}
	}
	if inText != "" || hasIn || len(feats) > 0 {
		b = append(b, `,"request":`...)
		open := len(b)
		if inText != "" {
			b = appendString(member(b, open, "text"), inText)
		}
		if hasIn {
			b = strconv.AppendInt(member(b, open, "tokens"), inTokens, 10)
		}
		if len(feats) > 0 {
			b = append(append(member(b, open, "features"), feats...), '}')
		}
		b = append(b, '}')
	}
	hasLatency := end >= start
	if hasOut || hasLatency || hasFinish || hasErr || outText != "" {
		b = append(b, `,"response":`...)
		open := len(b)
		if hasOut {
			b = strconv.AppendInt(member(b, open, "tokens"), outTokens, 10)
		}
		if hasLatency {
			b = appendFloat(member(b, open, "latency_ms"), float64(end-start)/1e6)
		}
		if hasFinish {
			b = appendString(member(b, open, "finish_reason"), finish)
		}
		if hasErr {
			b = appendString(member(b, open, "error"), prefix(errText, 512))
		}
		if outText != "" {
			b = appendString(member(b, open, "text"), outText)
		}
		b = append(b, '}')
	}
	if len(segs) > 0 {
		b = append(append(append(b, `,"segments":`...), segs...), '}')
	}
	b = append(b, '}')
	o.lines = b
	if len(b)-at > m.maxBytes {
		return errFallback // (the Python mapping decides what an event this large becomes)
	}
	if rid != "" {
		if len(o.rids) > 0 {
			o.rids = append(o.rids, ',')
		}
		o.rids = append(o.rids, '"')
		o.rids = append(o.rids, idbuf[:]...)
		o.rids = append(o.rids, `":`...)
		o.rids = appendString(o.rids, rid)
	}
	o.starts = append(o.starts, start)
	return nil
}

// member appends a JSON object member's name to b, where the object's members start at open: the
// object's "{" before the first, "," before the others (the caller closes the object)
func member(b []byte, open int, name string) []byte {
	if len(b) == open {
		b = append(b, '{')
	} else {
		b = append(b, ',')
	}
	return append(appendString(b, name), ':')
}

// tokens: the first present of names in the span's attributes; a count only if a non-negative int
func tokens(sp *attrs, ns names) (int64, bool) {
	for _, s := range ns {
		if v := &sp.v[s]; v.present() {
			if v.k == kInt && v.i >= 0 {
				return v.i, true
			}
			return 0, false
		}
	}
	return 0, false
}

// text_: Python's `get(value) or _text(get(messages), role)`, then the plain attribute's fallback
func (m *mapper) text_(sp *attrs, valueSlot, messagesSlot, plainSlot int, role string) (string, error) {
	v := &sp.v[valueSlot]
	if v.k != kNone && v.k != kStr {
		return "", errFallback
	}
	if v.s != "" {
		return v.s, nil
	}
	text, none, err := messagesText(&sp.v[messagesSlot], role)
	if err != nil {
		return "", err
	}
	if none {
		if p := &sp.v[plainSlot]; p.k == kStr {
			return p.s, nil
		}
	}
	return text, nil
}

// messagesText is Python's _text: the text parts of the last message (of role) of GenAI messages
// JSON; none: Python's None.
func messagesText(v *value, role string) (string, bool, error) {
	if v.k != kStr {
		return "", true, nil
	}
	s := v.s
	if hasSurrogateEscape(s) || strings.Count(s, "[")+strings.Count(s, "{") > 500 {
		return "", false, errFallback // where Go's JSON reader and orjson may differ
	}
	var doc any
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return s, false, nil // not JSON: the text itself
		}
		return "", false, errFallback
	}
	msgs, ok := doc.([]any)
	if !ok {
		return "", true, nil
	}
	for j := len(msgs) - 1; j >= 0; j-- {
		msg, ok := msgs[j].(map[string]any)
		if !ok || (role != "" && msg["role"] != role) {
			continue
		}
		parts, _ := msg["parts"].([]any)
		var texts []string
		for _, p := range parts {
			part, ok := p.(map[string]any)
			if !ok || part["type"] != "text" {
				continue
			}
			if c, ok := part["content"].(string); ok {
				texts = append(texts, c)
			}
		}
		joined := strings.Join(texts, "\n")
		return joined, joined == "", nil
	}
	return "", true, nil
}

func hasSurrogateEscape(s string) bool {
	for j := strings.Index(s, `\u`); j >= 0 && j+3 < len(s); {
		if c := s[j+2]; (c == 'd' || c == 'D') && strings.IndexByte("89abcdefABCDEF", s[j+3]) >= 0 {
			return true
		}
		k := strings.Index(s[j+2:], `\u`)
		if k < 0 {
			break
		}
		j += 2 + k
	}
	return false
}

// prefix: the first n code points (Python's s[:n])
func prefix(s string, n int) string {
	for j := range s {
		if n == 0 {
			return s[:j]
		}
		n--
	}
	return s
}

// appendString appends s as msgspec writes it: only '"', '\\' and control characters escaped
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	last := 0
	for j := 0; j < len(s); j++ {
		c := s[j]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[last:j]...)
		switch c {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\b':
			b = append(b, `\b`...)
		case '\t':
			b = append(b, `\t`...)
		case '\n':
			b = append(b, `\n`...)
		case '\f':
			b = append(b, `\f`...)
		case '\r':
			b = append(b, `\r`...)
		default:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4])
			b = append(b, "0123456789abcdef"[c&15])
		}
		last = j + 1
	}
	b = append(b, s[last:]...)
	b = append(b, '"')
	return b
}

// appendFloat appends a finite f as msgspec writes it: the shortest round-trip digits, positional for
// decimal exponents -5..15 (with ".0" when whole), else d.ddde<exp>
func appendFloat(b []byte, f float64) []byte {
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // [-]d[.ddd]e±XX
	at := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[at+1:]))
	mant := e[:at]
	if mant[0] == '-' {
		b = append(b, '-')
		mant = mant[1:]
	}
	if exp < -5 || exp >= 16 {
		b = append(b, mant...)
		b = append(b, 'e')
		b = append(b, strconv.Itoa(exp)...)
		return b
	}
	var dbuf [24]byte
	digits := append(dbuf[:0], mant[0])
	if len(mant) > 2 {
		digits = append(digits, mant[2:]...) // (mant[1] is the point)
	}
	switch {
	case exp < 0:
		b = append(b, "0."...)
		for range -exp - 1 {
			b = append(b, '0')
		}
		b = append(b, digits...)
	case len(digits) <= exp+1:
		b = append(b, digits...)
		for range exp + 1 - len(digits) {
			b = append(b, '0')
		}
		b = append(b, ".0"...)
	default:
		b = append(b, digits[:exp+1]...)
		b = append(b, '.')
		b = append(b, digits[exp+1:]...)
	}
	return b
}

// appendTime appends the span start as Python's datetime.fromtimestamp(ns / 1e9, UTC) through msgspec
func (o *out) appendTime(b []byte, ns uint64) []byte {
	t := float64(ns) / 1e9
	whole, frac := math.Modf(t)
	us := math.RoundToEven(frac * 1e6)
	if us >= 1e6 {
		whole++
		us -= 1e6
	}
	if int64(whole) != o.second || o.secondText == "" {
		o.second, o.secondText = int64(whole), time.Unix(int64(whole), 0).UTC().Format("2006-01-02T15:04:05")
	}
	b = append(b, o.secondText...)
	if us > 0 {
		var digits [8]byte
		d := strconv.AppendInt(digits[:0], 1_000_000+int64(us), 10) // "1" and six digits
		d[0] = '.'
		b = append(b, d...)
	}
	b = append(b, 'Z')
	return b
}

var (
	mu      sync.Mutex
	mappers []*mapper
)

//export otlpmap_abi
func otlpmap_abi() C.int { return abi }

//export otlpmap_new
func otlpmap_new(cfg *C.char, n C.int) C.int {
	var c config
	if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(cfg), n), &c); err != nil {
		return -1
	}
	m, err := newMapper(&c)
	if err != nil {
		return -1
	}
	mu.Lock()
	defer mu.Unlock()
	mappers = append(mappers, m)
	return C.int(len(mappers) - 1)
}

//export otlpmap_spans
func otlpmap_spans(h C.int, msg *C.char, n C.int, outp **C.char, outn *C.int) C.int {
	mu.Lock()
	m := mappers[h]
	mu.Unlock()
	o := out{starts: make([]uint64, 0, 256)}
	o.lines = append(make([]byte, 0, int(n)+2), '[')
	if err := m.message(unsafe.Slice((*byte)(unsafe.Pointer(msg)), int(n)), &o); err != nil {
		return 1
	}
	lines, rids := append(o.lines, ']'), o.rids
	size := 24 + len(lines) + 4 + len(rids) + 2 + 8*len(o.starts)
	p := C.malloc(C.size_t(size))
	buf := unsafe.Slice((*byte)(p), size)[:0]
	for _, x := range []uint32{o.spans, o.notGenAI, o.operation, o.noModel, uint32(len(o.starts)), uint32(len(lines))} {
		buf = binary.LittleEndian.AppendUint32(buf, x)
	}
	buf = append(buf, lines...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(rids)+2))
	buf = append(append(append(buf, '{'), rids...), '}')
	for _, s := range o.starts {
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(float64(s)/1e9)) // Python's ns / 1e9
	}
	*outp, *outn = (*C.char)(p), C.int(size)
	return 0
}

//export otlpmap_free
func otlpmap_free(p unsafe.Pointer) { C.free(p) }

func init() {
	// the garbage of a message is small and short-lived: collect it less often than Go's default
	// (GOGC, when set, is the user's)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

func main() {}
