//! The Lua objects behind `handle`: a compatible subset of Envoy's Lua filter
//! stream handle. The yielding methods (`body`, `respond`) are Lua wrappers in
//! prelude.lua around the `RawHandle` methods here.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use mlua::{Lua, LuaString, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::envoy::{
    log, Attribute, BodyKind, HeaderKind, HeaderList, LogLevel, MetaValue, METADATA_DYNAMIC, METADATA_ROUTE,
};
use crate::filter::{Direction, LocalReply, SharedReply, Stream};

/// The per-call handle given to `envoy_on_request` / `envoy_on_response`.
/// With `local`, envoy_on_response works on our own local reply, which
/// Envoy does not pass through our encode hooks.
pub struct RawHandle {
    stream: Rc<Stream>,
    dir: Direction,
    local: Option<SharedReply>,
}

impl RawHandle {
    pub fn new(stream: Rc<Stream>, dir: Direction, local: Option<SharedReply>) -> RawHandle {
        RawHandle { stream, dir, local }
    }
}

fn log_method<M: UserDataMethods<RawHandle>>(methods: &mut M, name: &str, level: LogLevel) {
    methods.add_method(name, move |_, _, message: LuaString| {
        log(level, &message.to_string_lossy());
        Ok(())
    });
}

fn to_meta_value(value: Value) -> mlua::Result<MetaValue> {
    match value {
        Value::String(s) => Ok(MetaValue::Str(s.as_bytes().to_vec())),
        Value::Integer(n) => Ok(MetaValue::Number(n as f64)),
        Value::Number(n) => Ok(MetaValue::Number(n)),
        Value::Boolean(b) => Ok(MetaValue::Bool(b)),
        other => Err(mlua::Error::runtime(format!(
            "resty_ffi: metadata values must be strings, numbers or booleans, not {}",
            other.type_name()
        ))),
    }
}

fn from_meta_value(lua: &Lua, value: MetaValue) -> mlua::Result<Value> {
    Ok(match value {
        MetaValue::Str(s) => Value::String(lua.create_string(s)?),
        MetaValue::Number(n) => Value::Number(n),
        MetaValue::Bool(b) => Value::Boolean(b),
    })
}

/// Headers given to `respond()`: string values, or arrays of strings.
fn reply_headers(lua: &Lua, headers: &Table) -> mlua::Result<(u32, HeaderList)> {
    let mut status = None;
    let mut list = Vec::new();
    for pair in headers.pairs::<LuaString, Value>() {
        let (key, value) = pair?;
        let key = key.as_bytes().to_vec();
        let values = match value {
            Value::Table(t) => t.sequence_values::<LuaString>().collect::<mlua::Result<Vec<_>>>()?,
            Value::String(s) => vec![s],
            Value::Integer(_) | Value::Number(_) => lua.coerce_string(value)?.into_iter().collect(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "resty_ffi: respond(): header values must be strings, not {}",
                    other.type_name()
                )))
            }
        };
        for value in values {
            if key == b":status" {
                status = value.to_str().ok().and_then(|s| s.parse::<u32>().ok());
            } else {
                list.push((key.clone(), value.as_bytes().to_vec()));
            }
        }
    }
    match status {
        Some(code) if (100..1000).contains(&code) => Ok((code, list)),
        _ => Err(mlua::Error::runtime(
            "resty_ffi: respond(): headers need a valid :status",
        )),
    }
}

impl UserData for RawHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("headers", |_, this, ()| {
            let kind = match this.dir {
                Direction::Request => HeaderKind::Request,
                Direction::Response => HeaderKind::Response,
            };
            Ok(Headers {
                stream: Rc::clone(&this.stream),
                kind,
                local: this.local.clone(),
            })
        });
        methods.add_method("streamInfo", |_, this, ()| {
            Ok(StreamInfo {
                stream: Rc::clone(&this.stream),
            })
        });
        methods.add_method("metadata", |_, this, ()| {
            Ok(RouteMetadata {
                stream: Rc::clone(&this.stream),
            })
        });
        methods.add_method("timestamp", |_, _, ()| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Ok(ms)
        });
        log_method(methods, "logTrace", LogLevel::Trace);
        log_method(methods, "logDebug", LogLevel::Debug);
        log_method(methods, "logInfo", LogLevel::Info);
        log_method(methods, "logWarn", LogLevel::Warn);
        log_method(methods, "logErr", LogLevel::Error);
        log_method(methods, "logCritical", LogLevel::Critical);
        methods.add_method("bodyState", |_, this, ()| {
            Ok(match &this.local {
                Some(reply) if reply.borrow().body.is_empty() => "none",
                Some(_) => "ready",
                None => this.stream.body_state(this.dir),
            })
        });
        methods.add_method("bodyObject", |_, this, ()| {
            Ok(Body {
                stream: Rc::clone(&this.stream),
                dir: this.dir,
                local: this.local.clone(),
            })
        });
        methods.add_method("respond", |lua, this, (headers, body): (Table, Option<LuaString>)| {
            this.stream.envoy()?;
            let (status, headers) = reply_headers(lua, &headers)?;
            let body = body.map(|b| b.as_bytes().to_vec()).unwrap_or_default();
            this.stream.set_local_reply(LocalReply { status, headers, body });
            Ok(())
        });
    }
}

/// A header map (request or response headers). Like Envoy's Lua filter,
/// lookups that find nothing return no value at all (not nil).
pub struct Headers {
    stream: Rc<Stream>,
    kind: HeaderKind,
    local: Option<SharedReply>,
}

impl Headers {
    fn values(&self, key: &[u8]) -> mlua::Result<Vec<Vec<u8>>> {
        match &self.local {
            Some(reply) => Ok(reply.borrow().values(key)),
            None => Ok(self.stream.envoy()?.header_values(self.kind, key)),
        }
    }

    fn entries(&self) -> mlua::Result<HeaderList> {
        match &self.local {
            Some(reply) => Ok(reply.borrow().entries()),
            None => Ok(self.stream.envoy()?.headers(self.kind)),
        }
    }

    fn add(&self, key: &[u8], value: &[u8]) -> mlua::Result<()> {
        match &self.local {
            Some(reply) => reply.borrow_mut().add(key, value),
            None => {
                self.stream.envoy()?.add_header(self.kind, key, value);
            }
        }
        Ok(())
    }

    /// Replaces every value of `key`; `None` removes it.
    fn set(&self, key: &[u8], value: Option<&[u8]>) -> mlua::Result<()> {
        match &self.local {
            Some(reply) => reply.borrow_mut().set(key, value),
            None => {
                self.stream.envoy()?.set_header(self.kind, key, value);
            }
        }
        Ok(())
    }
}

impl UserData for Headers {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // Several values come back joined with ",", like Envoy's Lua filter.
        methods.add_method("get", |lua, this, key: LuaString| {
            let values = this.values(&key.as_bytes())?;
            if values.is_empty() {
                return Ok(MultiValue::new());
            }
            Ok(MultiValue::from_iter([Value::String(
                lua.create_string(values.join(&b","[..]))?,
            )]))
        });
        methods.add_method("getAtIndex", |lua, this, (key, index): (LuaString, i64)| {
            let values = this.values(&key.as_bytes())?;
            match usize::try_from(index).ok().and_then(|i| values.get(i)) {
                Some(value) => Ok(MultiValue::from_iter([Value::String(lua.create_string(value)?)])),
                None => Ok(MultiValue::new()),
            }
        });
        methods.add_method("getNumValues", |_, this, key: LuaString| {
            Ok(this.values(&key.as_bytes())?.len())
        });
        methods.add_method("add", |_, this, (key, value): (LuaString, LuaString)| {
            this.add(&key.as_bytes(), &value.as_bytes())
        });
        methods.add_method("replace", |_, this, (key, value): (LuaString, LuaString)| {
            this.set(&key.as_bytes(), Some(&value.as_bytes()))
        });
        methods.add_method("remove", |_, this, key: LuaString| this.set(&key.as_bytes(), None));
        methods.add_meta_method(MetaMethod::Pairs, |lua, this, ()| {
            let entries = this.entries()?;
            let next = Cell::new(0usize);
            let iter = lua.create_function(move |lua, _: MultiValue| {
                let i = next.get();
                next.set(i + 1);
                match entries.get(i) {
                    Some((k, v)) => Ok((
                        Value::String(lua.create_string(k)?),
                        Value::String(lua.create_string(v)?),
                    )),
                    None => Ok((Value::Nil, Value::Nil)),
                }
            })?;
            Ok((iter, Value::Nil, Value::Nil))
        });
    }
}

/// The whole body of one direction. Inside a body hook, the last chunk is
/// still Envoy's "received" buffer; everything before it is "buffered".
pub struct Body {
    stream: Rc<Stream>,
    dir: Direction,
    local: Option<SharedReply>,
}

impl Body {
    fn bytes(&self) -> mlua::Result<Vec<u8>> {
        if let Some(reply) = &self.local {
            return Ok(reply.borrow().body.clone());
        }
        let envoy = self.stream.envoy()?;
        let mut body = envoy.body(self.dir, BodyKind::Buffered);
        if self.stream.in_body_hook(self.dir) {
            body.extend_from_slice(&envoy.body(self.dir, BodyKind::Received));
        }
        Ok(body)
    }
}

impl UserData for Body {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("length", |_, this, ()| Ok(this.bytes()?.len()));
        methods.add_method("getBytes", |lua, this, (index, length): (i64, i64)| {
            let body = this.bytes()?;
            let (start, len) = match (usize::try_from(index), usize::try_from(length)) {
                (Ok(s), Ok(l)) if s.checked_add(l).is_some_and(|end| end <= body.len()) => (s, l),
                _ => {
                    return Err(mlua::Error::runtime(
                        "resty_ffi: getBytes(): index and length out of range",
                    ))
                }
            };
            lua.create_string(&body[start..start + len])
        });
        methods.add_method("setBytes", |_, this, data: LuaString| {
            if let Some(reply) = &this.local {
                let mut reply = reply.borrow_mut();
                reply.body = data.as_bytes().to_vec();
                let length = reply.body.len().to_string();
                reply.set(b"content-length", Some(length.as_bytes()));
                return Ok(());
            }
            let envoy = this.stream.envoy()?;
            let in_hook = this.stream.in_body_hook(this.dir);
            envoy.drain_body(this.dir, BodyKind::Buffered, usize::MAX);
            let target = if in_hook {
                envoy.drain_body(this.dir, BodyKind::Received, usize::MAX);
                BodyKind::Received
            } else {
                BodyKind::Buffered
            };
            envoy.append_body(this.dir, target, &data.as_bytes());
            let headers = match this.dir {
                Direction::Request => HeaderKind::Request,
                Direction::Response => HeaderKind::Response,
            };
            envoy.set_header(
                headers,
                b"content-length",
                Some(data.as_bytes().len().to_string().as_bytes()),
            );
            Ok(())
        });
    }
}

pub struct StreamInfo {
    stream: Rc<Stream>,
}

fn attribute_string(lua: &Lua, stream: &Stream, attribute: Attribute) -> mlua::Result<Value> {
    match stream.envoy()?.attribute(attribute) {
        Some(bytes) => Ok(Value::String(lua.create_string(bytes)?)),
        None => Ok(Value::Nil),
    }
}

impl UserData for StreamInfo {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("protocol", |lua, this, ()| {
            attribute_string(lua, &this.stream, Attribute::Protocol)
        });
        methods.add_method("downstreamLocalAddress", |lua, this, ()| {
            attribute_string(lua, &this.stream, Attribute::DestinationAddress)
        });
        methods.add_method("downstreamRemoteAddress", |lua, this, ()| {
            attribute_string(lua, &this.stream, Attribute::SourceAddress)
        });
        methods.add_method("downstreamDirectRemoteAddress", |lua, this, ()| {
            match this.stream.envoy()?.direct_remote_address() {
                Some(address) => Ok(Value::String(lua.create_string(address)?)),
                None => Ok(Value::Nil),
            }
        });
        methods.add_method("dynamicMetadata", |_, this, ()| {
            Ok(DynamicMetadata {
                stream: Rc::clone(&this.stream),
            })
        });
    }
}

pub struct DynamicMetadata {
    stream: Rc<Stream>,
}

impl UserData for DynamicMetadata {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // A table of the namespace's string/number/bool values, or nil.
        methods.add_method("get", |lua, this, ns: LuaString| {
            let envoy = this.stream.envoy()?;
            let ns = ns.as_bytes().to_vec();
            let keys = envoy.metadata_keys(METADATA_DYNAMIC, &ns);
            if keys.is_empty() {
                return Ok(MultiValue::new());
            }
            let table = lua.create_table()?;
            for key in keys {
                if let Some(value) = envoy.metadata(METADATA_DYNAMIC, &ns, &key) {
                    table.set(lua.create_string(&key)?, from_meta_value(lua, value)?)?;
                }
            }
            Ok(MultiValue::from_iter([Value::Table(table)]))
        });
        methods.add_method("set", |_, this, (ns, key, value): (LuaString, LuaString, Value)| {
            let value = to_meta_value(value)?;
            this.stream
                .envoy()?
                .set_dynamic_metadata(&ns.as_bytes(), &key.as_bytes(), &value);
            Ok(())
        });
    }
}

/// Route metadata under the filter's namespace (`metadata_namespace`).
pub struct RouteMetadata {
    stream: Rc<Stream>,
}

impl UserData for RouteMetadata {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, this, key: LuaString| {
            let ns = this.stream.metadata_namespace.as_bytes();
            match this.stream.envoy()?.metadata(METADATA_ROUTE, ns, &key.as_bytes()) {
                Some(value) => Ok(MultiValue::from_iter([from_meta_value(lua, value)?])),
                None => Ok(MultiValue::new()),
            }
        });
    }
}
