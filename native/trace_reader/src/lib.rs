//! Native reader of Jaeger v1 trace files for chat4all-forensics.
//!
//! Why it exists: decoding a 100k-span UI download (87 MB) into Python objects costs more
//! (orjson's objects made and freed: ~0.9 s CPU) than everything the spans table is made of
//! afterwards. This module reads the JSON bytes once and fills the columns that pyarrow's
//! conversion of the decoded spans gives the Python reader (`forensics/traces/v1.py`,
//! `_V1_SPAN`): ids, names and times as Arrow buffers, tag keys dictionary-encoded, log
//! entries' times and fields' keys; only tag and log field values (any JSON type) become
//! Python objects, each distinct string once. Big documents are read by two threads (below).
//!
//! What it does, and nothing more: every rule (services, parents, tags into columns, logs as
//! JSON text, warnings) stays in Python. A document it does not read with certainty is
//! declined as a whole, with the reason, and read by the Python reader: JSON that is not
//! strictly valid (the Python reader then names the line), a shape other than v1 (OTLP,
//! domain model, Thrift style), a value of another type than the column's (a time as text,
//! an id as a number), numbers beyond 64 bits or not finite, lone surrogates, a repeated
//! key in an object it reads.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

type R<T> = Result<T, &'static str>;

/// FxHash (rustc's): the keys here are short texts and numbers from one trusted document
/// read once, so a fast multiply-rotate hash beats the default DoS-resistant one.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;

const MAX_DEPTH: u32 = 512;
/// Documents from this many bytes on are read by two threads (below, a thread costs more than it saves).
const SPLIT_FROM: usize = 1 << 20;

// ---- columns -------------------------------------------------------------------------------

#[derive(Default)]
struct Validity {
    bits: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Validity {
    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bits.push(0);
        }
        if valid {
            *self.bits.last_mut().unwrap() |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }
    fn get(&self, k: usize) -> bool {
        self.bits[k / 8] >> (k % 8) & 1 == 1
    }
    /// A column's dict for Python: its length, null count and validity bits; the caller adds its buffers.
    fn export<'py>(&self, py: Python<'py>, buffers: &[(&str, &[u8])]) -> PyResult<Bound<'py, PyDict>> {
        let col = PyDict::new(py);
        col.set_item("len", self.len)?;
        col.set_item("nulls", self.nulls)?;
        col.set_item("validity", PyBytes::new(py, &self.bits))?;
        for (name, bytes) in buffers {
            col.set_item(*name, PyBytes::new(py, bytes))?;
        }
        Ok(col)
    }
    fn append(&mut self, other: &Validity) {
        let shift = self.len % 8;
        if shift == 0 {
            self.bits.extend_from_slice(&other.bits);
        } else {
            for &byte in &other.bits {
                *self.bits.last_mut().unwrap() |= byte << shift;
                self.bits.push(byte >> (8 - shift));
            }
        }
        self.len += other.len;
        self.nulls += other.nulls;
        self.bits.truncate(self.len.div_ceil(8)); // the byte pushed for other's last bits may be spare
    }
}

/// Arrow `string`: int32 offsets, UTF-8 data, validity.
struct Strings {
    offsets: Vec<i32>,
    data: Vec<u8>,
    valid: Validity,
}

impl Strings {
    fn new() -> Self {
        Strings { offsets: vec![0], data: Vec::new(), valid: Validity::default() }
    }
    fn push(&mut self, value: Option<&str>) -> R<()> {
        if let Some(v) = value {
            self.data.extend_from_slice(v.as_bytes());
        }
        if self.data.len() > i32::MAX as usize {
            return Err("a text column beyond 2 GiB");
        }
        self.offsets.push(self.data.len() as i32);
        self.valid.push(value.is_some());
        Ok(())
    }
    fn append(&mut self, other: &Strings) -> R<()> {
        let base = self.data.len();
        self.data.extend_from_slice(&other.data);
        if self.data.len() > i32::MAX as usize {
            return Err("a text column beyond 2 GiB");
        }
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base as i32));
        self.valid.append(&other.valid);
        Ok(())
    }
    /// The i-th text (a null one is empty).
    fn get(&self, i: usize) -> &str {
        // SAFETY: pushed as whole &str values, so the bounds are character boundaries.
        unsafe { std::str::from_utf8_unchecked(&self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]) }
    }
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.valid.export(py, &[("offsets", as_bytes(&self.offsets)), ("data", &self.data)])
    }
}

/// Arrow `dictionary<int32, string>`, words in order of first appearance (as pyarrow makes it).
struct Dict {
    words: Strings,
    index: FxMap<String, i32>,
    codes: Vec<i32>,
    valid: Validity,
}

impl Dict {
    fn new() -> Self {
        Dict { words: Strings::new(), index: FxMap::default(), codes: Vec::new(), valid: Validity::default() }
    }
    fn code(&mut self, word: &str) -> R<i32> {
        if let Some(&c) = self.index.get(word) {
            return Ok(c);
        }
        let c = self.index.len() as i32;
        self.words.push(Some(word))?;
        self.index.insert(word.to_owned(), c);
        Ok(c)
    }
    fn push(&mut self, value: Option<&str>) -> R<()> {
        let code = match value {
            None => 0,
            Some(v) => self.code(v)?,
        };
        self.codes.push(code);
        self.valid.push(value.is_some());
        Ok(())
    }
    /// `other`'s rows after these; its words new here join in its order of first appearance,
    /// which is the order one pass over both would have given.
    fn append(&mut self, other: &Dict) -> R<()> {
        let codes = (0..other.index.len()).map(|c| self.code(other.words.get(c))).collect::<R<Vec<i32>>>()?;
        for (k, &c) in other.codes.iter().enumerate() {
            self.codes.push(if other.valid.get(k) { codes[c as usize] } else { 0 });
        }
        self.valid.append(&other.valid);
        Ok(())
    }
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let col = self.valid.export(py, &[("codes", as_bytes(&self.codes))])?;
        col.set_item("words", self.words.export(py)?)?;
        Ok(col)
    }
}

struct Ints {
    values: Vec<i64>,
    valid: Validity,
}

impl Ints {
    fn new() -> Self {
        Ints { values: Vec::new(), valid: Validity::default() }
    }
    fn push(&mut self, value: Option<i64>) {
        self.values.push(value.unwrap_or(0));
        self.valid.push(value.is_some());
    }
    fn append(&mut self, other: &Ints) {
        self.values.extend_from_slice(&other.values);
        self.valid.append(&other.valid);
    }
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.valid.export(py, &[("values", as_bytes(&self.values))])
    }
}

/// Arrow list offsets (int32) and validity; the items are in other columns.
struct Lists {
    offsets: Vec<i32>,
    valid: Validity,
}

impl Lists {
    fn new() -> Self {
        Lists { offsets: vec![0], valid: Validity::default() }
    }
    fn push(&mut self, items: usize, valid: bool) -> R<()> {
        if items > i32::MAX as usize {
            return Err("a list beyond 2^31 items");
        }
        self.offsets.push(items as i32);
        self.valid.push(valid);
        Ok(())
    }
    fn append(&mut self, other: &Lists) -> R<()> {
        let base = *self.offsets.last().unwrap();
        if base as usize + *other.offsets.last().unwrap() as usize > i32::MAX as usize {
            return Err("a list beyond 2^31 items");
        }
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base));
        self.valid.append(&other.valid);
        Ok(())
    }
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.valid.export(py, &[("offsets", as_bytes(&self.offsets))])
    }
}

fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: plain-old-data numbers viewed as their native-endian bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

// ---- JSON values -----------------------------------------------------------------------------

/// A JSON number as the Python reader's decoder gives it.
#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    UInt(u64),
    Float(f64),
}

/// A tag or log field value, kept until the end to become a Python object.
enum Value<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    /// An array or object: its JSON text, decoded in Python.
    Raw(&'a [u8]),
}

/// What tells values apart: their type and value (a float by its bits: -0.0 is not 0.0).
#[derive(PartialEq, Eq, Hash)]
enum Key<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(u64),
    Str(Cow<'a, str>),
}

/// Values of any JSON type (tags', log fields'), each distinct one kept once and a code per
/// value: Python objects are made for the distinct ones only (tag values repeat), and the
/// hashing that finds them is done while scanning, by both threads. Arrays and objects are
/// never shared (each is decoded on its own).
struct Values<'a> {
    distinct: Vec<Value<'a>>,
    index: FxMap<Key<'a>, i32>,
    codes: Vec<i32>,
}

impl<'a> Values<'a> {
    fn with_capacity(n: usize) -> Self {
        Values { distinct: Vec::new(), index: FxMap::default(), codes: Vec::with_capacity(n) }
    }
    fn len(&self) -> usize {
        self.codes.len()
    }
    fn code(&mut self, value: Value<'a>) -> i32 {
        let key = match &value {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Num(Number::Int(v)) => Key::Int(*v),
            Value::Num(Number::UInt(v)) => Key::UInt(*v),
            Value::Num(Number::Float(v)) => Key::Float(v.to_bits()),
            Value::Str(text) => Key::Str(text.clone()),
            Value::Raw(_) => {
                self.distinct.push(value);
                return self.distinct.len() as i32 - 1;
            }
        };
        if let Some(&c) = self.index.get(&key) {
            return c;
        }
        self.index.insert(key, self.distinct.len() as i32);
        self.distinct.push(value);
        self.distinct.len() as i32 - 1
    }
    fn push(&mut self, value: Value<'a>) {
        let code = self.code(value);
        self.codes.push(code);
    }
    /// `other`'s values after these; its distinct ones new here join in its order, as one pass
    /// would have added them.
    fn append(&mut self, other: Values<'a>) {
        let codes: Vec<i32> = other.distinct.into_iter().map(|v| self.code(v)).collect();
        self.codes.extend(other.codes.iter().map(|&c| codes[c as usize]));
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

/// The position of the first byte from `i` on that ends a plain run of string bytes: a quote,
/// a backslash or a control character (or the end), sixteen bytes at a time.
#[cfg(target_arch = "x86_64")]
fn plain_until(b: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; unaligned loads of 16 bytes inside the slice only.
    unsafe {
        let (quote, backslash, space) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8), _mm_set1_epi8(0x1f));
        while i + 16 <= b.len() {
            let x = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(x, space), space); // x <= 0x1f
            let hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)), control);
            let mask = _mm_movemask_epi8(hit) as u32;
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
fn plain_until(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

fn hex4(b: &[u8]) -> R<u32> {
    let mut v = 0u32;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err("a bad \\u escape"),
        };
        v = v * 16 + d as u32;
    }
    Ok(v)
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\n' || c == b'\r' || c == b'\t' {
                self.i += 1;
            } else {
                break;
            }
        }
    }
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or("unexpected end")
    }
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err("not JSON");
        }
        self.i += 1;
        Ok(())
    }
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err("not JSON");
        }
        self.i += word.len();
        Ok(())
    }

    /// A string (at its opening quote): the text, borrowed unless it has escapes.
    fn string(&mut self) -> R<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        let b = self.b;
        let mut escaped = false;
        loop {
            self.i = plain_until(b, self.i);
            let c = *b.get(self.i).ok_or("unexpected end")?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    let e = *b.get(self.i + 1).ok_or("unexpected end")?;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let u = hex4(b.get(self.i + 2..self.i + 6).ok_or("unexpected end")?)?;
                            self.i += 6;
                            if (0xDC00..0xE000).contains(&u) {
                                return Err("a lone surrogate");
                            }
                            if (0xD800..0xDC00).contains(&u) {
                                if b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err("a lone surrogate");
                                }
                                let low = hex4(b.get(self.i + 2..self.i + 6).ok_or("unexpected end")?)?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err("a lone surrogate");
                                }
                                self.i += 6;
                            }
                        }
                        _ => return Err("a bad escape"),
                    }
                }
                0..=0x1f => return Err("a control character in a string"),
                _ => self.i += 1,
            }
        }
        let raw = &b[start..self.i];
        self.i += 1;
        // SAFETY: the whole input was checked to be UTF-8, and a string ends at an ASCII quote.
        let text = unsafe { std::str::from_utf8_unchecked(raw) };
        if !escaped {
            return Ok(Cow::Borrowed(text));
        }
        Ok(Cow::Owned(unescape(raw)))
    }

    fn number(&mut self) -> R<Number> {
        let b = self.b;
        let start = self.i;
        let mut j = self.i;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        match b.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(j), Some(b'0'..=b'9')) {
                    j += 1;
                }
            }
            _ => return Err("not JSON"),
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            float = true;
            j += 1;
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                return Err("not JSON");
            }
            while matches!(b.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            float = true;
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                return Err("not JSON");
            }
            while matches!(b.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
        }
        self.i = j;
        // SAFETY: ASCII digits and signs only.
        let text = unsafe { std::str::from_utf8_unchecked(&b[start..j]) };
        if float {
            let v: f64 = text.parse().map_err(|_| "not JSON")?;
            if !v.is_finite() {
                return Err("a number beyond a float");
            }
            return Ok(Number::Float(v));
        }
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Number::Int(v));
        }
        text.parse::<u64>().map(Number::UInt).map_err(|_| "an integer beyond 64 bits")
    }

    /// Any value, checked and passed over.
    fn skip(&mut self) -> R<()> {
        match self.peek()? {
            b'{' => self.object(|p, _| p.skip()),
            b'[' => self.array(|p| p.skip()),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }

    /// Whether the next value is null (and then passes it).
    fn null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn object(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("nested too deep");
        }
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return Err("not JSON");
                }
                let key = self.string()?;
                self.eat(b':')?;
                member(self, key)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err("not JSON"),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn array(&mut self, mut item: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.eat(b'[')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("nested too deep");
        }
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err("not JSON"),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// An object (anything else declined as `what`), each member given to `member`.
    fn object_or(&mut self, what: &'static str, member: impl FnMut(&mut Self, Cow<'a, str>) -> R<()>) -> R<()> {
        if self.peek()? != b'{' {
            return Err(what);
        }
        self.object(member)
    }

    /// An array or null, each item read by `item`: how many items (None: null).
    fn counted(&mut self, mut item: impl FnMut(&mut Self) -> R<()>) -> R<Option<usize>> {
        if self.null()? {
            return Ok(None);
        }
        let mut n = 0;
        self.array(|p| {
            n += 1;
            item(p)
        })?;
        Ok(Some(n))
    }

    /// A `{"key", "value"}` object (a tag, a log field): its key (None: not given, or null) and
    /// value (null when not given); a repeated key, or a typed one (domain model, Thrift style),
    /// is declined.
    fn key_value(&mut self, what: &'static str, key_what: &'static str) -> R<(Option<Cow<'a, str>>, Value<'a>)> {
        let (mut seen, mut key_text, mut value) = (0u32, None, Value::Null);
        self.object_or(what, |p, key| match key.as_ref() {
            "key" => {
                once(&mut seen, 0)?;
                key_text = p.text(key_what)?;
                Ok(())
            }
            "value" => {
                once(&mut seen, 1)?;
                value = p.value()?;
                Ok(())
            }
            k if TYPED_KEYS.contains(&k) => Err("a typed key-value (domain model or Thrift style)"),
            _ => p.skip(),
        })?;
        Ok((key_text, value))
    }

    /// A process object's serviceName (None: not given, or null); a repeated one is declined.
    fn service_name(&mut self) -> R<Option<Cow<'a, str>>> {
        let (mut name, mut seen) = (None, 0u32);
        self.object(|p, key| {
            if key != "serviceName" {
                return p.skip();
            }
            once(&mut seen, 0)?;
            name = p.text("a serviceName that is not text")?;
            Ok(())
        })?;
        Ok(name)
    }

    /// A text value or null; anything else is declined (`what` says where).
    fn text(&mut self, what: &'static str) -> R<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'"' => Ok(Some(self.string()?)),
            b'n' => self.literal(b"null").map(|_| None),
            _ => Err(what),
        }
    }

    /// A whole number within int64 or null; anything else is declined.
    fn int(&mut self, what: &'static str) -> R<Option<i64>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|_| None),
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Int(v) => Ok(Some(v)),
                _ => Err(what),
            },
            _ => Err(what),
        }
    }

    fn value(&mut self) -> R<Value<'a>> {
        Ok(match self.peek()? {
            b'"' => Value::Str(self.string()?),
            b't' => self.literal(b"true").map(|_| Value::Bool(true))?,
            b'f' => self.literal(b"false").map(|_| Value::Bool(false))?,
            b'n' => self.literal(b"null").map(|_| Value::Null)?,
            b'[' | b'{' => {
                let start = self.i;
                self.skip()?;
                Value::Raw(&self.b[start..self.i])
            }
            _ => Value::Num(self.number()?),
        })
    }
}

fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        let ch = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                // \u: surrogate pairs were checked by the parser
                let u = hex4(&raw[i..i + 4]).unwrap_or(0xFFFD);
                i += 4;
                let code = if (0xD800..0xDC00).contains(&u) {
                    let low = hex4(&raw[i + 2..i + 6]).unwrap_or(0xDC00);
                    i += 6;
                    0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    u
                };
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    // SAFETY: UTF-8 input with escapes replaced by UTF-8 encodings of valid characters.
    unsafe { String::from_utf8_unchecked(out) }
}

// ---- v1 documents ----------------------------------------------------------------------------

/// One trace's own fields (its spans go to the columns).
struct Trace<'a> {
    trace_id: Option<Cow<'a, str>>,
    /// processes: id -> serviceName (None: no text name), the last of a repeated id kept
    processes: Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>,
    warnings: Option<Vec<Cow<'a, str>>>,
    spans: usize,
    /// the JSON path of its span list in the file (`data[0].spans`, `line 3: spans`)
    prefix: String,
}

/// What is read of a document: its spans column-wise, its traces' own fields; while reading
/// with two threads, the second one's part, until taken or given up.
struct Doc<'a> {
    spans: Spans<'a>,
    traces: Vec<Trace<'a>>,
    split: Option<Split<'a>>,
    /// whether the second thread's part was taken
    halves: bool,
}

impl Doc<'_> {
    /// Empty, with room for the spans of a document of ``bytes`` bytes.
    fn new(bytes: usize) -> Self {
        Doc { spans: Spans::new(bytes / 96), traces: Vec::new(), split: None, halves: false }
    }
}

/// The columns of `_V1_SPAN` (forensics/traces/v1.py), flattened.
struct Spans<'a> {
    trace_id: Strings,
    span_id: Strings,
    operation: Strings,
    refs: Lists,
    ref_type: Strings,
    ref_trace: Strings,
    ref_span: Strings,
    start: Ints,
    duration: Ints,
    tags: Lists,
    tag_key: Dict,
    tag_value: Values<'a>,
    logs: Lists,
    /// each log entry's timestamp and fields, each field's key and value
    log_time: Ints,
    log_fields: Lists,
    log_key: Strings,
    log_value: Values<'a>,
    /// the JSON text of each non-empty logs list, in span order
    log_text: Vec<&'a [u8]>,
    process_id: Dict,
    process_service: Strings,
    process_valid: Validity,
    warnings: Lists,
    warning: Strings,
}

/// Keys of a v1 span read into columns; a repeated one is declined (the decoder keeps the last).
const SPAN_KEYS: [&str; 11] = ["traceID", "spanID", "operationName", "references", "startTime", "duration", "tags",
                               "logs", "processID", "process", "warnings"];
/// Keys that make a span another writing than v1 (domain model, Thrift style, OTLP).
const OTHER_SPAN_KEYS: [&str; 5] = ["traceId", "spanId", "traceIdLow", "traceIdHigh", "startTimeUnixNano"];
/// Keys of a typed key-value (domain model, Thrift style).
const TYPED_KEYS: [&str; 9] = ["vType", "vStr", "vInt64", "vLong", "vBool", "vFloat64", "vDouble", "vBinary", "vNum"];

fn once(seen: &mut u32, bit: usize) -> R<()> {
    if *seen & (1 << bit) != 0 {
        return Err("a repeated key");
    }
    *seen |= 1 << bit;
    Ok(())
}

impl<'a> Spans<'a> {
    /// Empty columns; room for ``tags`` tag values (the largest column: growing it costs copies).
    fn new(tags: usize) -> Self {
        Spans {
            trace_id: Strings::new(), span_id: Strings::new(), operation: Strings::new(), refs: Lists::new(),
            ref_type: Strings::new(), ref_trace: Strings::new(), ref_span: Strings::new(), start: Ints::new(),
            duration: Ints::new(), tags: Lists::new(), tag_key: Dict::new(), tag_value: Values::with_capacity(tags),
            logs: Lists::new(), log_time: Ints::new(), log_fields: Lists::new(), log_key: Strings::new(),
            log_value: Values::with_capacity(0), log_text: Vec::new(), process_id: Dict::new(), process_service: Strings::new(),
            process_valid: Validity::default(), warnings: Lists::new(), warning: Strings::new(),
        }
    }

    fn len(&self) -> usize {
        self.start.valid.len
    }

    /// `other`'s spans after these, as if read in one pass.
    fn append(&mut self, other: Spans<'a>) -> R<()> {
        for (to, from) in [(&mut self.trace_id, &other.trace_id), (&mut self.span_id, &other.span_id),
                           (&mut self.operation, &other.operation), (&mut self.ref_type, &other.ref_type),
                           (&mut self.ref_trace, &other.ref_trace), (&mut self.ref_span, &other.ref_span),
                           (&mut self.process_service, &other.process_service), (&mut self.warning, &other.warning),
                           (&mut self.log_key, &other.log_key)] {
            to.append(from)?;
        }
        for (to, from) in [(&mut self.refs, &other.refs), (&mut self.tags, &other.tags), (&mut self.logs, &other.logs),
                           (&mut self.warnings, &other.warnings), (&mut self.log_fields, &other.log_fields)] {
            to.append(from)?;
        }
        for (to, from) in [(&mut self.start, &other.start), (&mut self.duration, &other.duration),
                           (&mut self.log_time, &other.log_time)] {
            to.append(from);
        }
        self.tag_key.append(&other.tag_key)?;
        self.process_id.append(&other.process_id)?;
        self.process_valid.append(&other.process_valid);
        self.tag_value.append(other.tag_value);
        self.log_value.append(other.log_value);
        self.log_text.extend(other.log_text);
        Ok(())
    }

    /// One span object: every column gets one row. Returns which of :data:`SPAN_KEYS` it has.
    fn span(&mut self, p: &mut Parser<'a>) -> R<u32> {
        let mut seen = 0u32;
        let (mut trace_id, mut span_id, mut operation, mut process_id) = (None, None, None, None);
        let (mut start, mut duration) = (None, None);
        let mut process: Option<Option<Cow<'a, str>>> = None;
        let (mut refs, mut tags, mut logs, mut warnings) = (None, None, None, None);
        let mut log_text: &'a [u8] = b"";
        p.object_or("a span that is not an object", |p, key| {
            match SPAN_KEYS.iter().position(|k| *k == key) {
                Some(bit) => once(&mut seen, bit)?,
                None if OTHER_SPAN_KEYS.contains(&key.as_ref()) => return Err("a span not written as v1"),
                None => return p.skip(),
            }
            match key.as_ref() {
                "traceID" => trace_id = p.text("a traceID that is not text")?,
                "spanID" => span_id = p.text("a spanID that is not text")?,
                "operationName" => operation = p.text("an operationName that is not text")?,
                "processID" => process_id = p.text("a processID that is not text")?,
                "startTime" => start = p.int("a startTime that is not a whole number")?,
                "duration" => duration = p.int("a duration that is not a whole number")?,
                "process" => {
                    if !p.null()? {
                        process = Some(p.service_name()?);
                    }
                }
                "references" => refs = self.references(p)?,
                "tags" => tags = self.tags(p)?,
                "logs" => {
                    let at = p.i;
                    logs = self.logs(p)?;
                    if logs.unwrap_or(0) > 0 {
                        p.ws();
                        log_text = &p.b[at..p.i];
                    }
                }
                _ => {
                    // "warnings"
                    warnings = self.warnings(p)?;
                }
            }
            Ok(())
        })?;
        self.trace_id.push(trace_id.as_deref())?;
        self.span_id.push(span_id.as_deref())?;
        self.operation.push(operation.as_deref())?;
        self.process_id.push(process_id.as_deref())?;
        self.start.push(start);
        self.duration.push(duration);
        self.process_valid.push(process.is_some());
        self.process_service.push(process.flatten().as_deref())?;
        let ends = |n: Option<usize>, total: usize| (total, n.is_some());
        let (t, v) = ends(refs, self.ref_type.valid.len);
        self.refs.push(t, v)?;
        let (t, v) = ends(tags, self.tag_value.len());
        self.tags.push(t, v)?;
        let (t, v) = ends(logs, self.log_time.valid.len);
        self.logs.push(t, v)?;
        let (t, v) = ends(warnings, self.warning.valid.len);
        self.warnings.push(t, v)?;
        if !log_text.is_empty() {
            self.log_text.push(log_text);
        }
        Ok(seen)
    }

    fn references(&mut self, p: &mut Parser<'a>) -> R<Option<usize>> {
        p.counted(|p| {
            let mut seen = 0u32;
            let (mut kind, mut trace, mut span) = (None, None, None);
            p.object_or("a reference that is not an object", |p, key| {
                let (bit, to, what) = match key.as_ref() {
                    "refType" => (0, &mut kind, "a refType that is not text"),
                    "traceID" => (1, &mut trace, "a reference traceID that is not text"),
                    "spanID" => (2, &mut span, "a reference spanID that is not text"),
                    _ => return p.skip(),
                };
                once(&mut seen, bit)?;
                *to = p.text(what)?;
                Ok(())
            })?;
            self.ref_type.push(kind.as_deref())?;
            self.ref_trace.push(trace.as_deref())?;
            self.ref_span.push(span.as_deref())
        })
    }

    fn tags(&mut self, p: &mut Parser<'a>) -> R<Option<usize>> {
        p.counted(|p| {
            let (key, value) = p.key_value("a tag that is not an object", "a tag key that is not text")?;
            self.tag_key.push(key.as_deref())?;
            self.tag_value.push(value);
            Ok(())
        })
    }

    /// A logs list: each entry's timestamp (a whole number) and fields (key and value).
    fn logs(&mut self, p: &mut Parser<'a>) -> R<Option<usize>> {
        p.counted(|p| {
            let (mut seen, mut time, mut fields) = (0u32, None, None);
            p.object_or("a log entry that is not an object", |p, key| match key.as_ref() {
                "timestamp" => {
                    once(&mut seen, 0)?;
                    time = p.int("a log timestamp that is not a whole number")?;
                    Ok(())
                }
                "fields" => {
                    once(&mut seen, 1)?;
                    fields = p.counted(|p| {
                        let (key, value) = p.key_value("a log field that is not an object", "a log field key that is not text")?;
                        self.log_key.push(key.as_deref())?;
                        self.log_value.push(value);
                        Ok(())
                    })?;
                    Ok(())
                }
                _ => p.skip(),
            })?;
            self.log_time.push(time);
            self.log_fields.push(self.log_value.len(), fields.is_some())
        })
    }

    fn warnings(&mut self, p: &mut Parser<'a>) -> R<Option<usize>> {
        p.counted(|p| {
            let w = p.text("a span warning that is not text")?;
            self.warning.push(w.as_deref())
        })
    }
}

/// Where a trace object stands, which decides what it may hold.
enum Role<'r> {
    /// The whole document (or JSON line), whose JSON-path prefix is given: a v1 envelope
    /// (`data`) or one v1 trace (`spans`).
    Top(&'r str),
    /// An element of `data`.
    DataItem,
    /// An element of a bare array of traces (it must have `spans`).
    ArrayItem,
}

/// A trace object: its own fields into `traces` (with `prefix`, the JSON path of its span
/// list), its spans into `spans`; at the top, a `data` member's traces instead.
fn trace<'a>(p: &mut Parser<'a>, doc: &mut Doc<'a>, prefix: String, role: Role<'_>) -> R<()> {
    let before = doc.spans.len();
    let mut seen = 0u32;
    let mut t = Trace { trace_id: None, processes: Vec::new(), warnings: None, spans: 0, prefix };
    let mut data = false;
    let at = if let Role::Top(at) = role { Some(at) } else { None };
    p.object_or("a trace that is not an object", |p, key| {
        match key.as_ref() {
            "traceID" => {
                once(&mut seen, 0)?;
                t.trace_id = p.text("a trace's traceID that is not text")?;
            }
            "spans" => {
                once(&mut seen, 1)?;
                if !p.null()? {
                    if p.peek()? != b'[' {
                        return Err("spans that are not an array");
                    }
                    p.array(|p| {
                        if doc.take_part(p, Items::Spans)? > 0 {
                            return Ok(());
                        }
                        doc.spans.span(p).map(|_| ())
                    })?;
                }
            }
            "processes" => {
                once(&mut seen, 2)?;
                if !p.null()? {
                    p.object_or("processes that are not an object", |p, pid| {
                        let name = if p.peek()? == b'{' {
                            p.service_name()?
                        } else {
                            p.skip()?; // not an object: no service name
                            None
                        };
                        t.processes.retain(|(k, _)| *k != pid);
                        t.processes.push((pid, name));
                        Ok(())
                    })?;
                }
            }
            "warnings" => {
                once(&mut seen, 3)?;
                if !p.null()? {
                    if p.peek()? != b'[' {
                        return Err("trace warnings that are not an array");
                    }
                    let mut list = Vec::new();
                    p.array(|p| {
                        match p.text("a trace warning that is not text")? {
                            Some(w) => list.push(w),
                            None => return Err("a trace warning that is null"),
                        }
                        Ok(())
                    })?;
                    t.warnings = Some(list);
                }
            }
            "resourceSpans" => return Err("an OTLP document"),
            "data" | "result" if at.is_some() => {
                once(&mut seen, 4)?;
                if key == "result" || p.peek()? != b'[' {
                    return Err("data that is not an array, or an api/v3 document");
                }
                data = true;
                let mut i = 0;
                let path = |i: usize| format!("{}data[{i}].spans", at.unwrap_or(""));
                p.array(|p| {
                    let taken = doc.take_part(p, Items::Traces)?;
                    let all = doc.traces.len();
                    for (j, t) in doc.traces[all - taken..].iter_mut().enumerate() {
                        t.prefix = path(i + j);
                    }
                    i += taken;
                    if taken == 0 {
                        trace(p, doc, path(i), Role::DataItem)?;
                        i += 1;
                    }
                    Ok(())
                })?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })?;
    if data {
        return if seen & 0b1111 != 0 { Err("data beside trace fields") } else { Ok(()) };
    }
    if seen & 0b10 == 0 && !matches!(role, Role::DataItem) {
        return Err("neither data nor spans");
    }
    t.spans = doc.spans.len() - before;
    doc.traces.push(t);
    Ok(())
}

/// Whether the object at the parser has the key `wanted`; the parser is left where it was.
fn has_key(p: &mut Parser<'_>, wanted: &str) -> R<bool> {
    let (start, depth) = (p.i, p.depth);
    let mut found = false;
    p.object(|p, key| {
        found |= key == wanted;
        p.skip()
    })?;
    p.i = start;
    p.depth = depth;
    Ok(found)
}

/// A bare array at the top: of spans (each with a `spanID`: one trace without an id), or of
/// v1 traces (each with `spans`), told by its first element; any other array is declined.
fn bare_array<'a>(p: &mut Parser<'a>, at: &str, doc: &mut Doc<'a>) -> R<()> {
    let mut q = Parser { b: p.b, i: p.i + 1, depth: p.depth }; // p is at the bracket
    if q.peek()? != b'{' {
        return Err("an array that is not of spans or traces");
    }
    if has_key(&mut q, "spanID")? {
        let before = doc.spans.len();
        p.array(|p| {
            if doc.spans.span(p)? & (1 << 1) == 0 {
                return Err("an array of spans and other things");
            }
            Ok(())
        })?;
        let spans = doc.spans.len() - before;
        doc.traces.push(Trace { trace_id: None, processes: Vec::new(), warnings: None, spans, prefix: at.to_owned() });
        return Ok(());
    }
    let mut i = 0;
    p.array(|p| {
        trace(p, doc, format!("{at}[{i}].spans"), Role::ArrayItem)?;
        i += 1;
        Ok(())
    })
}

/// One document: a v1 envelope or trace, or a bare array of spans or traces; `at` is its
/// JSON-path prefix (`line 7: ` in JSON Lines).
fn document<'a>(p: &mut Parser<'a>, at: &str, doc: &mut Doc<'a>) -> R<()> {
    match p.peek()? {
        b'{' => trace(p, doc, format!("{at}spans"), Role::Top(at)),
        b'[' => bare_array(p, at, doc),
        _ => Err("not a JSON object or array"),
    }
}

/// The spans of a document, or of JSON Lines of documents (one a line, blank lines passed,
/// as the Python reader splits them), or the reason they are declined. A document of
/// ``split_from`` bytes or more is read by two threads.
fn read(raw: &[u8], split_from: usize) -> R<Doc<'_>> {
    std::str::from_utf8(raw).map_err(|_| "not UTF-8")?;
    let mut doc = Doc::new(raw.len());
    let mut p = Parser { b: raw, i: 0, depth: 0 };
    if raw.len() >= split_from {
        in_two_threads(&mut p, &mut doc)?;
    } else {
        document(&mut p, "", &mut doc)?;
    }
    p.ws();
    if p.i == raw.len() {
        return Ok(doc);
    }
    // more after one document: JSON Lines, read line by line (lines split at \n, \r\n, \r)
    let mut doc = Doc::new(raw.len());
    let (mut start, mut number) = (0, 0);
    while start < raw.len() {
        let end = raw[start..].iter().position(|&c| c == b'\n' || c == b'\r').map_or(raw.len(), |k| start + k);
        let line = &raw[start..end];
        number += 1;
        start = if raw[end..].starts_with(b"\r\n") { end + 2 } else { end + 1 };
        if line.iter().all(|c| b" \t\n\r\x0b\x0c".contains(c)) {
            continue;
        }
        let mut p = Parser { b: line, i: 0, depth: 0 };
        document(&mut p, &format!("line {number}: "), &mut doc)?;
        p.ws();
        if p.i != line.len() {
            return Err("a JSON line with more than one document");
        }
    }
    if number < 2 {
        return Err("more than one JSON document on one line");
    }
    Ok(doc)
}

// ---- two threads -----------------------------------------------------------------------------
//
// A big document is read by two threads. The second starts at an item near the middle of the
// document's long array (a trace of the top-level `data`, else a span of a trace) and reads
// the items from there to the array's end; the first reads the document from its start and,
// landing on that very item (same place, same kind of array, same depth), takes the second's
// columns and goes on after the array. Where the second starts is a guess from the bytes alone
// (a `{` whose first keys look like a trace's or a span's; it may be inside a string): its
// work is used only when the first thread, which has parsed everything before it, lands there
// on an item, so what it read is what one pass reads. A wrong guess costs its work, never the
// result (tests/test_trace_native.py compares both ways on documents made to mislead).

/// Arrays whose items the second thread reads.
#[derive(Clone, Copy, PartialEq)]
enum Items {
    /// the traces of the top-level `data` (a UI download, a v1 API answer)
    Traces,
    /// the spans of a trace
    Spans,
}

/// Where the second thread starts: the item's first byte, its array's kind and parser depth.
#[derive(Clone, Copy)]
struct Plan {
    at: usize,
    items: Items,
    depth: u32,
}

/// What the second thread read: its items' spans and traces, and where their array ends (its `]`).
struct Part<'a> {
    spans: Spans<'a>,
    traces: Vec<Trace<'a>>,
    end: usize,
}

/// The first thread's end of the split.
struct Split<'a> {
    /// the second thread starts after this (and says where before the first goes past it)
    middle: usize,
    plans: Receiver<Option<Plan>>,
    plan: Option<Plan>,
    part: Receiver<R<Part<'a>>>,
    /// set when the second thread's part is not wanted (any more)
    stop: Arc<AtomicBool>,
}

impl<'a> Doc<'a> {
    /// At an item of an array of `items`: when the second thread started at this very item,
    /// its part is taken (the parser moves to the array's `]`); returns how many items were
    /// taken (0: read on). Past the middle, waits for the plan, so that what is taken does not
    /// depend on how fast either thread is.
    fn take_part(&mut self, p: &mut Parser<'a>, items: Items) -> R<usize> {
        let Some(split) = &mut self.split else { return Ok(0) };
        p.peek()?;
        if p.i < split.middle {
            return Ok(0);
        }
        let plan = match split.plan {
            Some(plan) => plan,
            None => match split.plans.recv() {
                Ok(Some(plan)) => *split.plan.insert(plan),
                _ => {
                    self.split = None; // nowhere to split (or no second thread)
                    return Ok(0);
                }
            },
        };
        if plan.items != items || p.i < plan.at {
            return Ok(0);
        }
        let split = self.split.take().unwrap();
        if p.i > plan.at || p.depth != plan.depth {
            split.stop.store(true, Relaxed); // passed: the guess was no item here
            return Ok(0);
        }
        let Ok(Ok(part)) = split.part.recv() else { return Ok(0) }; // failed: the same failure is met reading on
        let taken = match items {
            Items::Traces => part.traces.len(),
            Items::Spans => part.spans.len(),
        };
        self.spans.append(part.spans)?;
        self.traces.extend(part.traces);
        self.halves = true;
        p.i = part.end;
        Ok(taken)
    }
}

/// The document at `p` read by two threads (see above) into `doc`.
fn in_two_threads<'a>(p: &mut Parser<'a>, doc: &mut Doc<'a>) -> R<()> {
    let raw = p.b;
    let stop = Arc::new(AtomicBool::new(false));
    let (send_plan, plans) = channel();
    let (send_part, part) = channel();
    let middle = raw.len() / 2;
    doc.split = Some(Split { middle, plans, plan: None, part, stop: stop.clone() });
    std::thread::scope(|scope| {
        let second = stop.clone();
        // without a thread (none to be had) no plan comes, and one thread reads it all
        let _ = std::thread::Builder::new().stack_size(16 << 20).spawn_scoped(scope, move || {
            let plan = plan(raw, middle);
            let _ = send_plan.send(plan);
            if let Some(plan) = plan {
                let _ = send_part.send(second_half(raw, plan, &second));
            }
        });
        let read = document(p, "", doc);
        stop.store(true, Relaxed);
        doc.split = None;
        read
    })
}

/// The second thread's reading: the items from the plan's on to the end of their array (or
/// until the first thread has gone past).
fn second_half<'a>(raw: &'a [u8], plan: Plan, stop: &AtomicBool) -> R<Part<'a>> {
    let mut p = Parser { b: raw, i: plan.at, depth: plan.depth };
    let mut doc = Doc::new(raw.len() - plan.at);
    loop {
        if stop.load(Relaxed) {
            return Err("not needed");
        }
        match plan.items {
            Items::Traces => trace(&mut p, &mut doc, String::new(), Role::DataItem)?,
            Items::Spans => doc.spans.span(&mut p).map(|_| ())?,
        }
        match p.peek()? {
            b',' => p.i += 1,
            b']' => return Ok(Part { spans: doc.spans, traces: doc.traces, end: p.i }),
            _ => return Err("not JSON"),
        }
    }
}

/// Where the second thread starts: in a document whose first key is `data`, the first trace
/// from the middle on; else (or without one) the first span from the middle on. The depth is
/// that of such items in a v1 envelope, a v1 trace or a bare array of traces.
fn plan(raw: &[u8], middle: usize) -> Option<Plan> {
    let mut p = Parser { b: raw, i: 0, depth: 0 };
    let (envelope, spans_depth) = match p.peek() {
        Ok(b'{') => {
            p.i += 1;
            let envelope = p.peek() == Ok(b'"') && p.string().is_ok_and(|key| key == "data");
            (envelope, if envelope { 4 } else { 2 })
        }
        _ => (false, 3),
    };
    let traces = envelope.then(|| opening(raw, middle, Items::Traces)).flatten();
    match traces {
        Some(at) => Some(Plan { at, items: Items::Traces, depth: 2 }),
        None => opening(raw, middle, Items::Spans).map(|at| Plan { at, items: Items::Spans, depth: spans_depth }),
    }
}

/// The first `{` from `from` on that looks like it opens an item of `items`.
fn opening(raw: &[u8], from: usize, items: Items) -> Option<usize> {
    let mut at = from;
    loop {
        at += raw.get(at..)?.iter().position(|&c| c == b'{')?;
        if looks_like(raw, at, items) {
            return Some(at);
        }
        at += 1;
    }
}

/// Whether the object at `at` starts as an item of `items` does: its first keys, with text,
/// number, true, false or null values, reach `spans` with an array (a trace) or `spanID` before
/// `refType` (a span, not a reference).
fn looks_like(raw: &[u8], at: usize, items: Items) -> bool {
    let mut p = Parser { b: raw, i: at + 1, depth: 0 };
    for _ in 0..8 {
        if p.peek() != Ok(b'"') {
            return false;
        }
        let Ok(key) = p.string() else { return false };
        if p.eat(b':').is_err() {
            return false;
        }
        match (items, key.as_ref()) {
            (Items::Traces, "spans") => return p.peek() == Ok(b'['),
            (Items::Spans, "spanID") => return true,
            (_, "spanID" | "refType") => return false,
            _ => {}
        }
        if !matches!(p.peek(), Ok(b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')) || p.skip().is_err()
            || p.peek() != Ok(b',') {
            return false;
        }
        p.i += 1;
    }
    false
}

// ---- to Python -------------------------------------------------------------------------------

fn number<'py>(py: Python<'py>, n: Number) -> PyResult<Bound<'py, PyAny>> {
    Ok(match n {
        Number::Int(v) => v.into_pyobject(py)?.into_any(),
        Number::UInt(v) => v.into_pyobject(py)?.into_any(),
        Number::Float(v) => PyFloat::new(py, v).into_any(),
    })
}

/// Tag or log field values for Python: the distinct ones as Python objects (arrays and objects
/// as their JSON text, with their codes, to be decoded in Python) and each value's code.
fn py_values<'py>(py: Python<'py>, values: &Values<'_>) -> PyResult<Bound<'py, PyDict>> {
    let objects = PyList::empty(py);
    let raw = PyList::empty(py);
    for (code, v) in values.distinct.iter().enumerate() {
        objects.append(match v {
            Value::Null => py.None().into_bound(py),
            Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Value::Num(n) => number(py, *n)?,
            Value::Str(s) => PyString::new(py, s).into_any(),
            Value::Raw(text) => {
                raw.append((code, PyBytes::new(py, text)))?;
                py.None().into_bound(py)
            }
        })?;
    }
    let out = PyDict::new(py);
    out.set_item("distinct", objects)?;
    out.set_item("raw", raw)?;
    out.set_item("codes", PyBytes::new(py, as_bytes(&values.codes)))?;
    Ok(out)
}

/// A v1 trace file's bytes (any contiguous buffer: a UI download, an `/api/traces` answer, one
/// v1 trace, a bare array of v1 spans or traces, JSON Lines of these) -> its columns, or
/// `(None, reason)` when the document is left to the Python reader. A document of
/// `split_from` bytes or more is read by two threads (`halves` in the columns says whether
/// both read a part of it).
#[pyfunction]
#[pyo3(signature = (data, split_from = SPLIT_FROM))]
fn read_v1<'py>(py: Python<'py>, data: PyBuffer<u8>, split_from: usize)
                -> PyResult<(Option<Bound<'py, PyDict>>, Option<&'static str>)> {
    if !data.is_c_contiguous() {
        return Ok((None, Some("a buffer that is not contiguous")));
    }
    // SAFETY: a contiguous byte buffer, held (so alive, and bytes cannot change) for the whole call.
    let raw: &[u8] = unsafe { std::slice::from_raw_parts(data.buf_ptr() as *const u8, data.len_bytes()) };
    let Doc { spans, traces, halves, .. } = match py.allow_threads(|| read(raw, split_from)) {
        Ok(doc) => doc,
        Err(reason) => return Ok((None, Some(reason))),
    };
    let out = PyDict::new(py);
    out.set_item("spans", spans.len())?;
    out.set_item("halves", halves)?;
    let list = PyList::empty(py);
    for t in &traces {
        let processes = PyDict::new(py);
        for (pid, name) in &t.processes {
            processes.set_item(pid.as_ref(), name.as_deref())?;
        }
        let warnings = t.warnings.as_ref().map(|w| w.iter().map(|x| x.as_ref()).collect::<Vec<_>>());
        list.append((t.trace_id.as_deref(), processes, warnings, t.spans, &t.prefix))?;
    }
    out.set_item("traces", list)?;
    for (name, col) in [("traceID", &spans.trace_id), ("spanID", &spans.span_id), ("operationName", &spans.operation),
                        ("refType", &spans.ref_type), ("refTraceID", &spans.ref_trace),
                        ("refSpanID", &spans.ref_span), ("serviceName", &spans.process_service),
                        ("warning", &spans.warning)] {
        out.set_item(name, col.export(py)?)?;
    }
    for (name, col) in [("references", &spans.refs), ("tags", &spans.tags), ("logs", &spans.logs),
                        ("warnings", &spans.warnings)] {
        out.set_item(name, col.export(py)?)?;
    }
    out.set_item("startTime", spans.start.export(py)?)?;
    out.set_item("duration", spans.duration.export(py)?)?;
    out.set_item("tagKey", spans.tag_key.export(py)?)?;
    out.set_item("processID", spans.process_id.export(py)?)?;
    out.set_item("process", PyBytes::new(py, &spans.process_valid.bits))?;
    out.set_item("tagValues", py_values(py, &spans.tag_value)?)?;
    out.set_item("logTime", spans.log_time.export(py)?)?;
    out.set_item("logFields", spans.log_fields.export(py)?)?;
    out.set_item("logKey", spans.log_key.export(py)?)?;
    out.set_item("logValues", py_values(py, &spans.log_value)?)?;
    let mut logs = Vec::with_capacity(spans.log_text.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
    logs.push(b'[');
    for (i, text) in spans.log_text.iter().enumerate() {
        if i > 0 {
            logs.push(b',');
        }
        logs.extend_from_slice(text);
    }
    logs.push(b']');
    out.set_item("logsText", PyBytes::new(py, &logs))?;
    out.set_item("logsListed", spans.log_text.len())?;
    Ok((Some(out), None))
}

#[pymodule]
fn forensics_trace_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_v1, m)?)?;
    Ok(())
}
