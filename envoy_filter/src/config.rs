//! The filter config (the JSON of a `google.protobuf.Struct`, shaped like
//! `envoy.filters.http.lua`'s config plus our own switches) and the Lua VMs
//! made from it: one per worker thread, created on the worker's first stream
//! and dropped with the config.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::thread::{self, ThreadId};

use serde_json::Value;

use crate::abi::{log, LogLevel};
use crate::api;
use crate::vm::{self, Script, Vm};

/// Shared by every worker thread; read-only after parsing but for `vms`.
pub struct FilterConfig {
    pub script: Script,
    /// A Lua error answers 500 (request path) or resets (response path)
    /// instead of being logged and ignored.
    pub fail_closed: bool,
    /// Namespace of the route metadata that `handle:metadata()` reads.
    pub metadata_namespace: String,
    vms: Mutex<HashMap<ThreadId, WorkerVm>>,
}

/// A VM in the config's map, used only by the worker thread it is keyed by.
struct WorkerVm(Rc<Vm>);

// SAFETY: a `WorkerVm` is cloned and used only on the thread it is keyed by
// (`FilterConfig::worker_vm`). The one exception is its final drop, with the
// config: Envoy destroys a config only after every filter (stream) made from
// it is gone, so no other reference to the VM exists on any thread then, and
// closing a Lua state needs no particular thread, only no concurrent use.
unsafe impl Send for WorkerVm {}

fn string_field(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("resty_ffi: config field \"{key}\" must be a string")),
    }
}

fn bool_field(config: &Value, key: &str) -> Result<bool, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("resty_ffi: config field \"{key}\" must be a bool")),
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
        // Inline code is named by its own text, as the stock filter loads it
        // (error messages then read `[string "..."]:LINE:`).
        let (source, chunk_name) = if let Some(inline) = string_field(&code, "inline_string")? {
            (inline.clone(), inline)
        } else if let Some(path) = string_field(&code, "filename")? {
            let source = std::fs::read_to_string(&path).map_err(|e| format!("resty_ffi: read \"{path}\": {e}"))?;
            (source, format!("@{path}"))
        } else if let Some(inline) = string_field(&config, "inline_code")? {
            (inline.clone(), inline)
        } else {
            return Err("resty_ffi: config needs default_source_code.inline_string or .filename".to_owned());
        };
        vm::check_syntax(&source, &chunk_name)?;
        Ok(FilterConfig {
            script: Script {
                source,
                chunk_name,
                package_path: string_field(&config, "lua_package_path")?,
                package_cpath: string_field(&config, "lua_package_cpath")?,
            },
            fail_closed: bool_field(&config, "fail_closed")?,
            metadata_namespace: string_field(&config, "metadata_namespace")?.unwrap_or_else(|| filter_name.to_owned()),
            vms: Mutex::new(HashMap::new()),
        })
    }

    /// This worker thread's VM, created on first use. A VM whose script fails
    /// to run is kept (marked broken) so that every stream fails the same way.
    pub fn worker_vm(&self) -> Rc<Vm> {
        let worker = thread::current().id();
        if let Some(vm) = self.lock_vms().get(&worker) {
            return Rc::clone(&vm.0);
        }
        // Built without the lock: the script's top level may take its time.
        let vm = Rc::new(Vm::new(&self.script, api::install).expect("resty_ffi: the prelude must load"));
        if let Some(why) = &vm.broken {
            log(LogLevel::Error, &format!("resty_ffi: script failed to load: {why}"));
        }
        self.lock_vms().insert(worker, WorkerVm(Rc::clone(&vm)));
        vm
    }

    fn lock_vms(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, WorkerVm>> {
        self.vms.lock().unwrap_or_else(|e| e.into_inner())
    }
}
