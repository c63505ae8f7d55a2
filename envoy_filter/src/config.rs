//! The filter config and the per-route config, shaped like
//! `envoy.filters.http.lua`'s `Lua` and `LuaPerRoute` (in the JSON of a
//! `google.protobuf.Struct`) plus our own switches, and the Lua VMs made from
//! their scripts: one per worker thread per script, created on the worker's
//! first stream that runs the script, dropped with the config that owns it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use resty_ffi::shdict::{self, SharedDict};
use serde_json::{Map, Value};

use crate::abi::{log, EnvoyConfig, LogLevel};
use crate::api;
use crate::api::stats::Metrics;
use crate::vm::{self, Script, Vm};

/// A script and its VMs, one per worker thread.
pub struct ScriptVms {
    script: Script,
    /// A per-route script's own `package_paths` and `package_cpaths`, put
    /// before the filter's.
    search_paths: SearchPaths,
    vms: Mutex<HashMap<ThreadId, WorkerVm>>,
}

/// `package_paths` and `package_cpaths` of a config (lists of Lua search
/// path entries, put before the others).
#[derive(Default)]
struct SearchPaths {
    path: Vec<String>,
    cpath: Vec<String>,
}

impl SearchPaths {
    fn parse(config: &Value) -> Result<SearchPaths, String> {
        Ok(SearchPaths { path: strings_field(config, "package_paths")?, cpath: strings_field(config, "package_cpaths")? })
    }
}

/// `entries` put before `rest` (a search path where `;;` stands for
/// LuaJIT's default); `rest` absent means the default.
fn search_path(entries: &[String], rest: Option<&str>) -> Option<String> {
    if entries.is_empty() {
        return rest.map(str::to_owned);
    }
    Some(format!("{};{}", entries.join(";"), rest.unwrap_or(";")))
}

/// A VM in a script's map, used only by the worker thread it is keyed by.
struct WorkerVm(Arc<Vm>);

// SAFETY: a VM is used only on the worker thread it is keyed by
// (`ScriptVms::worker_vm`); streams hold `Arc`s to it on that thread only.
// The map's own `Arc` may be dropped on another thread (with its config): if
// it is the last one, no stream uses the VM any more, and closing a Lua state
// needs no particular thread, only no concurrent use; the count is atomic.
unsafe impl Send for WorkerVm {}

impl ScriptVms {
    fn new(script: Script) -> Result<ScriptVms, String> {
        ScriptVms::with_search_paths(script, SearchPaths::default())
    }

    fn with_search_paths(script: Script, search_paths: SearchPaths) -> Result<ScriptVms, String> {
        vm::check_syntax(&script.source, &script.chunk_name)?;
        Ok(ScriptVms { script, search_paths, vms: Mutex::new(HashMap::new()) })
    }

    /// The script with its module search paths: its own before the filter's
    /// (`package_path` and `package_cpath`).
    fn with_paths(&self, package_path: Option<&str>, package_cpath: Option<&str>) -> Script {
        Script {
            package_path: search_path(&self.search_paths.path, package_path),
            package_cpath: search_path(&self.search_paths.cpath, package_cpath),
            ..self.script.clone()
        }
    }

    /// Runs the script's top level once, in a VM of its own where no
    /// runtime is loaded: a script that fails there rejects the config, as
    /// in the stock filter.
    fn check(&self, package_path: Option<&str>, package_cpath: Option<&str>, dicts: &[Arc<SharedDict>]) -> Result<(), String> {
        let setup = |lua: &mlua::Lua| {
            let make_handle = api::install_for_check(lua)?;
            api::shdict::install(lua, dicts)?;
            Ok(make_handle)
        };
        let vm = Vm::new(&self.with_paths(package_path, package_cpath), setup).map_err(|e| format!("resty_ffi: {e}"))?;
        match vm.broken {
            Some(why) => Err(format!("script load error: {why}")),
            None => Ok(()),
        }
    }

    /// This worker thread's VM, created on first use; `filter` gives the
    /// module search paths the script does not set itself. A VM whose script
    /// fails to run is kept (marked broken) so that every stream fails the
    /// same way.
    pub fn worker_vm(&self, filter: &FilterConfig) -> Arc<Vm> {
        let worker = thread::current().id();
        if let Some(vm) = self.lock_vms().get(&worker) {
            return Arc::clone(&vm.0);
        }
        let script = self.with_paths(filter.package_path.as_deref(), filter.package_cpath.as_deref());
        // Built without the lock: the script's top level may take its time.
        let setup = |lua: &mlua::Lua| {
            let make_handle = api::install(lua)?;
            api::shdict::install(lua, &filter.shared_dicts)?;
            Ok(make_handle)
        };
        let vm = Arc::new(Vm::new(&script, setup).expect("resty_ffi: the prelude must load"));
        if let Some(why) = &vm.broken {
            log(LogLevel::Error, &format!("resty_ffi: script failed to load: {why}"));
        }
        self.lock_vms().insert(worker, WorkerVm(Arc::clone(&vm)));
        vm
    }

    fn lock_vms(&self) -> MutexGuard<'_, HashMap<ThreadId, WorkerVm>> {
        self.vms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared by every worker thread; read-only after parsing but for the VMs.
pub struct FilterConfig {
    /// `default_source_code`: runs unless a per-route config says otherwise.
    pub default: Option<ScriptVms>,
    /// `source_codes`: scripts a per-route config picks by name.
    pub named: HashMap<String, ScriptVms>,
    /// A Lua error answers 500 (request path) or resets (response path)
    /// instead of being logged and ignored.
    pub fail_closed: bool,
    /// Namespace of the route metadata that `handle:metadata()` reads first.
    pub metadata_namespace: String,
    /// Changing request headers re-selects the route (stock default: true).
    pub clear_route_cache: bool,
    /// `package.path` and `package.cpath` of the scripts (`package_paths`
    /// before `lua_package_path`); `;;` stands for LuaJIT's defaults.
    pub package_path: Option<String>,
    pub package_cpath: Option<String>,
    pub metrics: Arc<Metrics>,
    /// `filter_context`: what `handle:filterContext()` gives on routes
    /// without one of their own.
    pub filter_context: Map<String, Value>,
    /// `shared_dicts`: the process's dicts this config's scripts see as
    /// `ngx.shared.NAME`.
    pub shared_dicts: Vec<Arc<SharedDict>>,
}

/// What a route's `LuaPerRoute` asks for.
pub enum RouteScript {
    /// `disabled: true`: the filter does nothing on this route.
    Disabled,
    /// `name`: a script of the filter's `source_codes`.
    Named(String),
    /// `source_code`: a script of its own.
    Inline(ScriptVms),
}

pub struct PerRouteConfig {
    pub script: RouteScript,
    /// `filter_context`, for `handle:filterContext()`.
    pub filter_context: Map<String, Value>,
}

fn object(json: &[u8], what: &str) -> Result<Value, String> {
    let value: Value = if json.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(json).map_err(|e| format!("resty_ffi: {what} is not a JSON object: {e}"))?
    };
    if !value.is_object() {
        return Err(format!("resty_ffi: {what} must be a google.protobuf.Struct"));
    }
    Ok(value)
}

fn string_field(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("resty_ffi: config field \"{key}\" must be a string")),
    }
}

fn filter_context(config: &Value) -> Result<Map<String, Value>, String> {
    match config.get("filter_context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(context)) => Ok(context.clone()),
        Some(_) => Err("resty_ffi: filter_context must be a struct".to_owned()),
    }
}

fn strings_field(config: &Value, key: &str) -> Result<Vec<String>, String> {
    let invalid = || format!("resty_ffi: config field \"{key}\" must be a list of strings");
    match config.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid)).collect(),
        Some(_) => Err(invalid()),
    }
}

fn bool_field(config: &Value, key: &str, default: bool) -> Result<bool, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("resty_ffi: config field \"{key}\" must be a bool")),
    }
}

/// A dict size: bytes, or a string of them with nginx's suffixes (`64k`,
/// `10m`, `1g`).
fn dict_size(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => {
            let (digits, unit) = match s.char_indices().last()? {
                (at, 'k' | 'K') => (&s[..at], 1 << 10),
                (at, 'm' | 'M') => (&s[..at], 1 << 20),
                (at, 'g' | 'G') => (&s[..at], 1 << 30),
                _ => (s.as_str(), 1),
            };
            digits.parse::<usize>().ok()?.checked_mul(unit)
        }
        _ => None,
    }
}

/// `shared_dicts` (name → size) as (name, size), checked.
fn shared_dict_sizes(config: &Value) -> Result<Vec<(String, usize)>, String> {
    let Some(dicts) = config.get("shared_dicts").filter(|d| !d.is_null()) else { return Ok(Vec::new()) };
    let dicts = dicts.as_object().ok_or("resty_ffi: shared_dicts must be a map of names to sizes")?;
    let mut sizes = Vec::new();
    for (name, size) in dicts {
        let size = dict_size(size)
            .ok_or_else(|| format!("resty_ffi: shared_dicts.{name}: a size is a number of bytes or a string like \"10m\""))?;
        if name.is_empty() || size < shdict::MIN_SIZE {
            return Err(format!("resty_ffi: shared_dicts.{name}: invalid shared dict (a name, and at least {} bytes)", shdict::MIN_SIZE));
        }
        sizes.push((name.clone(), size));
    }
    Ok(sizes)
}

/// A `DataSource` (`inline_string` or `filename`) as a script, or `None`
/// when `source` is absent.
fn data_source(source: Option<&Value>) -> Result<Option<Script>, String> {
    let Some(source) = source.filter(|s| !s.is_null()) else { return Ok(None) };
    // Inline code is named by its own text, as the stock filter loads it
    // (error messages then read `[string "..."]:LINE:`).
    let (code, chunk_name) = if let Some(inline) = string_field(source, "inline_string")? {
        (inline.clone(), inline)
    } else if let Some(path) = string_field(source, "filename")? {
        let code = std::fs::read_to_string(&path).map_err(|e| format!("resty_ffi: read \"{path}\": {e}"))?;
        (code, format!("@{path}"))
    } else {
        return Err("resty_ffi: a source code needs inline_string or filename".to_owned());
    };
    Ok(Some(Script::new(code, chunk_name)))
}

impl FilterConfig {
    /// `filter_name` is the dynamic module filter's name; `json` its
    /// filter_config; `envoy` defines the scripts' metrics.
    pub fn parse(filter_name: &str, json: &[u8], envoy: EnvoyConfig) -> Result<FilterConfig, String> {
        let config = object(json, "filter_config")?;
        let (path, cpath) = (string_field(&config, "lua_package_path")?, string_field(&config, "lua_package_cpath")?);
        let default = match config.get("default_source_code") {
            Some(source) => data_source(Some(source))?,
            // Our first configs named the code `inline_code`.
            None => string_field(&config, "inline_code")?.map(|code| Script::new(code.clone(), code)),
        };
        let mut named = HashMap::new();
        if let Some(codes) = config.get("source_codes").filter(|c| !c.is_null()) {
            let codes = codes.as_object().ok_or("resty_ffi: source_codes must be a map of names to sources")?;
            for (name, source) in codes {
                let script = data_source(Some(source))?
                    .ok_or_else(|| format!("resty_ffi: source_codes.{name} has no code"))?;
                named.insert(name.clone(), ScriptVms::new(script)?);
            }
        }
        let sources = default.iter().map(|s| s.source.as_str()).chain(named.values().map(|n: &ScriptVms| n.script.source.as_str()));
        let metrics = Metrics::define(envoy, &string_field(&config, "stat_prefix")?.unwrap_or_default(), sources);
        let search_paths = SearchPaths::parse(&config)?;
        let (package_path, package_cpath) = (search_path(&search_paths.path, path.as_deref()), search_path(&search_paths.cpath, cpath.as_deref()));
        let default = default.map(ScriptVms::new).transpose()?;
        // The check sees the dicts already declared with these sizes and
        // throwaway ones for the rest: a config it rejects changes no dict.
        let dict_sizes = shared_dict_sizes(&config)?;
        let for_check: Vec<_> = dict_sizes
            .iter()
            .map(|(name, size)| {
                shdict::find(name)
                    .filter(|dict| dict.capacity() == *size)
                    .unwrap_or_else(|| Arc::new(SharedDict::new(name, *size)))
            })
            .collect();
        for scripts in default.iter().chain(named.values()) {
            scripts.check(package_path.as_deref(), package_cpath.as_deref(), &for_check)?;
        }
        let mut parsed = FilterConfig {
            metrics: Arc::new(metrics),
            default,
            named,
            fail_closed: bool_field(&config, "fail_closed", false)?,
            metadata_namespace: string_field(&config, "metadata_namespace")?.unwrap_or_else(|| filter_name.to_owned()),
            clear_route_cache: bool_field(&config, "clear_route_cache", true)?,
            package_path,
            package_cpath,
            filter_context: filter_context(&config)?,
            shared_dicts: Vec::new(),
        };
        // Declared last, once nothing can reject the config.
        parsed.shared_dicts = dict_sizes
            .iter()
            .map(|(name, size)| shdict::declare(name, *size).map_err(|e| format!("resty_ffi: shared_dicts.{name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(parsed)
    }
}

impl PerRouteConfig {
    pub fn parse(json: &[u8]) -> Result<PerRouteConfig, String> {
        let config = object(json, "the per-route filter_config")?;
        let filter_context = filter_context(&config)?;
        let script = if bool_field(&config, "disabled", false)? {
            RouteScript::Disabled
        } else if let Some(name) = string_field(&config, "name")? {
            RouteScript::Named(name)
        } else if let Some(script) = data_source(config.get("source_code"))? {
            RouteScript::Inline(ScriptVms::with_search_paths(script, SearchPaths::parse(&config)?)?)
        } else {
            return Err("resty_ffi: a per-route config needs disabled, name or source_code".to_owned());
        };
        Ok(PerRouteConfig { script, filter_context })
    }
}
