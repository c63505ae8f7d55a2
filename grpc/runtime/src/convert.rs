//! Lua tables (as [`Lv`]) to protobuf messages and back, following a
//! message's descriptor.
//!
//! The Lua shapes are lua-protobuf's (what lua-resty-ffi-grpc users wrote):
//! fields by their `.proto` names, enums by name (a number is accepted on
//! the way in), `bytes` as raw strings, repeated fields as arrays, maps as
//! tables, 64-bit integers as numbers (a string of digits when a Lua number
//! cannot hold them exactly). Decoded messages carry every field without
//! presence (proto3 scalars: their default when unset), repeated and map
//! fields (empty tables when empty), and the message fields and oneof
//! members that are set.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, ReflectMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use crate::text::{self, Lv};

/// A conversion error: where (field names from the outside in) and what.
pub struct ConvError {
    path: Vec<String>,
    msg: String,
}

impl ConvError {
    fn new(msg: impl Into<String>) -> Self {
        ConvError { path: Vec::new(), msg: msg.into() }
    }

    fn at(mut self, field: impl Into<String>) -> Self {
        self.path.push(field.into());
        self
    }

    /// `message type: field a.b: what`.
    pub fn describe(&self, message: &str) -> String {
        if self.path.is_empty() {
            return format!("{message}: {}", self.msg);
        }
        let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        format!("{message}: field {}: {}", path.join("."), self.msg)
    }
}

type Result<T> = std::result::Result<T, ConvError>;

/// Builds a message of type `desc` from a Lua table.
pub fn to_message(v: &Lv, desc: &MessageDescriptor) -> Result<DynamicMessage> {
    let items: &[(Lv, Lv)] = match v {
        Lv::Obj(items) => items,
        Lv::Arr(a) if a.is_empty() => &[],
        Lv::Null => &[],
        other => return Err(ConvError::new(format!("expected a table of fields, got {}", other.kind()))),
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (k, v) in items {
        let Some(name) = k.as_str().and_then(|s| std::str::from_utf8(s).ok()) else {
            return Err(ConvError::new(format!(
                "a table of fields has string keys, got {} key (an array where a message belongs?)",
                k.kind()
            )));
        };
        let Some(field) = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)) else {
            return Err(ConvError::new(format!("no field named {name:?} in {}", desc.full_name())));
        };
        if matches!(v, Lv::Null) {
            continue;
        }
        let value = field_value(v, &field).map_err(|e| e.at(name))?;
        msg.set_field(&field, value);
    }
    Ok(msg)
}

fn field_value(v: &Lv, field: &FieldDescriptor) -> Result<Value> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(ConvError::new("map field without an entry type"));
        };
        let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let mut map = HashMap::new();
        let mut put = |k: &Lv, v: &Lv| -> Result<()> {
            let key = map_key(k, &kf.kind())?;
            let label = describe_key(k);
            let value = single(v, &vf.kind()).map_err(|e| e.at(label))?;
            map.insert(key, value);
            Ok(())
        };
        match v {
            Lv::Obj(items) => {
                for (k, v) in items {
                    put(k, v)?;
                }
            }
            // A Lua table {"a", "b"} arrives as an array: keys 1, 2, ...
            Lv::Arr(items) => {
                for (i, v) in items.iter().enumerate() {
                    put(&Lv::Int(i as i128 + 1), v)?;
                }
            }
            other => return Err(ConvError::new(format!("expected a table (map), got {}", other.kind()))),
        }
        return Ok(Value::Map(map));
    }
    if field.is_list() {
        let kind = field.kind();
        return match v {
            Lv::Arr(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| single(v, &kind).map_err(|e| e.at(format!("[{}]", i + 1))))
                .collect::<Result<Vec<_>>>()
                .map(Value::List),
            Lv::Obj(items) if items.is_empty() => Ok(Value::List(Vec::new())),
            other => Err(ConvError::new(format!("expected an array (repeated field), got {}", other.kind()))),
        };
    }
    single(v, &field.kind())
}

fn describe_key(k: &Lv) -> String {
    match k {
        Lv::Str(s) => format!("[{:?}]", String::from_utf8_lossy(s)),
        Lv::Int(i) => format!("[{i}]"),
        Lv::Bool(b) => format!("[{b}]"),
        other => format!("[{}]", other.kind()),
    }
}

fn int_of(v: &Lv) -> Result<i128> {
    if let Some(i) = v.as_int() {
        return Ok(i);
    }
    if let Lv::Str(s) = v {
        // 64-bit values beyond 2^53 travel as strings of digits (or as
        // LuaJIT's int64 cdata, which the Lua side writes as digits).
        if let Some(i) = std::str::from_utf8(s).ok().and_then(|s| s.trim().parse::<i128>().ok()) {
            return Ok(i);
        }
    }
    Err(ConvError::new(format!("expected an integer, got {}", describe_bad(v))))
}

fn describe_bad(v: &Lv) -> String {
    match v {
        Lv::Float(f) => format!("{f}"),
        Lv::Str(s) => format!("the string {:?}", String::from_utf8_lossy(&s[..s.len().min(40)])),
        other => other.kind().to_string(),
    }
}

fn ranged<T: TryFrom<i128>>(i: i128, name: &str) -> Result<T> {
    T::try_from(i).map_err(|_| ConvError::new(format!("{i} is out of range for {name}")))
}

fn float_of(v: &Lv) -> Result<f64> {
    match *v {
        Lv::Int(i) => Ok(i as f64),
        Lv::Float(f) => Ok(f),
        Lv::Str(ref s) => match s.as_slice() {
            b"NaN" | b"nan" => Ok(f64::NAN),
            b"Infinity" | b"inf" => Ok(f64::INFINITY),
            b"-Infinity" | b"-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(ConvError::new(format!("expected a number, got {}", describe_bad(v)))),
        },
        _ => Err(ConvError::new(format!("expected a number, got {}", v.kind()))),
    }
}

fn single(v: &Lv, kind: &Kind) -> Result<Value> {
    Ok(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(ranged(int_of(v)?, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(ranged(int_of(v)?, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(ranged(int_of(v)?, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(ranged(int_of(v)?, "uint64")?),
        Kind::Double => Value::F64(float_of(v)?),
        Kind::Float => Value::F32(float_of(v)? as f32),
        Kind::Bool => match v {
            Lv::Bool(b) => Value::Bool(*b),
            other => return Err(ConvError::new(format!("expected a boolean, got {}", other.kind()))),
        },
        Kind::String => match v {
            Lv::Str(s) => match String::from_utf8(s.clone()) {
                Ok(s) => Value::String(s),
                Err(_) => return Err(ConvError::new("not valid UTF-8 (a string field; binary data goes in bytes fields)")),
            },
            other => return Err(ConvError::new(format!("expected a string, got {}", other.kind()))),
        },
        Kind::Bytes => match v {
            Lv::Str(s) => Value::Bytes(s.clone().into()),
            other => return Err(ConvError::new(format!("expected a string (bytes), got {}", other.kind()))),
        },
        Kind::Enum(e) => match v {
            Lv::Str(s) => {
                let name = String::from_utf8_lossy(s);
                match e.get_value_by_name(&name) {
                    Some(ev) => Value::EnumNumber(ev.number()),
                    None => return Err(ConvError::new(format!("{name:?} is not a value of enum {}", e.full_name()))),
                }
            }
            other => Value::EnumNumber(ranged(int_of(other)?, "an enum")?),
        },
        Kind::Message(m) => Value::Message(to_message(v, m)?),
    })
}

fn map_key(k: &Lv, kind: &Kind) -> Result<MapKey> {
    Ok(match kind {
        Kind::String => match k {
            Lv::Str(s) => MapKey::String(
                String::from_utf8(s.clone()).map_err(|_| ConvError::new("map key is not valid UTF-8"))?,
            ),
            Lv::Int(i) => MapKey::String(i.to_string()),
            other => return Err(ConvError::new(format!("expected a string map key, got {}", other.kind()))),
        },
        Kind::Bool => match k {
            Lv::Bool(b) => MapKey::Bool(*b),
            Lv::Str(s) if s == b"true" || s == b"false" => MapKey::Bool(s == b"true"),
            other => return Err(ConvError::new(format!("expected a boolean map key, got {}", other.kind()))),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(ranged(int_of(k)?, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(ranged(int_of(k)?, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(ranged(int_of(k)?, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(ranged(int_of(k)?, "uint64")?),
        _ => return Err(ConvError::new("unsupported map key type")),
    })
}

/// Appends `msg` as a Lua table.
pub fn write_message(out: &mut Vec<u8>, msg: &DynamicMessage) {
    out.push(b'{');
    let mut first = true;
    for field in msg.descriptor().fields() {
        let repeated = field.is_list() || field.is_map();
        if !repeated && field.supports_presence() && !msg.has_field(&field) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        text::write_str(out, field.name().as_bytes());
        out.push(b':');
        write_value(out, &msg.get_field(&field), &field.kind());
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, v: &Value, kind: &Kind) {
    match v {
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I32(i) => text::write_int(out, i128::from(*i)),
        Value::I64(i) => text::write_int(out, i128::from(*i)),
        Value::U32(i) => text::write_int(out, i128::from(*i)),
        Value::U64(i) => text::write_int(out, i128::from(*i)),
        Value::F32(f) => text::write_f32(out, *f),
        Value::F64(f) => text::write_f64(out, *f),
        Value::String(s) => text::write_str(out, s.as_bytes()),
        Value::Bytes(b) => text::write_str(out, b),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(ev) => text::write_str(out, ev.name().as_bytes()),
            None => text::write_int(out, i128::from(*n)),
        },
        Value::Message(m) => write_message(out, m),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, kind);
            }
            out.push(b']');
        }
        Value::Map(map) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                _ => kind.clone(),
            };
            out.push(b'{');
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    MapKey::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                    MapKey::I32(i) => text::write_int(out, i128::from(*i)),
                    MapKey::I64(i) => text::write_int(out, i128::from(*i)),
                    MapKey::U32(i) => text::write_int(out, i128::from(*i)),
                    MapKey::U64(i) => text::write_int(out, i128::from(*i)),
                    MapKey::String(s) => text::write_str(out, s.as_bytes()),
                }
                out.push(b':');
                write_value(out, v, &value_kind);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::protos::Protos;
    use crate::text::parse_all;

    const PROTO: &str = r#"
        syntax = "proto3";
        package t;
        enum E { ZERO = 0; ONE = 1; }
        message P { int32 x = 1; }
        message M {
          string s = 1; bytes b = 2; int64 i = 3; uint64 u = 4; double d = 5; bool f = 6;
          E e = 7; P p = 8; repeated P ps = 9; map<int32, string> m = 10;
          oneof o { string a = 11; int32 n = 12; }
          optional int32 opt = 13; float fl = 14;
        }
    "#;

    fn desc() -> MessageDescriptor {
        let protos = Protos::default();
        protos.load_source("t.proto", PROTO, &[]).unwrap();
        protos.message("t.M").unwrap()
    }

    fn convert(text: &str) -> std::result::Result<DynamicMessage, String> {
        to_message(&parse_all(text.as_bytes()).unwrap(), &desc()).map_err(|e| e.describe("t.M"))
    }

    fn written(msg: &DynamicMessage) -> String {
        let mut out = Vec::new();
        write_message(&mut out, msg);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn round_trips_every_kind() {
        let msg = convert(
            r#"{"s":"é","b":"\u0000\u0001","i":"-9007199254740993","u":18446744073709551615,"d":0.5,"f":true,
                "e":"ONE","p":{"x":-1},"ps":[{"x":1},{}],"m":{"7":"seven",-1:"minus"},"n":3,"opt":0,"fl":0.1}"#,
        )
        .unwrap();
        let bytes = msg.encode_to_vec();
        let back = DynamicMessage::decode(desc(), bytes.as_slice()).unwrap();
        assert_eq!(
            written(&back),
            r#"{"s":"é","b":"\u0000\u0001","i":"-9007199254740993","u":"18446744073709551615","d":0.5,"f":true,"e":"ONE","p":{"x":-1},"ps":[{"x":1},{"x":0}],"m":{-1:"minus",7:"seven"},"n":3,"opt":0,"fl":0.1}"#
        );
    }

    #[test]
    fn writes_defaults_but_not_unset_presence_fields() {
        let msg = convert("{}").unwrap();
        assert_eq!(
            written(&msg),
            r#"{"s":"","b":"","i":0,"u":0,"d":0.0,"f":false,"e":"ZERO","ps":[],"m":{},"fl":0.0}"#
        );
    }

    #[test]
    fn says_which_field_is_wrong() {
        let err = |t: &str| convert(t).err().unwrap();
        assert_eq!(err(r#"{"nope":1}"#), r#"t.M: no field named "nope" in t.M"#);
        assert_eq!(err(r#"{"p":{"x":1.5}}"#), "t.M: field p.x: expected an integer, got 1.5");
        assert_eq!(err(r#"{"ps":[{"x":1},{"x":"a"}]}"#), r#"t.M: field ps.[2].x: expected an integer, got the string "a""#);
        assert_eq!(err(r#"{"e":"TWO"}"#), r#"t.M: field e: "TWO" is not a value of enum t.E"#);
        let raw = Lv::Obj(vec![(Lv::Str(b"s".to_vec()), Lv::Str(vec![0xff]))]);
        let e = to_message(&raw, &desc()).err().unwrap().describe("t.M");
        assert!(e.starts_with("t.M: field s: not valid UTF-8"), "{e}");
        assert_eq!(err(r#"{"i":1e30}"#), "t.M: field i: expected an integer, got 1000000000000000000000000000000");
        assert_eq!(err(r#"{"m":{"x":"y"}}"#), r#"t.M: field m: expected an integer, got the string "x""#);
        assert_eq!(err(r#"[1]"#), "t.M: expected a table of fields, got an array");
    }
}
