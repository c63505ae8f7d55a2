//! The text that carries Lua tables between `resty/ffi/grpc.lua` and this
//! runtime: JSON's syntax, read and written as bytes.
//!
//! It differs from JSON where Lua needs it to:
//! - strings are byte strings: bytes of 0x80 and above pass through raw, so
//!   a `bytes` field travels without base64 (only `"`, `\` and control bytes
//!   are escaped, as in JSON);
//! - object keys may be numbers and booleans (a `map<int32, _>` has integer
//!   keys in Lua);
//! - `NaN`, `Infinity` and `-Infinity` are numbers.
//!
//! Both ends are ours (the Lua side is pure Lua), so nothing else reads it.

use std::fmt::Write as _;

/// A value as Lua sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lv {
    Null,
    Bool(bool),
    /// An integer literal (no `.` or exponent), exactly.
    Int(i128),
    Float(f64),
    Str(Vec<u8>),
    Arr(Vec<Lv>),
    Obj(Vec<(Lv, Lv)>),
}

impl Lv {
    /// What the value is, for error messages (Lua's names).
    pub fn kind(&self) -> &'static str {
        match self {
            Lv::Null => "nil",
            Lv::Bool(_) => "a boolean",
            Lv::Int(_) | Lv::Float(_) => "a number",
            Lv::Str(_) => "a string",
            Lv::Arr(_) => "an array",
            Lv::Obj(_) => "a table",
        }
    }

    pub fn as_str(&self) -> Option<&[u8]> {
        match self {
            Lv::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match *self {
            Lv::Int(i) => Some(i),
            Lv::Float(f) if f.fract() == 0.0 && f.abs() < 1.8e19 => Some(f as i128),
            _ => None,
        }
    }
}

/// Parses one value from the start of `input` (whitespace around it is
/// skipped); returns it and the offset after it.
pub fn parse(input: &[u8]) -> Result<(Lv, usize), String> {
    let mut p = Parser { s: input, i: 0, depth: 0 };
    let v = p.value()?;
    p.ws();
    Ok((v, p.i))
}

/// Parses `input`, which must hold exactly one value.
pub fn parse_all(input: &[u8]) -> Result<Lv, String> {
    let (v, end) = parse(input)?;
    if end != input.len() {
        return Err(format!("unexpected byte at offset {end}"));
    }
    Ok(v)
}

const MAX_DEPTH: usize = 200;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Lv, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.err("nested too deep");
                }
                let v = if c == b'{' { self.object() } else { self.array() };
                self.depth -= 1;
                v
            }
            b'"' => Ok(Lv::Str(self.string()?)),
            b't' if self.eat(b"true") => Ok(Lv::Bool(true)),
            b'f' if self.eat(b"false") => Ok(Lv::Bool(false)),
            b'n' if self.eat(b"null") => Ok(Lv::Null),
            b'N' if self.eat(b"NaN") => Ok(Lv::Float(f64::NAN)),
            b'I' if self.eat(b"Infinity") => Ok(Lv::Float(f64::INFINITY)),
            b'-' if self.eat(b"-Infinity") => Ok(Lv::Float(f64::NEG_INFINITY)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.err("unexpected byte"),
        }
    }

    fn object(&mut self) -> Result<Lv, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b"}") {
            return Ok(Lv::Obj(items));
        }
        loop {
            let k = self.value()?;
            self.ws();
            if !self.eat(b":") {
                return self.err("expected ':'");
            }
            let v = self.value()?;
            items.push((k, v));
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"}") {
                return Ok(Lv::Obj(items));
            }
            return self.err("expected ',' or '}'");
        }
    }

    fn array(&mut self) -> Result<Lv, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b"]") {
            return Ok(Lv::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"]") {
                return Ok(Lv::Arr(items));
            }
            return self.err("expected ',' or ']'");
        }
    }

    fn number(&mut self) -> Result<Lv, String> {
        let start = self.i;
        let mut float = false;
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => float = true,
                _ => break,
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        if !float {
            if let Ok(i) = text.parse::<i128>() {
                return Ok(Lv::Int(i));
            }
        }
        match text.parse::<f64>() {
            Ok(f) => Ok(Lv::Float(f)),
            Err(_) => Err(format!("bad number {text:?} at offset {start}")),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return self.err("short \\u escape");
        };
        let h = std::str::from_utf8(h).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let start = self.i;
            while let Some(&c) = self.s.get(self.i) {
                if c == b'"' || c == b'\\' {
                    break;
                }
                self.i += 1;
            }
            out.extend_from_slice(&self.s[start..self.i]);
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {}
            }
            self.i += 1;
            let Some(&e) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match e {
                b'"' | b'\\' | b'/' => out.push(e),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let mut cp = self.hex4()?;
                    if (0xd800..0xdc00).contains(&cp) && self.eat(b"\\u") {
                        let lo = self.hex4()?;
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
                    }
                    let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => return self.err("bad escape"),
            }
        }
    }
}

/// Appends `s` as a quoted string.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(Hex(out), "\\u{c:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Largest integer a Lua number (a double) holds exactly.
const MAX_EXACT: u64 = 1 << 53;

/// Appends an integer: a number when a Lua number holds it exactly, else a
/// string of its digits (Lua would round it).
pub fn write_int(out: &mut Vec<u8>, v: i128) {
    if v.unsigned_abs() <= u128::from(MAX_EXACT) {
        let _ = write!(Hex(out), "{v}");
    } else {
        let _ = write!(Hex(out), "\"{v}\"");
    }
}

/// Appends a float, shortest form that reads back the same.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let _ = write!(Hex(out), "{v:?}");
    }
}

/// A `float` field: its own shortest form (0.1, not 0.10000000149011612).
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = write!(Hex(out), "{v:?}");
    } else {
        write_f64(out, f64::from(v));
    }
}

/// `fmt::Write` into a byte vector.
struct Hex<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bytes_and_numbers() {
        let mut out = Vec::new();
        write_str(&mut out, b"a\"b\\c\n\x00\xff\xc3\xa9");
        assert_eq!(out, b"\"a\\\"b\\\\c\\n\\u0000\xff\xc3\xa9\"");
        assert_eq!(parse_all(&out).unwrap(), Lv::Str(b"a\"b\\c\n\x00\xff\xc3\xa9".to_vec()));
        let v = parse_all(b" {1:true, \"k\":[-2, 1.5, NaN, -Infinity, 9007199254740993, \"\\u00e9\\ud83d\\ude00\"]} ")
            .unwrap();
        let Lv::Obj(items) = v else { panic!() };
        assert_eq!(items[0], (Lv::Int(1), Lv::Bool(true)));
        let Lv::Arr(a) = &items[1].1 else { panic!() };
        assert_eq!(a[0], Lv::Int(-2));
        assert_eq!(a[1], Lv::Float(1.5));
        assert!(matches!(a[2], Lv::Float(f) if f.is_nan()));
        assert_eq!(a[3], Lv::Float(f64::NEG_INFINITY));
        assert_eq!(a[4], Lv::Int(9007199254740993));
        assert_eq!(a[5], Lv::Str("é😀".as_bytes().to_vec()));
        let mut out = Vec::new();
        write_int(&mut out, 9007199254740993);
        write_int(&mut out, -5);
        write_f32(&mut out, 0.1);
        assert_eq!(out, b"\"9007199254740993\"-50.1");
    }

    #[test]
    fn rejects_bad_text() {
        assert!(parse_all(b"{\"a\" 1}").unwrap_err().contains("expected ':'"));
        assert!(parse_all(b"[1,").is_err());
        assert!(parse_all(b"\"abc").is_err());
        assert!(parse_all(&[b'['; 300]).unwrap_err().contains("nested too deep"));
        assert!(parse_all(b"1 2").is_err());
    }
}
