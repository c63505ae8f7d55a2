//! The `.proto` files Lua loaded (`grpc.loadfile`, `grpc.load`), parsed here
//! with protox, and the methods they define.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use prost_reflect::{DescriptorPool, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};

/// One method, as a call needs it.
pub struct Method {
    pub path: http::uri::PathAndQuery,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

#[derive(Default)]
pub struct Protos {
    pool: RwLock<DescriptorPool>,
    /// Sources given as text, by name: `load` of a source may import an
    /// earlier one.
    sources: RwLock<HashMap<String, String>>,
    methods: RwLock<HashMap<String, Arc<Method>>>,
}

/// Sources given as text.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(src) => File::from_source(name, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl Protos {
    /// Parses the file at `path` (and what it imports: from `includes`, then
    /// from the file's own directory, then Google's well-known types).
    pub fn load_file(&self, path: &str, includes: &[String]) -> Result<(), String> {
        let path = Path::new(path);
        let mut dirs: Vec<PathBuf> = includes.iter().map(PathBuf::from).collect();
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => (dir.to_path_buf(), name.to_string_lossy().into_owned()),
            _ => return Err(format!("{}: not a file path", path.display())),
        };
        // A relative path is looked up in the include paths first, like an
        // import; else it is the file at that path.
        let found_in_include = path.is_relative() && dirs.iter().any(|d| d.join(path).is_file());
        let open_as = if found_in_include {
            path.to_string_lossy().into_owned()
        } else {
            if !path.is_file() {
                return Err(format!("{}: no such file", path.display()));
            }
            let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
            dirs.push(dir);
            name
        };
        self.compile(&open_as, dirs)
    }

    /// Parses `source`, a `.proto` file's text, under the file name `name`.
    pub fn load_source(&self, name: &str, source: &str, includes: &[String]) -> Result<(), String> {
        self.sources.write().unwrap().insert(name.to_string(), source.to_string());
        let result = self.compile(name, includes.iter().map(PathBuf::from).collect());
        if result.is_err() {
            self.sources.write().unwrap().remove(name);
        }
        result
    }

    fn compile(&self, name: &str, includes: Vec<PathBuf>) -> Result<(), String> {
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(self.sources.read().unwrap().clone()));
        for dir in includes {
            resolver.add(IncludeFileResolver::new(dir));
        }
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(name).map_err(|e| describe(&e))?;
        let set = compiler.file_descriptor_set();
        let mut pool = self.pool.write().unwrap();
        // Files already in the pool (a shared import) are skipped.
        let mut next = pool.clone();
        next.add_file_descriptor_set(set).map_err(|e| format!("{name}: {e}"))?;
        *pool = next;
        self.methods.write().unwrap().clear();
        Ok(())
    }

    /// The method at `path` (`/package.Service/Method`).
    pub fn method(&self, path: &str) -> Result<Arc<Method>, String> {
        if let Some(m) = self.methods.read().unwrap().get(path) {
            return Ok(m.clone());
        }
        let unknown = || {
            format!("unknown method {path:?}: no loaded .proto defines it (grpc.loadfile or grpc.load first; paths look like /package.Service/Method)")
        };
        let (service, method) = path.strip_prefix('/').and_then(|p| p.split_once('/')).ok_or_else(unknown)?;
        let pool = self.pool.read().unwrap();
        let service = pool.get_service_by_name(service).ok_or_else(unknown)?;
        let m = service.methods().find(|m| m.name() == method).ok_or_else(unknown)?;
        let method = Arc::new(Method {
            path: path.parse().map_err(|_| unknown())?,
            input: m.input(),
            output: m.output(),
            client_streaming: m.is_client_streaming(),
            server_streaming: m.is_server_streaming(),
        });
        self.methods.write().unwrap().insert(path.to_string(), method.clone());
        Ok(method)
    }

    /// A message type by its full name (`google.rpc.Status`).
    pub fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool.read().unwrap().get_message_by_name(name)
    }
}

/// protox's error with its location (`file:line:col: what`).
fn describe(e: &protox::Error) -> String {
    use miette::Diagnostic;
    let mut text = e.to_string();
    if let (Some(file), Some(src), Some(mut labels)) = (e.file(), e.source_code(), e.labels()) {
        if let Some(label) = labels.next() {
            if let Ok(span) = src.read_span(label.inner(), 0, 0) {
                text = format!("{file}:{}:{}: {text}", span.line() + 1, span.column() + 1);
            }
        }
    }
    text
}
