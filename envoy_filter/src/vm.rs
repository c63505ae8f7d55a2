//! One LuaJIT VM per worker thread per filter config, like Envoy's own Lua
//! filter. VMs live in a thread-local map and never leave their thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use mlua::{Function, LightUserData, Lua, LuaOptions, StdLib, Value};

use crate::config::{self, FilterConfig};
use crate::envoy::{log, LogLevel};
use crate::filter::Stream;

/// What a filter coroutine yielded to the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yield {
    /// `host.wait()`: resume when the scheduler event arrives.
    Ffi,
    /// `handle:body()`: resume when the whole body is there.
    Body,
    /// `handle:respond()`: send the recorded local reply; never resume.
    Responded,
}

// Distinct addresses used only as identities of the yields above.
static SENTINELS: [u8; 3] = [0; 3];

fn sentinel(y: Yield) -> LightUserData {
    let index = match y {
        Yield::Ffi => 0,
        Yield::Body => 1,
        Yield::Responded => 2,
    };
    LightUserData(&SENTINELS[index] as *const u8 as *mut c_void)
}

pub fn classify_yield(value: Option<&Value>) -> Option<Yield> {
    let Some(Value::LightUserData(ud)) = value else {
        return None;
    };
    [Yield::Ffi, Yield::Body, Yield::Responded]
        .into_iter()
        .find(|y| sentinel(*y) == *ud)
}

pub struct WorkerVm {
    pub lua: Lua,
    pub on_request: Option<Function>,
    pub on_response: Option<Function>,
    /// The prelude's handle constructor: `make_handle(raw_userdata)`.
    pub make_handle: Function,
    pub fail_closed: bool,
    /// The script failed to load on this worker.
    pub broken: bool,
    pub metadata_namespace: String,
}

thread_local! {
    static VMS: RefCell<HashMap<u64, Rc<WorkerVm>>> = RefCell::new(HashMap::new());
    /// The stream whose coroutine is running (innermost last), for `host.sink()`.
    static CURRENT: RefCell<Vec<Rc<Stream>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `stream` as the current stream of this thread.
pub fn with_current<T>(stream: &Rc<Stream>, f: impl FnOnce() -> T) -> T {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().pop());
        }
    }
    CURRENT.with(|c| c.borrow_mut().push(Rc::clone(stream)));
    let _pop = Pop;
    f()
}

fn current_stream() -> Option<Rc<Stream>> {
    CURRENT.with(|c| c.borrow().last().cloned())
}

/// The VM of `config` on this worker thread, created on first use.
pub fn for_config(config: &FilterConfig) -> Rc<WorkerVm> {
    VMS.with(|vms| {
        if let Some(vm) = vms.borrow().get(&config.id) {
            return Rc::clone(vm);
        }
        let vm = Rc::new(WorkerVm::new(config));
        let mut vms = vms.borrow_mut();
        vms.retain(|id, _| config::is_live(*id));
        vms.insert(config.id, Rc::clone(&vm));
        vm
    })
}

/// Rejects a config whose script does not compile (nothing is run).
pub fn check_syntax(source: &str, chunk_name: &str) -> Result<(), String> {
    Lua::new()
        .load(source)
        .set_name(chunk_name)
        .into_function()
        .map(drop)
        .map_err(|e| format!("resty_ffi: script does not compile: {e}"))
}

fn package_path(lua: &Lua, configured: &str) -> mlua::Result<()> {
    let package: mlua::Table = lua.globals().get("package")?;
    let default: String = package.get("path")?;
    let path = configured.replace(";;", &format!(";{default};"));
    package.set("path", path)
}

impl WorkerVm {
    fn new(config: &FilterConfig) -> WorkerVm {
        // SAFETY: loads every standard library including `ffi`, which the
        // resty_ffi.lua contract needs; like Envoy's Lua filter, scripts come
        // from the trusted Envoy config.
        let lua = unsafe { Lua::unsafe_new_with(StdLib::ALL, LuaOptions::default()) };
        let make_handle = Self::install_prelude(&lua).expect("resty_ffi: the prelude must load");
        let mut vm = WorkerVm {
            lua,
            on_request: None,
            on_response: None,
            make_handle,
            fail_closed: config.fail_closed,
            broken: false,
            metadata_namespace: config.metadata_namespace.clone(),
        };
        if let Err(e) = vm.load_script(config) {
            log(LogLevel::Error, &format!("resty_ffi: script failed to load: {e}"));
            vm.broken = true;
        }
        vm
    }

    fn install_prelude(lua: &Lua) -> mlua::Result<Function> {
        let raw_host = lua.create_table()?;
        raw_host.set(
            "sink",
            lua.create_function(|_, ()| {
                Ok(match current_stream() {
                    Some(stream) => Value::LightUserData(LightUserData(stream.sink_ptr()? as *mut c_void)),
                    None => Value::Nil,
                })
            })?,
        )?;
        lua.load(include_str!("prelude.lua"))
            .set_name("=resty_ffi.envoy")
            .call((
                raw_host,
                sentinel(Yield::Ffi),
                sentinel(Yield::Body),
                sentinel(Yield::Responded),
            ))
    }

    fn load_script(&mut self, config: &FilterConfig) -> mlua::Result<()> {
        if let Some(path) = &config.lua_package_path {
            package_path(&self.lua, path)?;
        }
        self.lua.load(&config.source).set_name(&config.chunk_name).exec()?;
        let globals = self.lua.globals();
        self.on_request = globals.get("envoy_on_request")?;
        self.on_response = globals.get("envoy_on_response")?;
        Ok(())
    }
}
