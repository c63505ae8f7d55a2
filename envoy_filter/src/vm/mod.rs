//! One LuaJIT VM: the script of one filter config on one worker thread, like
//! Envoy's own Lua filter. Knows Lua, not Envoy: the layers above hand it the
//! host functions the prelude needs and run its coroutines.
//!
//! Which LuaJIT runs scripts (docs/envoy.md, "Which LuaJIT runs scripts"):
//! * `envoy-luajit` (default): the LuaJIT that the Envoy binary exports. Lua C
//!   modules (cjson, …) resolve `lua_*` to the very VM that runs them, as in
//!   the stock Lua filter.
//! * `vendored-luajit`: a private LuaJIT built into this library, for custom
//!   Envoy binaries without one. A C module would bind to another LuaJIT than
//!   the one running it (a crash), so loading one raises a Lua error instead.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;

use mlua::thread::ThreadStatus;
use mlua::{ffi, Function, IntoLuaMulti, LightUserData, Lua, Table, Thread, Value};

/// The script of a filter config and where it finds its modules.
#[derive(Clone)]
pub struct Script {
    pub source: String,
    /// Lua's chunk name: `=name` for inline code, `@path` for a file.
    pub chunk_name: String,
    /// `package.path`; `;;` stands for LuaJIT's default path.
    pub package_path: Option<String>,
    /// `package.cpath`; `;;` stands for LuaJIT's default path.
    pub package_cpath: Option<String>,
}

impl Script {
    /// A script with LuaJIT's default module search paths.
    pub fn new(source: String, chunk_name: String) -> Script {
        Script { source, chunk_name, package_path: None, package_cpath: None }
    }
}

/// What a filter coroutine yielded to the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yield {
    /// `host.wait()`: resume when the scheduler event arrives.
    Ffi,
    /// `body()`: resume when the whole body arrived (buffered).
    Body,
    /// `bodyChunks()`: resume with the next body chunk, without buffering.
    Chunk,
    /// `trailers()`: resume at the stream's end; the body streams by.
    Trailers,
    /// `httpCall()`: resume with the callout's answer.
    Callout,
    /// `handle:respond()`: send the local reply yielded with it; never resume.
    Responded,
}

impl Yield {
    const ALL: [Yield; 6] = [Yield::Ffi, Yield::Body, Yield::Chunk, Yield::Trailers, Yield::Callout, Yield::Responded];

    /// Its name in the prelude's `wait_*` functions.
    fn name(self) -> &'static str {
        match self {
            Yield::Ffi => "ffi",
            Yield::Body => "body",
            Yield::Chunk => "chunk",
            Yield::Trailers => "trailers",
            Yield::Callout => "callout",
            Yield::Responded => "responded",
        }
    }

    fn index(self) -> usize {
        Yield::ALL.iter().position(|&y| y == self).unwrap_or(0)
    }
}

// Distinct addresses used only as identities of the yields above.
static SENTINELS: [u8; Yield::ALL.len()] = [0; Yield::ALL.len()];

fn sentinel(y: Yield) -> LightUserData {
    LightUserData(&SENTINELS[y.index()] as *const u8 as *mut c_void)
}

/// How a coroutine gave control back.
pub enum Resumed {
    Finished,
    Yielded(Yield),
    /// `handle:respond()`, with the local reply: `{status, headers, body}`.
    Responded(Table),
    Failed(String),
}

/// A script's coroutine (`envoy_on_request` or `envoy_on_response`).
#[derive(Clone)]
pub struct Coroutine(Thread);

impl Coroutine {
    pub fn resume(&self, args: impl IntoLuaMulti) -> Resumed {
        // A yield passes a sentinel and its argument; a pair needs no
        // allocation (a MultiValue would).
        match self.0.resume::<(Value, Value)>(args) {
            Err(e) => Resumed::Failed(error_message(&e)),
            Ok(_) if self.0.status() != ThreadStatus::Resumable => Resumed::Finished,
            Ok((sentinel_value, argument)) => {
                let yielded = match sentinel_value {
                    Value::LightUserData(ud) => Yield::ALL.into_iter().find(|y| sentinel(*y) == ud),
                    _ => None,
                };
                match (yielded, argument) {
                    (Some(Yield::Responded), Value::Table(reply)) => Resumed::Responded(reply),
                    (Some(Yield::Responded), _) | (None, _) => Resumed::Failed(UNKNOWN_YIELD.to_owned()),
                    (Some(y), _) => Resumed::Yielded(y),
                }
            }
        }
    }
}

/// A Lua error as the script raised it: the message, without mlua's
/// "runtime error: " and without a traceback.
pub fn error_message(e: &mlua::Error) -> String {
    let message = match e {
        mlua::Error::RuntimeError(message) | mlua::Error::MemoryError(message) => message.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => return error_message(cause),
        other => other.to_string(),
    };
    match message.find("\nstack traceback:") {
        Some(end) => message[..end].to_owned(),
        None => message,
    }
}

const UNKNOWN_YIELD: &str = "the script yielded outside of a resty_ffi or handle call";

/// A Lua state made as the stock filter makes its states: `luaL_newstate`,
/// so Lua allocates from LuaJIT's own allocator (mlua's sends each of Lua's
/// allocations through Rust's allocator to malloc: ~2,000 instructions a
/// request, docs/performance.md). Closed when dropped.
pub struct LuaState {
    lua: ManuallyDrop<Lua>,
    state: NonNull<ffi::lua_State>,
}

impl LuaState {
    fn new() -> mlua::Result<LuaState> {
        // SAFETY: a fresh state, opened with every standard library including
        // `ffi`, which the resty_ffi.lua contract needs (like Envoy's Lua
        // filter: scripts come from the trusted Envoy config). mlua only
        // borrows it; `drop` closes it once our handle is gone.
        let (lua, state) = unsafe {
            let state = NonNull::new(ffi::luaL_newstate())
                .ok_or_else(|| mlua::Error::MemoryError("resty_ffi: no memory for a Lua state".into()))?;
            ffi::luaL_openlibs(state.as_ptr());
            (Lua::get_or_init_from_ptr(state.as_ptr()).clone(), state)
        };
        // mlua protects allocations where a state's allocator might fail on
        // purpose (a memory limit); LuaJIT's has none, as with mlua's own.
        #[cfg(feature = "envoy-luajit")]
        lua.skip_memory_check(true);
        let owned = LuaState { lua: ManuallyDrop::new(lua), state };
        // As in the stock filter, `ffi` is require("ffi"), not a global.
        owned.globals().raw_set("ffi", Value::Nil)?;
        Ok(owned)
    }
}

impl Deref for LuaState {
    type Target = Lua;

    fn deref(&self) -> &Lua {
        &self.lua
    }
}

impl Drop for LuaState {
    fn drop(&mut self) {
        // SAFETY: `lua` is the only strong handle outside the state (values
        // hold weak ones, and do nothing once it is gone), dropped once here;
        // closing collects the state's mlua data with everything else.
        unsafe {
            ManuallyDrop::drop(&mut self.lua);
            ffi::lua_close(self.state.as_ptr());
        }
    }
}

pub struct Vm {
    pub on_request: Option<Function>,
    pub on_response: Option<Function>,
    /// The handle constructor that the layers above installed.
    make_handle: Function,
    /// Wraps an entry function as the body of a coroutine (prelude.lua).
    protect: Function,
    /// Why the script failed to load on this worker, if it did.
    pub broken: Option<String>,
    /// Last: the values above go before their state is closed.
    pub lua: LuaState,
}

/// Rejects a script that does not compile (nothing is run).
pub fn check_syntax(source: &str, chunk_name: &str) -> Result<(), String> {
    LuaState::new()
        .map_err(|e| format!("resty_ffi: {e}"))?
        .load(source)
        .set_name(chunk_name)
        .into_function()
        .map(drop)
        .map_err(|e| format!("resty_ffi: script does not compile: {e}"))
}

/// Sets `package[field]`; `;;` in `configured` stands for the current value.
fn set_search_path(lua: &Lua, field: &str, configured: &str) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let default: String = package.get(field)?;
    let path = match configured.strip_suffix(";;") {
        Some(entries) if !entries.contains(";;") => format!("{entries};{default}"),
        _ => configured.replace(";;", &format!(";{default};")),
    };
    package.set(field, path)
}

/// With a private LuaJIT, `require` of a C module and `package.loadlib` raise
/// a clear error instead of loading code that would bind to another LuaJIT.
fn refuse_c_modules(lua: &Lua) -> mlua::Result<()> {
    if cfg!(feature = "envoy-luajit") {
        return Ok(());
    }
    lua.load(
        r#"
        local message = "resty_ffi: this build of the Envoy filter runs its own LuaJIT, and Lua C modules "
            .. "would bind to another one; load the filter built for Envoy's LuaJIT to use them"
        local function refuse(name)
            return "\n\t" .. message .. " (" .. tostring(name) .. ")"
        end
        package.loaders[3] = refuse   -- C module by cpath
        package.loaders[4] = refuse   -- all-in-one C loader
        package.loadlib = function() return nil, message, "open" end
        "#,
    )
    .set_name("=resty_ffi.c_modules")
    .exec()
}

impl Vm {
    /// Loads the prelude, then `setup` (the layers above install their
    /// modules and return the constructor of the handle a script gets), then
    /// the script. A script that fails to run leaves the VM `broken`.
    pub fn new(script: &Script, setup: impl FnOnce(&Lua) -> mlua::Result<Function>) -> mlua::Result<Vm> {
        let lua = LuaState::new()?;
        refuse_c_modules(&lua)?;
        let sentinels = lua.create_table()?;
        for y in Yield::ALL {
            sentinels.set(y.name(), sentinel(y))?;
        }
        let protect = lua.load(include_str!("prelude.lua")).set_name("=resty_ffi.envoy.vm").call::<Function>(sentinels)?;
        let make_handle = setup(&lua)?;
        let mut vm = Vm { lua, on_request: None, on_response: None, make_handle, protect, broken: None };
        if let Err(e) = vm.load_script(script) {
            vm.broken = Some(error_message(&e));
        }
        Ok(vm)
    }

    fn load_script(&mut self, script: &Script) -> mlua::Result<()> {
        if let Some(path) = &script.package_path {
            set_search_path(&self.lua, "path", path)?;
        }
        if let Some(path) = &script.package_cpath {
            set_search_path(&self.lua, "cpath", path)?;
        }
        self.lua.load(&script.source).set_name(&script.chunk_name).exec()?;
        let globals = self.lua.globals();
        self.on_request = self.entry(globals.get("envoy_on_request")?)?;
        self.on_response = self.entry(globals.get("envoy_on_response")?)?;
        Ok(())
    }

    fn entry(&self, function: Option<Function>) -> mlua::Result<Option<Function>> {
        function.map(|f| self.protect.call((f, &self.make_handle))).transpose()
    }

    /// A coroutine that runs `entry` when first resumed, with the handle
    /// made of the resume's arguments by the constructor `setup` returned.
    pub fn coroutine(&self, entry: Function) -> mlua::Result<Coroutine> {
        Ok(Coroutine(self.lua.create_thread(entry)?))
    }

    /// A Lua table of a JSON object (nested objects and arrays become
    /// tables; null becomes nil).
    pub fn table_of(&self, object: &serde_json::Map<String, serde_json::Value>) -> mlua::Result<Table> {
        let table = self.lua.create_table()?;
        for (key, value) in object {
            table.set(key.as_str(), self.value_of(value)?)?;
        }
        Ok(table)
    }

    fn value_of(&self, value: &serde_json::Value) -> mlua::Result<Value> {
        use serde_json::Value as Json;
        Ok(match value {
            Json::Null => Value::Nil,
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
            Json::String(s) => Value::String(self.lua.create_string(s)?),
            Json::Array(items) => {
                let table = self.lua.create_table()?;
                for (i, item) in items.iter().enumerate() {
                    table.raw_set(i + 1, self.value_of(item)?)?;
                }
                Value::Table(table)
            }
            Json::Object(object) => Value::Table(self.table_of(object)?),
        })
    }

    /// Calls `package.loaded[module][name](args)` if it is a function.
    pub fn call_loaded(&self, module: &str, name: &str, args: impl IntoLuaMulti) -> mlua::Result<()> {
        let loaded: Table = self.lua.globals().get::<Table>("package")?.get("loaded")?;
        let Some(module) = loaded.get::<Option<Table>>(module)? else { return Ok(()) };
        match module.get::<Option<Function>>(name)? {
            Some(f) => f.call(args),
            None => Ok(()),
        }
    }
}
