//! Shared dicts for hosts without nginx's `lua_shared_dict` (Envoy): named,
//! process-wide key-value stores with TTLs and least-recently-used eviction
//! within a byte budget, shared by every thread of the process. Each
//! operation follows what lua-nginx-module's `ngx.shared.DICT` does, return
//! values and corner cases included (see the tests), so that the same Lua
//! runs on both hosts.
//!
//! What this module is not: nginx's dicts. On nginx the runtime C ABI
//! reaches the real zones through a host (see `shdict_abi`); this store is
//! only used where no host was registered.
//!
//! # Implementation notes
//! * One mutex per dict, held for the whole operation (as nginx holds the
//!   zone's lock); values are copied in before and out under it.
//! * Time is a monotonic millisecond clock read at most once per operation
//!   and only when an entry has a TTL; `expires` 0 means never, 1 means
//!   "already expired" (flush_all), so the clock starts at 2.
//! * Expired entries are removed lazily, like nginx does: up to two from the
//!   least recently used end at each write or read, all of them by
//!   `flush_expired`, and any by eviction.
//! * The byte budget counts keys, values and a fixed overhead per entry and
//!   per list item (`store::ENTRY_OVERHEAD`, `ITEM_OVERHEAD`); the memory the
//!   process really uses for a full dict is of the same order.

mod store;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

pub use store::{Item, ENTRY_OVERHEAD, ITEM_OVERHEAD};
use store::{entry_size, Entry, Store, Stored};

/// The smallest size a dict may have (lua-nginx-module refuses 8191 bytes
/// and less).
pub const MIN_SIZE: usize = 8192;

/// Longest key (lua-nginx-module's limit).
pub const MAX_KEY_LEN: usize = 65535;

/// `expires` of an entry flush_all expired.
const EXPIRED: u64 = 1;

/// How many rounds of forced eviction a write tries before "no memory"
/// (nginx's number; each round evicts the least recently used entry and up
/// to two expired ones).
const EVICTION_ROUNDS: usize = 30;

/// A value handed in or out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Str(&'a [u8]),
    Num(f64),
    Bool(bool),
}

impl Value<'_> {
    fn to_stored(self) -> Stored {
        match self {
            Value::Str(s) => Stored::Str(s.into()),
            Value::Num(n) => Stored::Num(n),
            Value::Bool(b) => Stored::Bool(b),
        }
    }
}

/// What a store does when the key is present or absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// `set`: store whatever is there; a nil value deletes.
    Set,
    /// `add`: only if absent (or expired).
    Add,
    /// `replace`: only if present and not expired.
    Replace,
}

/// Why an operation failed, with lua-nginx-module's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    NotFound,
    Exists,
    NoMemory,
    NotANumber,
    /// `get` of a list.
    IsList,
    /// A list operation on something else.
    NotAList,
    /// `add` or `replace` with nil.
    NilValue,
}

impl Error {
    pub fn message(self) -> &'static str {
        match self {
            Error::NotFound => "not found",
            Error::Exists => "exists",
            Error::NoMemory => "no memory",
            Error::NotANumber => "not a number",
            Error::IsList => "value is a list",
            Error::NotAList => "value not a list",
            Error::NilValue => "attempt to add or replace nil values",
        }
    }
}

/// A value found by `get`: the value, its user flags, whether it expired
/// (only `get_stale` returns expired values).
pub type Found<'a> = (Value<'a>, u32, bool);

fn clock_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX) + 2
}

/// The time of one operation, read when first needed.
#[derive(Default)]
struct Now(Option<u64>);

impl Now {
    fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(clock_ms)
    }

    /// When something living `ms` from now expires (0: never).
    fn deadline(&mut self, ms: i64) -> u64 {
        match u64::try_from(ms) {
            Ok(ms) if ms > 0 => self.get().saturating_add(ms),
            _ => 0,
        }
    }
}

enum Lookup {
    Valid(u32),
    Expired(u32),
}

/// Finds `key` and makes it the most recently used (even when expired, as
/// nginx does).
fn lookup(store: &mut Store, key: &[u8], now: &mut Now) -> Option<Lookup> {
    let at = store.find(key)?;
    store.touch(at);
    let expires = store.entry(at).expires;
    if expires != 0 && expires < now.get() {
        Some(Lookup::Expired(at))
    } else {
        Some(Lookup::Valid(at))
    }
}

/// nginx's `ngx_http_lua_shdict_expire`: removes up to two expired entries
/// from the least recently used end; `forced` first removes the least
/// recently used entry whatever it is. Returns how many went.
fn expire(store: &mut Store, now: &mut Now, forced: bool) -> usize {
    let mut freed = 0;
    for round in usize::from(!forced)..3 {
        let Some(at) = store.tail() else { return freed };
        if round > 0 {
            let expires = store.entry(at).expires;
            if expires == 0 || expires > now.get() {
                return freed;
            }
        }
        store.remove(at);
        freed += 1;
    }
    freed
}

/// Frees room for `bytes` by forced eviction. Ok(forcible) when it fits,
/// Err(forcible) when it does not.
fn make_room(store: &mut Store, now: &mut Now, bytes: usize) -> Result<bool, bool> {
    if store.fits(bytes) {
        return Ok(false);
    }
    let mut forcible = false;
    for _ in 0..EVICTION_ROUNDS {
        if expire(store, now, true) == 0 {
            break;
        }
        forcible = true;
        if store.fits(bytes) {
            return Ok(true);
        }
    }
    Err(forcible)
}

fn is_list(value: &Stored) -> bool {
    matches!(value, Stored::List(_))
}

fn value_of(stored: &Stored) -> Option<Value<'_>> {
    match stored {
        Stored::Str(s) => Some(Value::Str(s)),
        Stored::Num(n) => Some(Value::Num(*n)),
        Stored::Bool(b) => Some(Value::Bool(*b)),
        Stored::List(_) => None,
    }
}

/// One shared dict. Thread-safe; every method is one atomic operation.
pub struct SharedDict {
    name: Box<str>,
    store: Mutex<Store>,
}

impl std::fmt::Debug for SharedDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDict").field("name", &self.name).field("capacity", &self.capacity()).finish()
    }
}

impl SharedDict {
    /// A dict of `size` bytes that no registry knows (tests, benchmarks).
    pub fn new(name: &str, size: usize) -> SharedDict {
        SharedDict { name: name.into(), store: Mutex::new(Store::new(size)) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic under the lock leaves a consistent store (every update of
        // the index and the order completes before the next may panic).
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size it was declared with.
    pub fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    /// The bytes of the budget not used by entries.
    pub fn free_space(&self) -> usize {
        self.lock().free_space()
    }

    /// `get` (`stale` false) or `get_stale`: `f` sees the value while the
    /// dict is locked (None: absent, or expired and not `stale`).
    pub fn get<T>(&self, key: &[u8], stale: bool, f: impl FnOnce(Option<Found<'_>>) -> T) -> Result<T, Error> {
        let mut store = self.lock();
        let mut now = Now::default();
        if !stale {
            expire(&mut store, &mut now, false);
        }
        let (at, expired) = match lookup(&mut store, key, &mut now) {
            None => return Ok(f(None)),
            Some(Lookup::Expired(_)) if !stale => return Ok(f(None)),
            Some(Lookup::Expired(at)) => (at, true),
            Some(Lookup::Valid(at)) => (at, false),
        };
        let entry = store.entry(at);
        let value = value_of(&entry.value).ok_or(Error::IsList)?;
        Ok(f(Some((value, entry.flags, expired))))
    }

    /// `set`, `add`, `replace` and their `safe_` forms (`safe`: fail with
    /// "no memory" rather than evict). A `None` value deletes (`set` only).
    /// `exptime_ms` 0 or less: never expires. Ok(forcible) or
    /// Err((why, forcible)); forcible: valid entries were evicted.
    pub fn store(
        &self,
        op: StoreOp,
        safe: bool,
        key: &[u8],
        value: Option<Value<'_>>,
        exptime_ms: i64,
        flags: u32,
    ) -> Result<bool, (Error, bool)> {
        if value.is_none() && op != StoreOp::Set {
            return Err((Error::NilValue, false));
        }
        let value = value.map(Value::to_stored);
        let mut store = self.lock();
        let mut now = Now::default();
        expire(&mut store, &mut now, false);
        let found = lookup(&mut store, key, &mut now);
        let at = match (op, found) {
            (StoreOp::Replace, None | Some(Lookup::Expired(_))) => return Err((Error::NotFound, false)),
            (StoreOp::Add, Some(Lookup::Valid(_))) => return Err((Error::Exists, false)),
            (_, Some(Lookup::Valid(at) | Lookup::Expired(at))) => Some(at),
            (_, None) => None,
        };
        let Some(value) = value else {
            if let Some(at) = at {
                store.remove(at);
            }
            return Ok(false);
        };
        if let Some(at) = at {
            let old = &store.entry(at).value;
            if old.nginx_len() == value.nginx_len() && !is_list(old) {
                // Same size: nginx reuses the node in place, nothing to evict.
                store.set_value(at, value);
                let expires = now.deadline(exptime_ms);
                let entry = store.entry_mut(at);
                entry.expires = expires;
                entry.flags = flags;
                return Ok(false);
            }
            store.remove(at);
        }
        let need = entry_size(key.len(), &value);
        if safe && !store.fits(need) {
            return Err((Error::NoMemory, false));
        }
        let forcible = make_room(&mut store, &mut now, need).map_err(|forcible| (Error::NoMemory, forcible))?;
        let expires = now.deadline(exptime_ms);
        store.insert(Entry { key: key.into(), value, flags, expires });
        Ok(forcible)
    }

    /// `incr(key, by, init, init_ttl)`: Ok((new value, forcible)). Without
    /// `init` a missing key fails with "not found"; with it the key starts
    /// at `init` (expiring after `init_ttl_ms` if positive).
    pub fn incr(&self, key: &[u8], by: f64, init: Option<f64>, init_ttl_ms: i64) -> Result<(f64, bool), Error> {
        let mut store = self.lock();
        let mut now = Now::default();
        expire(&mut store, &mut now, false);
        let found = lookup(&mut store, key, &mut now);
        if let Some(Lookup::Valid(at)) = found {
            let Stored::Num(old) = store.entry(at).value else { return Err(Error::NotANumber) };
            let value = old + by;
            store.set_value(at, Stored::Num(value));
            return Ok((value, false));
        }
        let init = init.ok_or(Error::NotFound)?;
        let value = by + init;
        let expires = now.deadline(init_ttl_ms);
        if let Some(Lookup::Expired(at)) = found {
            let old = &store.entry(at).value;
            if old.nginx_len() == 8 && !is_list(old) {
                store.set_value(at, Stored::Num(value));
                let entry = store.entry_mut(at);
                entry.flags = 0;
                entry.expires = expires;
                return Ok((value, false));
            }
            store.remove(at);
        }
        let stored = Stored::Num(value);
        let forcible =
            make_room(&mut store, &mut now, entry_size(key.len(), &stored)).map_err(|_| Error::NoMemory)?;
        store.insert(Entry { key: key.into(), value: stored, flags: 0, expires });
        Ok((value, forcible))
    }

    /// `ttl(key)` in milliseconds: 0 for no TTL, negative for an expired
    /// entry not yet removed (as nginx reports it); None if absent.
    pub fn ttl(&self, key: &[u8]) -> Option<i64> {
        let store = self.lock();
        let expires = store.entry(store.find(key)?).expires;
        if expires == 0 {
            return Some(0);
        }
        let now = clock_ms();
        Some(if expires >= now { (expires - now) as i64 } else { -((now - expires) as i64) })
    }

    /// `expire(key, exptime)`: a new TTL (0: none) for an entry, expired or
    /// not, that is still there; false if absent.
    pub fn expire(&self, key: &[u8], exptime_ms: i64) -> bool {
        let mut store = self.lock();
        let Some(at) = store.find(key) else { return false };
        store.entry_mut(at).expires = Now::default().deadline(exptime_ms);
        true
    }

    /// `flush_all`: every entry expires now (`get_stale` still sees them
    /// until they are removed).
    pub fn flush_all(&self) {
        let mut store = self.lock();
        let mut at = store.tail();
        while let Some(i) = at {
            store.entry_mut(i).expires = EXPIRED;
            at = store.newer(i);
        }
        expire(&mut store, &mut Now::default(), true);
    }

    /// `flush_expired(max)`: removes expired entries, least recently used
    /// first, at most `max` (0: all); returns how many.
    pub fn flush_expired(&self, max: usize) -> usize {
        let mut store = self.lock();
        let now = clock_ms();
        let mut freed = 0;
        let mut at = store.tail();
        while let Some(i) = at {
            at = store.newer(i);
            let expires = store.entry(i).expires;
            if expires != 0 && expires <= now {
                store.remove(i);
                freed += 1;
                if freed == max {
                    break;
                }
            }
        }
        freed
    }

    /// `get_keys(max)`: `f` sees the keys not expired, least recently used
    /// first, at most `max` (0: all); returns how many.
    pub fn keys(&self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let store = self.lock();
        let mut now = Now::default();
        let mut n = 0;
        let mut at = store.tail();
        while let Some(i) = at {
            let entry = store.entry(i);
            if entry.expires == 0 || entry.expires > now.get() {
                f(&entry.key);
                n += 1;
                if n == max {
                    break;
                }
            }
            at = store.newer(i);
        }
        n
    }

    /// `lpush` (`front`) or `rpush`: the list's new length. A full dict
    /// answers "no memory" without evicting anything (as nginx's lists do).
    pub fn push(&self, key: &[u8], item: Value<'_>, front: bool) -> Result<usize, Error> {
        let item = match item {
            Value::Str(s) => Item::Str(s.into()),
            Value::Num(n) => Item::Num(n),
            Value::Bool(_) => unreachable!("lists hold strings and numbers"),
        };
        let mut store = self.lock();
        let mut now = Now::default();
        expire(&mut store, &mut now, false);
        let at = match lookup(&mut store, key, &mut now) {
            Some(Lookup::Valid(at)) if is_list(&store.entry(at).value) => at,
            Some(Lookup::Valid(_)) => return Err(Error::NotAList),
            Some(Lookup::Expired(at)) if is_list(&store.entry(at).value) => {
                store.set_value(at, Stored::List(VecDeque::new()));
                store.entry_mut(at).expires = 0;
                at
            }
            found => {
                if let Some(Lookup::Expired(at)) = found {
                    store.remove(at);
                }
                let empty = Stored::List(VecDeque::new());
                if !store.fits(entry_size(key.len(), &empty)) {
                    return Err(Error::NoMemory);
                }
                store.insert(Entry { key: key.into(), value: empty, flags: 0, expires: 0 })
            }
        };
        if !store.fits(ITEM_OVERHEAD + value_len(&item)) {
            if let Stored::List(items) = &store.entry(at).value {
                if items.is_empty() {
                    store.remove(at);
                }
            }
            return Err(Error::NoMemory);
        }
        Ok(store.push(at, item, front))
    }

    /// `lpop` (`front`) or `rpop`: None if absent (or expired). A list that
    /// becomes empty is removed.
    pub fn pop(&self, key: &[u8], front: bool) -> Result<Option<Item>, Error> {
        let mut store = self.lock();
        let mut now = Now::default();
        expire(&mut store, &mut now, false);
        let Some(Lookup::Valid(at)) = lookup(&mut store, key, &mut now) else { return Ok(None) };
        let Stored::List(items) = &store.entry(at).value else { return Err(Error::NotAList) };
        let last = items.len() == 1;
        let item = store.pop(at, front);
        if last {
            store.remove(at);
        }
        Ok(item)
    }

    /// `llen`: 0 if absent (or expired).
    pub fn llen(&self, key: &[u8]) -> Result<usize, Error> {
        let mut store = self.lock();
        let mut now = Now::default();
        expire(&mut store, &mut now, false);
        match lookup(&mut store, key, &mut now) {
            Some(Lookup::Valid(at)) => match &store.entry(at).value {
                Stored::List(items) => Ok(items.len()),
                _ => Err(Error::NotAList),
            },
            _ => Ok(0),
        }
    }

    /// How many entries the dict holds, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn value_len(item: &Item) -> usize {
    match item {
        Item::Str(s) => s.len(),
        Item::Num(_) => 8,
    }
}

// ---------------------------------------------------------------- registry --

/// The process's dicts by name.
static DICTS: RwLock<BTreeMap<Box<[u8]>, Arc<SharedDict>>> = RwLock::new(BTreeMap::new());

/// Why a dict cannot be declared.
#[derive(Debug, PartialEq, Eq)]
pub enum DeclareError {
    EmptyName,
    TooSmall(usize),
}

impl std::fmt::Display for DeclareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclareError::EmptyName => write!(f, "a shared dict needs a name"),
            DeclareError::TooSmall(size) => write!(f, "invalid shared dict size {size} (at least {MIN_SIZE} bytes)"),
        }
    }
}

/// The process's dict `name` of `size` bytes: the one already declared
/// with that name and size (its contents kept), or a new, empty one that
/// from now on is the dict of that name (one declared earlier with another
/// size lives on only for those that hold it).
pub fn declare(name: &str, size: usize) -> Result<Arc<SharedDict>, DeclareError> {
    if name.is_empty() {
        return Err(DeclareError::EmptyName);
    }
    if size < MIN_SIZE {
        return Err(DeclareError::TooSmall(size));
    }
    let mut dicts = DICTS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(dict) = dicts.get(name.as_bytes()) {
        if dict.capacity() == size {
            return Ok(Arc::clone(dict));
        }
    }
    let dict = Arc::new(SharedDict::new(name, size));
    dicts.insert(name.as_bytes().into(), Arc::clone(&dict));
    Ok(dict)
}

/// The dict named `name`, if one was declared.
pub fn find(name: &str) -> Option<Arc<SharedDict>> {
    DICTS.read().unwrap_or_else(|e| e.into_inner()).get(name.as_bytes()).cloned()
}

/// Runs `f` on the dict named `name`; None if there is none.
pub fn with_dict<T>(name: &[u8], f: impl FnOnce(&SharedDict) -> T) -> Option<T> {
    let dicts = DICTS.read().unwrap_or_else(|e| e.into_inner());
    dicts.get(name).map(|dict| f(dict))
}

#[cfg(test)]
mod tests;
