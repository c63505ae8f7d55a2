//! What `ngx.shared.DICT` does on nginx, operation by operation (the cases
//! of lua-nginx-module's own t/043-shdict.t that do not depend on its slab
//! allocator).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

fn get(dict: &SharedDict, key: &str) -> Result<Option<(String, u32, bool)>, Error> {
    get_as(dict, key, false)
}

fn get_as(dict: &SharedDict, key: &str, stale: bool) -> Result<Option<(String, u32, bool)>, Error> {
    dict.get(key.as_bytes(), stale, |found| {
        found.map(|(value, flags, stale)| {
            let shown = match value {
                Value::Str(s) => String::from_utf8(s.to_vec()).unwrap(),
                Value::Num(n) => format!("{n}"),
                Value::Bool(b) => format!("{b}"),
            };
            (shown, flags, stale)
        })
    })
}

fn set(dict: &SharedDict, key: &str, value: &str) -> Result<bool, (Error, bool)> {
    dict.store(StoreOp::Set, false, key.as_bytes(), Some(Value::Str(value.as_bytes())), 0, 0)
}

fn found(value: &str) -> Result<Option<(String, u32, bool)>, Error> {
    Ok(Some((value.to_owned(), 0, false)))
}

#[test]
fn set_add_replace_delete() {
    let dict = SharedDict::new("d", 1 << 20);
    assert_eq!(get(&dict, "k"), Ok(None));
    assert_eq!(set(&dict, "k", "v"), Ok(false));
    assert_eq!(get(&dict, "k"), found("v"));
    let add = |value| dict.store(StoreOp::Add, false, b"k", Some(Value::Str(value)), 0, 0);
    assert_eq!(add(b"w"), Err((Error::Exists, false)));
    let replace = |key: &[u8]| dict.store(StoreOp::Replace, false, key, Some(Value::Num(3.5)), 0, 7);
    assert_eq!(replace(b"other"), Err((Error::NotFound, false)));
    assert_eq!(replace(b"k"), Ok(false));
    assert_eq!(get(&dict, "k"), Ok(Some(("3.5".to_owned(), 7, false))));
    assert_eq!(dict.store(StoreOp::Add, false, b"k", None, 0, 0), Err((Error::NilValue, false)));
    assert_eq!(dict.store(StoreOp::Set, false, b"k", None, 0, 0), Ok(false));
    assert_eq!(get(&dict, "k"), Ok(None));
    assert_eq!(dict.store(StoreOp::Set, false, b"gone", None, 0, 0), Ok(false), "deleting nothing is fine");
    assert_eq!(add(b"w"), Ok(false));
    assert_eq!(dict.store(StoreOp::Set, false, b"b", Some(Value::Bool(true)), 0, 0), Ok(false));
    assert_eq!(get(&dict, "b"), found("true"));
    assert_eq!(set(&dict, "e", ""), Ok(false));
    assert_eq!(get(&dict, "e"), found(""), "the empty string is a value, not a delete");
    assert!(dict.is_empty() == false && dict.len() == 3);
}

#[test]
fn full_dict_evicts_least_recently_used_and_says_forcible() {
    let dict = SharedDict::new("d", MIN_SIZE);
    let value = "x".repeat(1000);
    let per_entry = ENTRY_OVERHEAD + 2 + 1000;
    let fit = MIN_SIZE / per_entry;
    for i in 0..fit {
        assert_eq!(set(&dict, &format!("k{i}"), &value), Ok(false), "k{i} fits");
    }
    // k0 is read, so k1 is now the least recently used.
    assert_eq!(get(&dict, "k0"), found(&value));
    let safe = dict.store(StoreOp::Set, true, b"new", Some(Value::Str(value.as_bytes())), 0, 0);
    assert_eq!(safe, Err((Error::NoMemory, false)), "safe_set does not evict");
    assert_eq!(set(&dict, "new", &value), Ok(true));
    assert_eq!(get(&dict, "k1"), Ok(None));
    assert_eq!(get(&dict, "k0"), found(&value));
    assert_eq!(get(&dict, "new"), found(&value));
    // More than the whole dict: everything is evicted, and still no room.
    let huge = "y".repeat(MIN_SIZE);
    assert_eq!(set(&dict, "huge", &huge), Err((Error::NoMemory, true)));
    assert!(dict.is_empty());
    assert_eq!(dict.free_space(), MIN_SIZE);
    assert_eq!(dict.capacity(), MIN_SIZE);
}

#[test]
fn same_size_replacement_needs_no_room() {
    let dict = SharedDict::new("d", MIN_SIZE);
    let value = "x".repeat(MIN_SIZE - ENTRY_OVERHEAD - 1);
    assert_eq!(set(&dict, "k", &value), Ok(false));
    assert_eq!(dict.free_space(), 0);
    let other = "z".repeat(value.len());
    assert_eq!(dict.store(StoreOp::Set, true, b"k", Some(Value::Str(other.as_bytes())), 0, 0), Ok(false));
    assert_eq!(get(&dict, "k"), found(&other));
}

#[test]
fn ttl_expiry_and_stale_reads() {
    let dict = SharedDict::new("d", 1 << 20);
    assert_eq!(dict.store(StoreOp::Set, false, b"k", Some(Value::Str(b"v")), 30, 3), Ok(false));
    assert_eq!(set(&dict, "forever", "v"), Ok(false));
    let ttl = dict.ttl(b"k").unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
    assert_eq!(dict.ttl(b"forever"), Some(0));
    assert_eq!(dict.ttl(b"absent"), None);
    thread::sleep(Duration::from_millis(60));
    assert!(dict.ttl(b"k").unwrap() < 0, "an expired entry still there has a negative ttl");
    assert_eq!(get_as(&dict, "k", true), Ok(Some(("v".to_owned(), 3, true))));
    assert_eq!(get(&dict, "k"), Ok(None));
    // expire() revives an expired entry still there, or sets no TTL (0).
    assert!(dict.expire(b"k", 0));
    assert_eq!(get(&dict, "k"), Ok(Some(("v".to_owned(), 3, false))));
    assert!(!dict.expire(b"absent", 10));
    // add() over an expired entry works; replace() does not see it.
    assert!(dict.expire(b"k", 1));
    thread::sleep(Duration::from_millis(10));
    assert_eq!(dict.store(StoreOp::Replace, false, b"k", Some(Value::Str(b"r")), 0, 0), Err((Error::NotFound, false)));
    assert_eq!(dict.store(StoreOp::Add, false, b"k", Some(Value::Str(b"a")), 0, 0), Ok(false));
    assert_eq!(get(&dict, "k"), found("a"));
}

#[test]
fn flush_all_flush_expired_and_keys() {
    let dict = SharedDict::new("d", 1 << 20);
    let all = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for key in all {
        set(&dict, key, key).unwrap();
    }
    let keys = |max| {
        let mut keys = Vec::new();
        let n = dict.keys(max, |k| keys.push(String::from_utf8(k.to_vec()).unwrap()));
        assert_eq!(n, keys.len());
        keys
    };
    assert_eq!(keys(0), all);
    get(&dict, "a").unwrap();
    assert_eq!(keys(2), ["b", "c"]);
    dict.flush_all();
    assert_eq!(keys(0), Vec::<String>::new());
    assert_eq!(get_as(&dict, "j", true), Ok(Some(("j".to_owned(), 0, true))));
    assert_eq!(get(&dict, "i"), Ok(None));
    assert!(!dict.is_empty(), "flushed entries are removed lazily");
    let left = dict.len();
    assert_eq!(dict.flush_expired(1), 1);
    assert_eq!(dict.flush_expired(0), left - 1);
    assert!(dict.is_empty());
    assert_eq!(dict.flush_expired(0), 0);
}

#[test]
fn incr_like_nginx() {
    let dict = SharedDict::new("d", 1 << 20);
    assert_eq!(dict.incr(b"n", 1.0, None, 0), Err(Error::NotFound));
    assert_eq!(dict.incr(b"n", 2.0, Some(10.0), 0), Ok((12.0, false)));
    assert_eq!(dict.incr(b"n", -0.5, None, 0), Ok((11.5, false)));
    set(&dict, "s", "text").unwrap();
    assert_eq!(dict.incr(b"s", 1.0, Some(0.0), 0), Err(Error::NotANumber));
    // init_ttl applies to a new entry only.
    assert_eq!(dict.incr(b"t", 1.0, Some(0.0), 20), Ok((1.0, false)));
    assert_eq!(dict.incr(b"t", 1.0, Some(0.0), 0), Ok((2.0, false)));
    assert!(dict.ttl(b"t").unwrap() > 0);
    thread::sleep(Duration::from_millis(40));
    assert_eq!(dict.incr(b"t", 1.0, None, 0), Err(Error::NotFound));
    assert_eq!(dict.incr(b"t", 1.0, Some(5.0), 0), Ok((6.0, false)));
    assert_eq!(dict.ttl(b"t"), Some(0));
}

#[test]
fn incr_in_a_full_dict_evicts() {
    let dict = SharedDict::new("d", MIN_SIZE);
    let value = "x".repeat(MIN_SIZE - ENTRY_OVERHEAD - 3);
    set(&dict, "big", &value).unwrap();
    assert_eq!(dict.incr(b"n", 1.0, Some(0.0), 0), Ok((1.0, true)));
    assert_eq!(get(&dict, "big"), Ok(None));
}

#[test]
fn lists_like_nginx() {
    let dict = SharedDict::new("d", 1 << 20);
    assert_eq!(dict.push(b"l", Value::Str(b"a"), false), Ok(1));
    assert_eq!(dict.push(b"l", Value::Num(2.0), false), Ok(2));
    assert_eq!(dict.push(b"l", Value::Str(b"z"), true), Ok(3));
    assert_eq!(dict.llen(b"l"), Ok(3));
    assert_eq!(get(&dict, "l"), Err(Error::IsList));
    assert_eq!(dict.incr(b"l", 1.0, None, 0), Err(Error::NotANumber));
    set(&dict, "s", "v").unwrap();
    assert_eq!(dict.push(b"s", Value::Str(b"a"), true), Err(Error::NotAList));
    assert_eq!(dict.pop(b"s", true), Err(Error::NotAList));
    assert_eq!(dict.llen(b"s"), Err(Error::NotAList));
    assert_eq!(dict.pop(b"l", true), Ok(Some(Item::Str(b"z".as_slice().into()))));
    assert_eq!(dict.pop(b"l", false), Ok(Some(Item::Num(2.0))));
    assert_eq!(dict.pop(b"l", false), Ok(Some(Item::Str(b"a".as_slice().into()))));
    assert_eq!(dict.pop(b"l", false), Ok(None));
    assert_eq!(dict.llen(b"l"), Ok(0));
    assert_eq!(dict.ttl(b"l"), None, "an emptied list is removed");
    // set() over a list replaces it.
    dict.push(b"l", Value::Str(b"a"), true).unwrap();
    assert_eq!(set(&dict, "l", "v"), Ok(false));
    assert_eq!(get(&dict, "l"), found("v"));
    // An expired list starts over.
    dict.push(b"x", Value::Str(b"old"), true).unwrap();
    assert!(dict.expire(b"x", 1));
    thread::sleep(Duration::from_millis(10));
    assert_eq!(dict.llen(b"x"), Ok(0));
    assert_eq!(dict.push(b"x", Value::Str(b"new"), true), Ok(1));
    assert_eq!(dict.ttl(b"x"), Some(0));
}

#[test]
fn a_full_dict_refuses_list_items_without_evicting() {
    let dict = SharedDict::new("d", MIN_SIZE);
    // Room for an empty list "l" and 5 bytes more.
    let value = "x".repeat(MIN_SIZE - 2 * ENTRY_OVERHEAD - 9);
    set(&dict, "big", &value).unwrap();
    assert_eq!(dict.push(b"l", Value::Str(b"0123456789"), true), Err(Error::NoMemory));
    assert_eq!(dict.ttl(b"l"), None, "the empty list made for it is gone again");
    assert_eq!(get(&dict, "big"), found(&value));
}

#[test]
fn registry_keeps_a_dict_while_name_and_size_stay() {
    assert_eq!(declare("", MIN_SIZE).unwrap_err(), DeclareError::EmptyName);
    assert_eq!(declare("tiny", MIN_SIZE - 1).unwrap_err(), DeclareError::TooSmall(MIN_SIZE - 1));
    let first = declare("registry_test", 1 << 20).unwrap();
    set(&first, "k", "v").unwrap();
    let again = declare("registry_test", 1 << 20).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(with_dict(b"registry_test", |d| get(d, "k")), Some(found("v")));
    let resized = declare("registry_test", 2 << 20).unwrap();
    assert!(!Arc::ptr_eq(&first, &resized));
    assert_eq!(with_dict(b"registry_test", |d| get(d, "k")), Some(Ok(None)));
    assert_eq!(get(&first, "k"), found("v"), "the old dict lives on for its holders");
    assert_eq!(with_dict(b"no_such_dict", |_| ()), None);
}

#[test]
fn incr_is_exact_under_contention() {
    let dict = Arc::new(SharedDict::new("d", 1 << 20));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let dict = Arc::clone(&dict);
            thread::spawn(move || {
                for _ in 0..25_000 {
                    dict.incr(b"n", 1.0, Some(0.0), 0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(dict.incr(b"n", 0.0, None, 0), Ok((100_000.0, false)));
}
