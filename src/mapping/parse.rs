//! A JSON parser that reads a LogEvent into a flat, borrowing document ([`Doc`]).
//!
//! The record keeps the whole LogEvent as an encoded `google.protobuf.Struct`
//! (`event_details`) and reads the typed card fields out of it.
//! So the bytes are parsed exactly once, into a document that owns no per-value allocations:
//! strings are spans of the input (or of one buffer for the few strings with escapes),
//! objects and arrays are ranges of two flat vectors. Each object's members are sorted by key
//! and deduplicated when it closes (a sequence of keys seen before is recognised, not sorted
//! again: [`Buffers`] keep the orders they sorted), and the encoded size of every object and
//! array is known then too, so [`Doc`] can write `Struct` wire bytes in one pass with no size
//! pre-computation and no tree of `prost_types` values. It is hand-written rather than a serde
//! `Visitor` because parsing is the largest cost of the mapping: the input is checked for UTF-8
//! once up front, and strings are scanned eight bytes at a time.
//!
//! It accepts exactly RFC 8259 JSON, as `serde_json` does (tests compare the two on arbitrary
//! input): no comments, no trailing commas, no lone surrogates in `\u` escapes, no control
//! characters in strings; duplicate keys keep the last value. Numbers are `f64`, correctly
//! rounded (the only number type a `Struct` has); a number too large for `f64` is an error.

use std::num::{NonZeroU32, NonZeroU64};

/// Deepest object/array nesting accepted in a LogEvent (the top-level object is level 1).
///
/// In `event_details` every JSON object level costs three levels of protobuf message nesting
/// (`Struct`, map entry, `Value`), and protobuf decoders stop at 100 levels (prost, C++, Java,
/// Python alike): measured with prost, an `Event` stops decoding at 35 levels, inside a
/// `ListEventsResponse` at 34. Without a limit an event could be stored that no subscriber can
/// decode; 24 leaves room for wrapping messages. Real LogEvents nest about 6 deep.
pub const MAX_DEPTH: u32 = 24;

/// Deepest nesting accepted in a whole hook body (the envelope object is level 1). Each
/// LogEvent of `data.events` is held to [`MAX_DEPTH`] counted from the event itself, so a
/// too-deep event is quarantined with its delivery committed; this cap only bounds the
/// parser's recursion, as serde_json's default limit did before.
pub const MAX_BODY_DEPTH: u32 = 128;

/// Largest input the parser reads, in bytes. Offsets and encoded sizes are held as `u32`, which
/// halves the document's memory and lets a parsed value travel in two registers. An encoded
/// `Struct` is at most about six times its JSON (`[0,0,…]`: 2 bytes become 11), so 128 MiB
/// keeps every size and offset below 2^31. Hook
/// bodies are capped far lower (`OKTA_STREAM_HOOK_MAX_BODY_BYTES`, 10 MiB by default).
pub const MAX_INPUT_BYTES: usize = 128 << 20;

/// Why bytes are not a JSON value the mapping accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON: what was expected, and the byte offset where it was not found.
    #[error("not JSON: {what} at byte {at}")]
    Syntax {
        /// What the parser expected or found.
        what: &'static str,
        /// Byte offset into the input.
        at: usize,
    },
    /// Valid so far, but objects and arrays nest deeper than `limit` levels ([`MAX_DEPTH`]
    /// for a LogEvent, [`MAX_BODY_DEPTH`] for a hook body).
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The limit that was passed.
        limit: u32,
    },
    /// Longer than [`MAX_INPUT_BYTES`].
    #[error("{len} bytes is more than the {MAX_INPUT_BYTES} bytes the parser reads")]
    TooLarge {
        /// The input's length.
        len: usize,
    },
}

/// A string of the document: bytes `start..end` of the input, or of [`Doc::escaped`] (strings
/// that had escapes, unescaped). Eight bytes with a niche (`end` is never zero), so a
/// `Step<Span>` is returned in a register, not through the stack.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    /// The end offset, with [`Span::ESCAPED`] set for a span of `escaped`. A plain span ends
    /// after its opening quote, and an escaped one has the flag set: never zero.
    end: NonZeroU32,
}

impl Span {
    /// The flag bit of `end`; offsets stay below it ([`MAX_INPUT_BYTES`]).
    const ESCAPED: u32 = 1 << 31;

    /// Bytes `start..end` of the input, which follow an opening quote (so `end` is at least 1).
    fn plain(start: usize, end: usize) -> Self {
        debug_assert!(end > 0, "a string's bytes follow its opening quote");
        Self {
            start: start as u32,
            end: NonZeroU32::new(end as u32).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// Bytes `start..end` of the unescaped strings.
    fn escaped(start: usize, end: usize) -> Self {
        Self {
            start: start as u32,
            end: NonZeroU32::new(end as u32 | Self::ESCAPED).unwrap_or(NonZeroU32::MIN),
        }
    }

    fn end(self) -> u32 {
        self.end.get() & !Self::ESCAPED
    }

    fn is_escaped(self) -> bool {
        self.end.get() & Self::ESCAPED != 0
    }

    fn indices(self) -> std::ops::Range<usize> {
        self.start as usize..self.end() as usize
    }

    fn len(self) -> usize {
        (self.end() - self.start) as usize
    }
}

/// An object's members (`Doc::members`) or an array's items (`Doc::items`): `first..first +
/// count`, and `size`, the length of the encoded `Struct` or `ListValue` message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: u32,
    count: u32,
    size: u32,
}

impl Range {
    fn indices(self) -> std::ops::Range<usize> {
        self.first as usize..(self.first + self.count) as usize
    }

    fn size(self) -> usize {
        self.size as usize
    }
}

/// What one JSON value of the document is: a [`Node`] unpacked.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Null,
    Bool(bool),
    Number(f64),
    Str(Span),
    Object(Range),
    Array(Range),
}

/// One JSON value of the document, packed in two words whose first is never zero: a
/// `Step<Node>` is then returned in two registers. As an enum it was returned through the
/// stack, written in parts and read back whole, and the read stalled on every string and
/// object (half of `Parser::value`'s own samples: BENCHMARKS.md, issue 15, twelfth round).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The kind (1 to 6) in the low byte; a bool at bit 8; an object's or array's encoded
    /// size in the high half.
    head: NonZeroU64,
    /// A number's bits; a string's start and end; an object's or array's first and count.
    body: u64,
}

impl Node {
    const NULL: u64 = 1;
    const BOOL: u64 = 2;
    const NUMBER: u64 = 3;
    const STR: u64 = 4;
    const OBJECT: u64 = 5;
    const ARRAY: u64 = 6;

    fn pack(kind: u64, extra: u64, body: u64) -> Self {
        Self {
            // `kind` is never zero.
            head: NonZeroU64::new(kind | extra).unwrap_or(NonZeroU64::MIN),
            body,
        }
    }

    fn null() -> Self {
        Self::pack(Self::NULL, 0, 0)
    }

    fn boolean(b: bool) -> Self {
        Self::pack(Self::BOOL, u64::from(b) << 8, 0)
    }

    fn number(n: f64) -> Self {
        Self::pack(Self::NUMBER, 0, n.to_bits())
    }

    fn string(span: Span) -> Self {
        Self::pack(
            Self::STR,
            0,
            u64::from(span.start) | u64::from(span.end.get()) << 32,
        )
    }

    /// An object ([`Node::OBJECT`]) or an array ([`Node::ARRAY`]).
    fn range(kind: u64, range: Range) -> Self {
        Self::pack(
            kind,
            u64::from(range.size) << 32,
            u64::from(range.first) | u64::from(range.count) << 32,
        )
    }

    #[inline]
    fn shape(self) -> Shape {
        let head = self.head.get();
        let (low, high) = (self.body as u32, (self.body >> 32) as u32);
        let range = || Range {
            first: low,
            count: high,
            size: (head >> 32) as u32,
        };
        match head & 0xff {
            Self::BOOL => Shape::Bool(head & 0x100 != 0),
            Self::NUMBER => Shape::Number(f64::from_bits(self.body)),
            Self::STR => Shape::Str(Span {
                start: low,
                end: NonZeroU32::new(high).unwrap_or(NonZeroU32::MIN),
            }),
            Self::OBJECT => Shape::Object(range()),
            Self::ARRAY => Shape::Array(range()),
            _ => Shape::Null,
        }
    }
}

/// One object member.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: Span,
    /// [`prefix`] of the key: most key comparisons are decided by it without reading the key.
    prefix: u64,
    value: Node,
}

/// The first eight bytes of `key`, zero-padded, as a big-endian number: when two keys' prefixes
/// differ, they order as the keys do (byte-wise); when they are equal, the keys decide.
fn prefix(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => key
            .iter()
            .enumerate()
            .fold(0, |p, (i, &b)| p | u64::from(b) << (56 - 8 * i)),
    }
}

/// A parsed JSON object, borrowing the input and the [`Buffers`] it was parsed into.
#[derive(Debug)]
pub struct Doc<'a> {
    text: &'a str,
    /// Unescaped strings, back to back.
    escaped: &'a str,
    /// Members of every object, each object's contiguous, sorted by key, one per key.
    members: &'a [Member],
    /// Items of every array, each array's contiguous.
    items: &'a [Node],
    /// The top-level object.
    root: Range,
    /// Where each element of an events array lies in the input (hook bodies only).
    event_spans: &'a [EventSpan],
    /// The events arrays of the document: their `items` range and first entry of `event_spans`.
    event_arrays: &'a [(Range, u32)],
}

/// Where one element of an events array lies in the input, and whether it nests deeper than
/// [`MAX_DEPTH`] counted from itself.
#[derive(Debug, Clone, Copy)]
struct EventSpan {
    start: u32,
    end: u32,
    too_deep: bool,
}

/// One element of a hook body's events array: its bytes in the body and its parsed value,
/// resolved with [`Doc::event_value`].
#[derive(Debug, Clone)]
pub struct EventItem {
    node: Node,
    /// Byte range of the element in the body (no surrounding whitespace).
    pub span: std::ops::Range<usize>,
    /// Whether the element nests deeper than [`MAX_DEPTH`] levels, counted from itself.
    pub too_deep: bool,
}

/// The memory a parse fills. Reusing one between parses (see `map_event`) saves the
/// allocations a parse would otherwise make.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Unescaped strings.
    escaped: String,
    /// Members of the objects closed so far.
    members: Vec<Member>,
    /// Items of the arrays closed so far.
    items: Vec<Node>,
    /// Members of the objects still open, innermost last.
    member_stack: Vec<Member>,
    /// Items of the arrays still open, innermost last.
    item_stack: Vec<Node>,
    /// The order of the members of the object being closed: (key prefix, index).
    order: Vec<(u64, u32)>,
    /// Sorted orders of member sequences seen before, by a hash of their prefixes.
    learned: Vec<LearnedOrder>,
    /// Spans of the elements of events arrays (hook bodies only).
    event_spans: Vec<EventSpan>,
    /// Events arrays closed so far: items range, first index into `event_spans`.
    event_arrays: Vec<(Range, u32)>,
}

/// How many member sequences [`Buffers::learned`] remembers (a power of two).
const LEARNED_ORDERS: usize = 64;
const _: () = assert!(LEARNED_ORDERS.is_power_of_two() && LEARNED_ORDERS > 1);

/// Objects with more members than this are sorted every time: a learned order is kept for the
/// life of the thread, and LogEvent objects have about twenty members at most.
const LEARNED_MAX_MEMBERS: usize = 64;

/// The key order of one sequence of members: Okta sends each kind of object with its
/// members in the same order every time, so an object's order is usually sorted once and
/// then only recognised.
#[derive(Debug, Default)]
struct LearnedOrder {
    /// The members' key prefixes as they came, all distinct (so they alone decide the order
    /// and no key is there twice).
    prefixes: Vec<u64>,
    /// Positions of the members in key order.
    order: Vec<u32>,
}

impl Buffers {
    /// Whether these buffers are small enough to keep for the next parse: one huge event
    /// should not pin its memory for the life of the thread.
    pub fn worth_keeping(&self) -> bool {
        const MAX_KEPT: usize = 1 << 16;
        self.escaped.capacity() <= MAX_KEPT * 16
            && self.members.capacity() <= MAX_KEPT
            && self.items.capacity() <= MAX_KEPT
            && self.member_stack.capacity() <= MAX_KEPT
            && self.item_stack.capacity() <= MAX_KEPT
            && self.order.capacity() <= MAX_KEPT
            && self.event_spans.capacity() <= MAX_KEPT
    }
}

/// One value read from a [`Doc`]; JSON null has no `Val` (reads treat it as absent).
#[derive(Debug, Clone, Copy)]
pub enum Val<'d> {
    /// A string, unescaped.
    Str(&'d str),
    /// A number.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An object.
    Object(Obj<'d>),
    /// An array.
    Array(Arr<'d>),
}

/// An object of a [`Doc`].
#[derive(Debug, Clone, Copy)]
pub struct Obj<'d> {
    doc: &'d Doc<'d>,
    range: Range,
}

/// An array of a [`Doc`].
#[derive(Debug, Clone, Copy)]
pub struct Arr<'d> {
    doc: &'d Doc<'d>,
    range: Range,
}

impl<'a> Doc<'a> {
    /// The top-level object.
    pub fn root(&self) -> Obj<'_> {
        Obj {
            doc: self,
            range: self.root,
        }
    }

    /// The input the document was parsed from.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The elements of `array`, if it is an events array of a hook body (see [`parse_body`]):
    /// each with its byte span in the body, in order, nulls included.
    pub fn event_items(&self, array: Arr<'_>) -> Option<impl Iterator<Item = EventItem> + '_> {
        let &(range, first_span) = self
            .event_arrays
            .iter()
            .rev()
            .find(|(r, _)| *r == array.range)?;
        let first_span = first_span as usize;
        let spans = self
            .event_spans
            .get(first_span..first_span + range.count as usize)?;
        Some(
            self.items[range.indices()]
                .iter()
                .zip(spans)
                .map(|(&node, span)| EventItem {
                    node,
                    span: span.start as usize..span.end as usize,
                    too_deep: span.too_deep,
                }),
        )
    }

    /// The value of an events array element; `None` for JSON null.
    pub fn event_value(&self, item: &EventItem) -> Option<Val<'_>> {
        self.val(item.node)
    }

    fn str(&self, span: Span) -> &'a str {
        span_str(self.text, self.escaped, span)
    }

    fn bytes(&self, span: Span) -> &'a [u8] {
        span_bytes(self.text, self.escaped, span)
    }

    fn val(&self, node: Node) -> Option<Val<'_>> {
        Some(match node.shape() {
            Shape::Null => return None,
            Shape::Bool(b) => Val::Bool(b),
            Shape::Number(n) => Val::Number(n),
            Shape::Str(s) => Val::Str(self.str(s)),
            Shape::Object(range) => Val::Object(Obj { doc: self, range }),
            Shape::Array(range) => Val::Array(Arr { doc: self, range }),
        })
    }

    /// Writes the members `range` as a `Struct` message body.
    fn write_struct(&self, range: Range, out: &mut Encoder<'_>) {
        for member in &self.members[range.indices()] {
            let key = self.bytes(member.key);
            let value_len = value_len(member.value);
            // `Struct.fields` entry: field 1, a map entry (key = 1, value = 2). Like prost, an
            // empty key (the default) is left out of the entry.
            out.byte(0x0a);
            out.varint(entry_len(key.len(), value_len));
            if !key.is_empty() {
                out.byte(0x0a);
                out.varint(key.len());
                out.bytes(key);
            }
            out.byte(0x12);
            out.varint(value_len);
            self.write_value(member.value, out);
        }
    }

    /// Writes `node` as a `Value` message body: exactly one field of its `kind` oneof.
    fn write_value(&self, node: Node, out: &mut Encoder<'_>) {
        match node.shape() {
            // null_value = 1 (varint, NULL_VALUE = 0).
            Shape::Null => out.bytes(&[0x08, 0x00]),
            // number_value = 2 (64-bit).
            Shape::Number(n) => {
                out.byte(0x11);
                out.bytes(&n.to_le_bytes());
            }
            // string_value = 3.
            Shape::Str(s) => {
                out.byte(0x1a);
                out.varint(s.len());
                out.bytes(self.bytes(s));
            }
            // bool_value = 4 (varint).
            Shape::Bool(b) => out.bytes(&[0x20, u8::from(b)]),
            // struct_value = 5.
            Shape::Object(range) => {
                out.byte(0x2a);
                out.varint(range.size());
                self.write_struct(range, out);
            }
            // list_value = 6; `ListValue.values` = 1.
            Shape::Array(range) => {
                out.byte(0x32);
                out.varint(range.size());
                for &item in &self.items[range.indices()] {
                    out.byte(0x0a);
                    out.varint(value_len(item));
                    self.write_value(item, out);
                }
            }
        }
    }
}

/// Bytes set aside for an encoding whose length was measured while parsing, written through a
/// position rather than pushed: no check for room, and no store of the length, per byte.
/// A write that would not fit is dropped, so a wrong measure gives a wrong encoding (as
/// pushing would) and never a panic.
struct Encoder<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Encoder<'_> {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.out.get_mut(self.at) {
            *slot = b;
        }
        self.at += 1;
    }

    fn bytes(&mut self, b: &[u8]) {
        let end = self.at + b.len();
        if let Some(slots) = self.out.get_mut(self.at..end) {
            slots.copy_from_slice(b);
        }
        self.at = end;
    }

    fn varint(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.byte((n as u8) | 0x80);
            n >>= 7;
        }
        self.byte(n as u8);
    }
}

impl<'d> Obj<'d> {
    /// The member `key`, unless absent or null.
    pub fn get(&self, key: &str) -> Option<Val<'d>> {
        let doc = self.doc;
        let members = &doc.members[self.range.indices()];
        let wanted = prefix(key.as_bytes());
        // A linear scan of the prefixes measured faster than a binary search: objects are small
        // (the top level has about 20 members) and the loop predicts well. Members are in key
        // order, so the scan ends at the first larger prefix: a key that is absent (most
        // optional fields) costs half a scan on average, not a whole one.
        // Equal prefixes and lengths: keys of up to 8 bytes are equal, longer ones differ at
        // most after their prefix.
        let member = members
            .iter()
            .take_while(|m| m.prefix <= wanted)
            .find(|m| {
                m.prefix == wanted
                    && m.key.len() == key.len()
                    && (key.len() <= 8 || doc.bytes(m.key).get(8..) == key.as_bytes().get(8..))
            })?;
        doc.val(member.value)
    }

    /// The members `keys` names, found in one pass over the members: `keys` must be in
    /// ascending byte order, the order members are kept in. Reading many members of one
    /// object (a LogEvent's top level) costs one scan instead of one per key.
    pub fn get_sorted<const N: usize>(&self, keys: &[&str; N]) -> [Option<Val<'d>>; N] {
        debug_assert!(keys.is_sorted(), "keys in ascending byte order");
        let doc = self.doc;
        let mut found = [None; N];
        let mut members = doc.members[self.range.indices()].iter().peekable();
        for (slot, key) in found.iter_mut().zip(keys) {
            let wanted = prefix(key.as_bytes());
            // Members sort by prefix and then by the whole key: byte order.
            while let Some(member) = members.peek() {
                match member
                    .prefix
                    .cmp(&wanted)
                    .then_with(|| doc.bytes(member.key).cmp(key.as_bytes()))
                {
                    std::cmp::Ordering::Less => {
                        members.next();
                    }
                    std::cmp::Ordering::Equal => {
                        *slot = doc.val(member.value);
                        members.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        found
    }

    /// Appends the object as a `google.protobuf.Struct` field numbered `field`, written
    /// straight from the document.
    pub fn write_field(&self, field: u32, out: &mut Vec<u8>) {
        prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
        let size = self.range.size();
        prost::encoding::encode_varint(size as u64, out);
        let start = out.len();
        out.resize(start + size, 0);
        let mut encoder = Encoder {
            out: &mut out[start..],
            at: 0,
        };
        self.doc.write_struct(self.range, &mut encoder);
        debug_assert_eq!(encoder.at, size, "the measured size of the Struct");
    }

    /// The length of the object encoded as a `Struct` message body.
    pub fn encoded_len(&self) -> usize {
        self.range.size()
    }
}

impl<'d> Arr<'d> {
    /// The items, JSON nulls left out.
    pub fn iter(&self) -> impl Iterator<Item = Val<'d>> + 'd {
        let doc = self.doc;
        doc.items[self.range.indices()]
            .iter()
            .filter_map(move |&node| doc.val(node))
    }

    /// Whether the array has no items at all.
    pub fn is_empty(&self) -> bool {
        self.range.count == 0
    }
}

fn span_str<'s>(text: &'s str, escaped: &'s str, span: Span) -> &'s str {
    let source = if span.is_escaped() { escaped } else { text };
    &source[span.indices()]
}

/// [`span_str`] as bytes, for writing and comparing: slicing bytes skips the check that a
/// `str` slice starts and ends on character boundaries (a span always does), which touched
/// the input again on every key written.
fn span_bytes<'s>(text: &'s str, escaped: &'s str, span: Span) -> &'s [u8] {
    let source = if span.is_escaped() { escaped } else { text };
    source.as_bytes().get(span.indices()).unwrap_or_default()
}

/// The slot of [`Buffers::learned`] for members whose key prefixes are `prefixes`.
fn learned_slot(prefixes: impl Iterator<Item = u64>) -> usize {
    let hash = prefixes.fold(0u64, |h, p| {
        (h.rotate_left(5) ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    // The top bits, which the multiplication mixed best.
    (hash >> (u64::BITS - LEARNED_ORDERS.ilog2())) as usize
}

/// The learned order of `open`'s members, if this sequence of keys was sorted before.
fn recall<'l>(learned: &'l [LearnedOrder], open: &[Member]) -> Option<&'l LearnedOrder> {
    let slot = learned.get(learned_slot(open.iter().map(|m| m.prefix)))?;
    (slot.prefixes.len() == open.len()
        && slot.prefixes.iter().zip(open).all(|(&p, m)| p == m.prefix))
    .then_some(slot)
}

/// Remembers the sorted `order` of `open`'s members, when their prefixes alone decide it.
fn learn(learned: &mut Vec<LearnedOrder>, open: &[Member], order: &[(u64, u32)]) {
    // Equal prefixes: the rest of the keys decided, or a key came twice.
    let prefixes_decide = order.windows(2).all(|pair| pair[0].0 != pair[1].0);
    if open.len() > LEARNED_MAX_MEMBERS || !prefixes_decide {
        return;
    }
    if learned.is_empty() {
        learned.resize_with(LEARNED_ORDERS, LearnedOrder::default);
    }
    let slot = &mut learned[learned_slot(open.iter().map(|m| m.prefix))];
    slot.prefixes.clear();
    slot.prefixes.extend(open.iter().map(|m| m.prefix));
    slot.order.clear();
    slot.order.extend(order.iter().map(|&(_, i)| i));
}

/// Bytes of `n` as a protobuf varint.
fn varint_len(n: usize) -> usize {
    if n < 0x80 {
        // Most strings and members of a LogEvent.
        return 1;
    }
    // 7 bits per byte.
    ((usize::BITS - n.leading_zeros()) as usize).div_ceil(7)
}

/// Length of the `Value` message body for `node`.
fn value_len(node: Node) -> usize {
    match node.shape() {
        Shape::Null | Shape::Bool(_) => 2,
        Shape::Number(_) => 9,
        Shape::Str(s) => 1 + varint_len(s.len()) + s.len(),
        Shape::Object(r) | Shape::Array(r) => 1 + varint_len(r.size()) + r.size(),
    }
}

/// Length of a `Struct.fields` map entry body with a key of `key_len` bytes.
fn entry_len(key_len: usize, value_len: usize) -> usize {
    let key = if key_len == 0 {
        0
    } else {
        1 + varint_len(key_len) + key_len
    };
    key + 1 + varint_len(value_len) + value_len
}

/// Parses `bytes` as one JSON value, into `buffers` (cleared first). A top-level object becomes
/// `Some(Doc)`; any other valid top-level value is `None`.
pub fn parse_object<'a>(
    bytes: &'a [u8],
    buffers: &'a mut Buffers,
) -> Result<Option<Doc<'a>>, ParseError> {
    parse(bytes, buffers, MAX_DEPTH, Role::Plain)
}

/// Parses a whole hook body, into `buffers` (cleared first), in one pass: nesting is capped at
/// [`MAX_BODY_DEPTH`] for the body, and the elements of `data.events` and of a bare `events`
/// are recorded with their byte spans and whether each nests deeper than [`MAX_DEPTH`] counted
/// from itself (read them with [`Doc::event_items`]).
pub fn parse_body<'a>(
    bytes: &'a [u8],
    buffers: &'a mut Buffers,
) -> Result<Option<Doc<'a>>, ParseError> {
    parse(bytes, buffers, MAX_BODY_DEPTH, Role::Envelope)
}

/// What a container is to the hook envelope, so the parser knows which array holds the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing the envelope looks at (and everything in a LogEvent parse).
    Plain,
    /// The top-level object of a hook body.
    Envelope,
    /// The envelope's `data` member.
    Data,
    /// `data.events`, or a bare body's `events`.
    Events,
}

fn parse<'a>(
    bytes: &'a [u8],
    buffers: &'a mut Buffers,
    max_depth: u32,
    role: Role,
) -> Result<Option<Doc<'a>>, ParseError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge { len: bytes.len() });
    }
    // Checked once here, so every string slice taken below (always between ASCII quotes, hence
    // on character boundaries) is valid UTF-8 without another check.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Err(ParseError::Syntax {
                what: "invalid UTF-8",
                at: e.valid_up_to(),
            });
        }
    };
    buffers.escaped.clear();
    buffers.members.clear();
    buffers.items.clear();
    buffers.member_stack.clear();
    buffers.item_stack.clear();
    buffers.event_spans.clear();
    buffers.event_arrays.clear();
    let mut parser = Parser {
        text,
        bytes,
        at: 0,
        buffers,
        error: None,
        max_depth,
        deepest: 0,
    };
    let parsed = parser.document(role);
    let node = parsed.map_err(|Stop| {
        parser.error.take().unwrap_or(ParseError::Syntax {
            what: "invalid JSON",
            at: parser.at,
        })
    })?;
    let buffers = parser.buffers;
    Ok(match node.shape() {
        Shape::Object(root) => Some(Doc {
            text,
            escaped: &buffers.escaped,
            members: &buffers.members,
            items: &buffers.items,
            root,
            event_spans: &buffers.event_spans,
            event_arrays: &buffers.event_arrays,
        }),
        _ => None,
    })
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    buffers: &'a mut Buffers,
    /// Why the parse stopped, once it has.
    error: Option<ParseError>,
    /// Deepest nesting accepted.
    max_depth: u32,
    /// Deepest level opened so far (reset per element of an events array to measure it).
    deepest: u32,
}

/// Marks a failed parse step; the reason is in [`Parser::error`]. Keeping the error out of the
/// return type keeps `Step<Node>` small, which measurably speeds up the parser.
struct Stop;

/// The result of one parse step.
type Step<T> = Result<T, Stop>;

impl<'a> Parser<'a> {
    /// The whole input: one value between optional whitespace.
    fn document(&mut self, role: Role) -> Step<Node> {
        self.skip_ws();
        let value = self.value(0, role)?;
        self.skip_ws();
        if self.at != self.bytes.len() {
            return Err(self.syntax("trailing characters"));
        }
        Ok(value)
    }

    /// Records a syntax error at the cursor and returns the marker that unwinds the parse.
    fn syntax(&mut self, what: &'static str) -> Stop {
        self.error = Some(ParseError::Syntax { what, at: self.at });
        Stop
    }

    /// Records that the nesting limit was passed.
    fn too_deep(&mut self) -> Stop {
        self.error = Some(ParseError::TooDeep {
            limit: self.max_depth,
        });
        Stop
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Moves the cursor past string bytes that need no attention (anything but `"`, `\\` and
    /// control characters), eight at a time while it can.
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        // A byte of `x` is zero  <=>  its byte in `has_zero(x)` has the high bit set (SWAR).
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let quote = has_zero(x ^ (ONES * u64::from(b'"')));
            let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
            // Bytes below 0x20: subtracting 0x20 borrows into the high bit (non-ASCII bytes
            // have it set already and are masked out by `!x`).
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
            let stop = quote | backslash | control;
            if stop != 0 {
                self.at += (stop.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// One value at `depth` containers below the top (the top-level value has depth 0).
    fn value(&mut self, depth: u32, role: Role) -> Step<Node> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1, role),
            Some(b'[') => self.array(depth + 1, role),
            Some(b'"') => Ok(Node::string(self.string()?)),
            Some(b't') => self.literal("true", Node::boolean(true)),
            Some(b'f') => self.literal("false", Node::boolean(false)),
            Some(b'n') => self.literal("null", Node::null()),
            Some(b'-' | b'0'..=b'9') => Ok(Node::number(self.number()?)),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Node) -> Step<Node> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(v)
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// An object whose nesting level is `level`; the cursor is on `{`.
    fn object(&mut self, level: u32, role: Role) -> Step<Node> {
        if level > self.max_depth {
            return Err(self.too_deep());
        }
        self.deepest = self.deepest.max(level);
        self.at += 1;
        self.skip_ws();
        let mark = self.buffers.member_stack.len();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Node::range(Node::OBJECT, self.close_object(mark)));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':'"));
            }
            self.at += 1;
            self.skip_ws();
            let child = match role {
                Role::Plain | Role::Events => Role::Plain,
                Role::Envelope | Role::Data => {
                    match span_str(self.text, &self.buffers.escaped, key) {
                        "data" if role == Role::Envelope => Role::Data,
                        "events" => Role::Events,
                        _ => Role::Plain,
                    }
                }
            };
            let value = self.value(level, child)?;
            let prefix = prefix(span_bytes(self.text, &self.buffers.escaped, key));
            self.buffers
                .member_stack
                .push(Member { key, prefix, value });
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax("expected ',' or '}'")),
            }
        }
        Ok(Node::range(Node::OBJECT, self.close_object(mark)))
    }

    /// Moves the members of the object just closed (`member_stack[mark..]`) to `members`,
    /// sorted by key with one member per key, and measures its encoded `Struct`.
    fn close_object(&mut self, mark: usize) -> Range {
        let text = self.text;
        let Buffers {
            escaped,
            members,
            member_stack,
            order,
            learned,
            ..
        } = &mut *self.buffers;
        let escaped = escaped.as_str();
        let open = &member_stack[mark..];
        let key = |i: u32| span_bytes(text, escaped, open[i as usize].key);
        let first = members.len();
        let mut size = 0;
        let mut keep = |member: &Member| {
            let entry = entry_len(member.key.len(), value_len(member.value));
            size += 1 + varint_len(entry) + entry;
            members.push(*member);
        };
        // Entries are encoded in key order, as prost encodes a `Struct`'s `BTreeMap`.
        if open.is_sorted_by(|a, b| {
            a.prefix < b.prefix
                || a.prefix == b.prefix
                    && span_bytes(text, escaped, a.key) < span_bytes(text, escaped, b.key)
        }) {
            // Already in order, no key twice: the common case for small objects.
            open.iter().for_each(&mut keep);
        } else if let Some(learned) = recall(learned, open) {
            learned.order.iter().for_each(|&i| keep(&open[i as usize]));
        } else {
            // Sorting (prefix, index) pairs moves less than sorting members. Equal keys sort by
            // position, so for a duplicate key the later member is last of its run and wins, as
            // in serde_json and JavaScript.
            order.clear();
            order.extend(open.iter().zip(0u32..).map(|(m, i)| (m.prefix, i)));
            // By prefix and position first (a cheap comparison), then each run of equal
            // prefixes (keys sharing their first 8 bytes: rare) by key and position.
            order.sort_unstable();
            let mut run = 0;
            while run < order.len() {
                let p = order[run].0;
                let len = order[run..].iter().take_while(|e| e.0 == p).count();
                if len > 1 {
                    order[run..run + len]
                        .sort_by(|a, b| key(a.1).cmp(key(b.1)).then(a.1.cmp(&b.1)));
                }
                run += len;
            }
            for (n, &(p, i)) in order.iter().enumerate() {
                let duplicate = order
                    .get(n + 1)
                    .is_some_and(|&(next_p, next_i)| next_p == p && key(next_i) == key(i));
                if !duplicate {
                    keep(&open[i as usize]);
                }
            }
            learn(learned, open, order);
        }
        member_stack.truncate(mark);
        Range {
            first: first as u32,
            count: (members.len() - first) as u32,
            size: size as u32,
        }
    }

    /// An array whose nesting level is `level`; the cursor is on `[`.
    fn array(&mut self, level: u32, role: Role) -> Step<Node> {
        if level > self.max_depth {
            return Err(self.too_deep());
        }
        self.deepest = self.deepest.max(level);
        self.at += 1;
        self.skip_ws();
        let mark = self.buffers.item_stack.len();
        let first_span = self.buffers.event_spans.len();
        if self.peek() != Some(b']') {
            loop {
                let item = if role == Role::Events {
                    self.event_item(level)?
                } else {
                    self.value(level, Role::Plain)?
                };
                self.buffers.item_stack.push(item);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.skip_ws();
                    }
                    Some(b']') => break,
                    _ => return Err(self.syntax("expected ',' or ']'")),
                }
            }
        }
        self.at += 1;
        let first = self.buffers.items.len();
        let mut size = 0;
        for &item in &self.buffers.item_stack[mark..] {
            let len = value_len(item);
            size += 1 + varint_len(len) + len;
        }
        self.buffers
            .items
            .extend_from_slice(&self.buffers.item_stack[mark..]);
        self.buffers.item_stack.truncate(mark);
        let range = Range {
            first: first as u32,
            count: (self.buffers.items.len() - first) as u32,
            size: size as u32,
        };
        if role == Role::Events {
            self.buffers.event_arrays.push((range, first_span as u32));
        }
        Ok(Node::range(Node::ARRAY, range))
    }

    /// One element of an events array at `level`, its span and depth (counted from itself)
    /// recorded in `event_spans`.
    fn event_item(&mut self, level: u32) -> Step<Node> {
        let start = self.at;
        let outer = self.deepest;
        self.deepest = level;
        let item = self.value(level, Role::Plain)?;
        let too_deep = self.deepest - level > MAX_DEPTH;
        self.deepest = self.deepest.max(outer);
        self.buffers.event_spans.push(EventSpan {
            start: start as u32,
            end: self.at as u32,
            too_deep,
        });
        Ok(item)
    }

    /// A string; the cursor is on the opening quote.
    fn string(&mut self) -> Step<Span> {
        self.at += 1;
        let start = self.at;
        // Fast path: no escapes, a span of the (already UTF-8 checked) input.
        self.skip_plain();
        loop {
            match self.peek() {
                Some(b'"') => {
                    let span = Span::plain(start, self.at);
                    self.at += 1;
                    return Ok(span);
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => self.at += 1,
                None => return Err(self.syntax("unterminated string")),
            }
        }
        let mut out = std::mem::take(&mut self.buffers.escaped);
        let unescaped_start = out.len();
        out.push_str(&self.text[start..self.at]);
        let result = self.escaped_rest(&mut out);
        let span = Span::escaped(unescaped_start, out.len());
        self.buffers.escaped = out;
        result.map(|()| span)
    }

    /// The rest of a string from its first backslash, appended to `out`.
    fn escaped_rest(&mut self, out: &mut String) -> Step<()> {
        loop {
            let run = self.at;
            loop {
                match self.peek() {
                    Some(b'"' | b'\\') => break,
                    Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                    Some(_) => self.at += 1,
                    None => return Err(self.syntax("unterminated string")),
                }
            }
            out.push_str(&self.text[run..self.at]);
            if self.peek() == Some(b'"') {
                self.at += 1;
                return Ok(());
            }
            // A backslash.
            self.at += 1;
            let c = match self.peek() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    self.at += 1;
                    let unit = self.hex4()?;
                    let c = match unit {
                        0xD800..=0xDBFF => {
                            if !self.bytes[self.at..].starts_with(b"\\u") {
                                return Err(self.syntax("lone leading surrogate in \\u escape"));
                            }
                            self.at += 2;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(self.syntax("invalid surrogate pair in \\u escape"));
                            }
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(code)
                        }
                        0xDC00..=0xDFFF => None,
                        _ => char::from_u32(unit),
                    };
                    out.push(
                        c.ok_or_else(|| self.syntax("lone trailing surrogate in \\u escape"))?,
                    );
                    continue;
                }
                _ => return Err(self.syntax("invalid escape")),
            };
            out.push(c);
            self.at += 1;
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Step<u32> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.syntax("unterminated \\u escape"))?;
        let mut n = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax("invalid \\u escape")),
            };
            n = n * 16 + u32::from(v);
        }
        self.at += 4;
        Ok(n)
    }

    /// A number per RFC 8259: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Step<f64> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("invalid number")),
        }
        let int_end = self.at;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        // Short integers, the common case (`0`, `33363`), without the float parser.
        if integer && int_end - int_start <= 15 {
            let magnitude = self.bytes[int_start..int_end]
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            let n = magnitude as f64;
            return Ok(if negative { -n } else { n });
        }
        match self.text[start..self.at].parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            Ok(_) => {
                self.at = start;
                Err(self.syntax("number out of range"))
            }
            Err(_) => Err(self.syntax("invalid number")),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_found_by_its_key_and_a_key_absent_wherever_it_would_sort_is_not() {
        let text = br#"{"zeta":1,"alpha":2,"actorAlternateId":3,"actor":4,"actorAlternate":5,"m":6,"a\u0062c":7,"alpha":8,"":9}"#;
        let mut buffers = Buffers::default();
        let doc = parse_object(text, &mut buffers)
            .expect("valid JSON")
            .expect("an object");
        let root = doc.root();
        let number = |key| match root.get(key) {
            Some(Val::Number(n)) => Some(n),
            _ => None,
        };
        for (key, value) in [
            ("zeta", 1.0),
            ("alpha", 8.0),
            ("actorAlternateId", 3.0),
            ("actor", 4.0),
            ("actorAlternate", 5.0),
            ("m", 6.0),
            ("abc", 7.0),
            ("", 9.0),
        ] {
            assert_eq!(number(key), Some(value), "{key:?}");
        }
        for absent in [
            "\0",
            "a",
            "aaa",
            "actoq",
            "actorA",
            "actorAlternateI",
            "actorAlternateIc",
            "actorAlternateIe",
            "actorAlternateIdx",
            "actorX",
            "b",
            "n",
            "zet",
            "zetaa",
            "zz",
            "\u{10ffff}",
        ] {
            assert!(root.get(absent).is_none(), "{absent:?}");
        }

        let mut keys = [
            "",
            "\0",
            "a",
            "abc",
            "actor",
            "actorA",
            "actorAlternate",
            "actorAlternateId",
            "actorAlternateIdx",
            "actorX",
            "alpha",
            "m",
            "n",
            "zeta",
            "zetaa",
            "\u{10ffff}",
        ];
        keys.sort_unstable();
        let found = root.get_sorted(&keys);
        for (key, value) in keys.iter().zip(found) {
            assert_eq!(
                value.map(|v| format!("{v:?}")),
                root.get(key).map(|v| format!("{v:?}")),
                "{key:?} read in one pass as alone"
            );
        }
        assert!(matches!(
            root.get_sorted(&["alpha"]),
            [Some(Val::Number(8.0))]
        ));
        assert!(matches!(root.get_sorted(&["zz"]), [None]));
    }

    /// The `Struct` bytes of `text`'s top-level object, parsed with `buffers`.
    fn encoded(text: &str, buffers: &mut Buffers) -> Vec<u8> {
        let doc = parse_object(text.as_bytes(), buffers)
            .expect("valid JSON")
            .expect("an object");
        let mut out = Vec::new();
        doc.root().write_field(1, &mut out);
        out
    }

    #[test]
    fn an_object_whose_key_order_was_seen_before_is_read_and_encoded_as_the_first_one() {
        let texts = [
            r#"{"b":1,"a":{"y":1,"x":2},"c":3}"#,
            r#"{"b":"two","a":{"y":[1],"x":null},"c":false}"#,
            // The same first eight bytes of each key, different rests: the prefixes still
            // decide the order.
            r#"{"kkkkkkkkB":1,"aaaaaaaaZ":2}"#,
            r#"{"kkkkkkkkA":1,"aaaaaaaaY":2}"#,
            // A key twice (the last wins), and keys alike in their first eight bytes: sorted
            // each time, never learned.
            r#"{"b":1,"a":2,"b":3}"#,
            r#"{"b":1,"a":2,"b":4}"#,
            r#"{"kkkkkkkkB":1,"kkkkkkkkA":2}"#,
            r#"{"kkkkkkkkA":1,"kkkkkkkkB":2}"#,
            r#"{"a\u0000":1,"a":2}"#,
            r#"{"a\u0000":3,"a":4}"#,
            // A longer and a shorter sequence starting with learned keys.
            r#"{"b":1,"a":2,"c":3,"0":4}"#,
            r#"{"b":9,"a":8}"#,
            r#"{"b":9,"a":8}"#,
        ];
        let mut reused = Buffers::default();
        for _ in 0..2 {
            for text in texts {
                assert_eq!(
                    encoded(text, &mut reused),
                    encoded(text, &mut Buffers::default()),
                    "{text}"
                );
            }
        }
        let doc = parse_object(br#"{"b":"last","a":2,"b":3}"#, &mut reused)
            .expect("valid JSON")
            .expect("an object");
        assert!(matches!(doc.root().get("b"), Some(Val::Number(3.0))));
    }
}
