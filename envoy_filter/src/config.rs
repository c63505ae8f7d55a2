//! The filter config: the JSON of a `google.protobuf.Struct`, shaped like
//! `envoy.filters.http.lua`'s config plus our own switches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::Value;

/// Shared by every worker thread (read-only after parsing).
pub struct FilterConfig {
    /// Identifies this config's per-worker Lua VMs.
    pub id: u64,
    pub source: String,
    pub chunk_name: String,
    /// A Lua error answers 500 (request path) or resets (response path)
    /// instead of being logged and ignored.
    pub fail_closed: bool,
    /// `package.path`; `;;` stands for Lua's default path.
    pub lua_package_path: Option<String>,
    /// Namespace of the route metadata that `handle:metadata()` reads.
    pub metadata_namespace: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Ids of configs not yet destroyed; workers drop the VMs of the others.
static LIVE: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

pub fn is_live(id: u64) -> bool {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|live| live.contains(&id))
}

fn string_field(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("resty_ffi: config field \"{key}\" must be a string")),
    }
}

impl FilterConfig {
    /// `filter_name` is the dynamic module filter's name; `json` its filter_config.
    pub fn parse(filter_name: &str, json: &[u8]) -> Result<FilterConfig, String> {
        let config: Value = if json.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(json).map_err(|e| format!("resty_ffi: filter_config is not a JSON object: {e}"))?
        };
        if !config.is_object() {
            return Err("resty_ffi: filter_config must be a google.protobuf.Struct".to_owned());
        }
        let code = config.get("default_source_code").cloned().unwrap_or(Value::Null);
        let (source, chunk_name) = if let Some(inline) = string_field(&code, "inline_string")? {
            (inline, format!("={filter_name}"))
        } else if let Some(path) = string_field(&code, "filename")? {
            let source = std::fs::read_to_string(&path).map_err(|e| format!("resty_ffi: read \"{path}\": {e}"))?;
            (source, format!("@{path}"))
        } else if let Some(inline) = string_field(&config, "inline_code")? {
            (inline, format!("={filter_name}"))
        } else {
            return Err("resty_ffi: config needs default_source_code.inline_string or .filename".to_owned());
        };
        let fail_closed = match config.get("fail_closed") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("resty_ffi: config field \"fail_closed\" must be a bool".to_owned()),
        };
        crate::vm::check_syntax(&source, &chunk_name)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(id);
        Ok(FilterConfig {
            id,
            source,
            chunk_name,
            fail_closed,
            lua_package_path: string_field(&config, "lua_package_path")?,
            metadata_namespace: string_field(&config, "metadata_namespace")?.unwrap_or_else(|| filter_name.to_owned()),
        })
    }
}

impl Drop for FilterConfig {
    fn drop(&mut self) {
        if let Some(live) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            live.remove(&self.id);
        }
    }
}
