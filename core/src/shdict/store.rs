//! The entries of one shared dict: a hash index, a least-recently-used order
//! and a byte budget. No locking and no expiry rules here: `SharedDict`
//! (mod.rs) holds it under its mutex and decides what to keep.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::collections::VecDeque;

/// Bytes each entry costs beside its key and value (what the index and the
/// list links take; about what nginx's slab spends on an rbtree node).
pub const ENTRY_OVERHEAD: usize = 128;
/// Bytes each item of a list costs beside its value.
pub const ITEM_OVERHEAD: usize = 32;

const NIL: u32 = u32::MAX;

/// A value as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    Str(Box<[u8]>),
    Num(f64),
    Bool(bool),
    List(VecDeque<Item>),
}

/// An item of a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Str(Box<[u8]>),
    Num(f64),
}

impl Item {
    fn size(&self) -> usize {
        ITEM_OVERHEAD
            + match self {
                Item::Str(s) => s.len(),
                Item::Num(_) => 8,
            }
    }
}

impl Stored {
    /// What lua-nginx-module calls the value's length: the bytes of a
    /// string, 8 for a number, 1 for a boolean, the items of a list.
    pub fn nginx_len(&self) -> usize {
        match self {
            Stored::Str(s) => s.len(),
            Stored::Num(_) => 8,
            Stored::Bool(_) => 1,
            Stored::List(items) => items.len(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Stored::Str(s) => s.len(),
            Stored::Num(_) => 8,
            Stored::Bool(_) => 1,
            Stored::List(items) => items.iter().map(Item::size).sum(),
        }
    }
}

#[derive(Debug)]
pub struct Entry {
    pub key: Box<[u8]>,
    pub value: Stored,
    pub flags: u32,
    /// Milliseconds on the dict's clock; 0 = never.
    pub expires: u64,
}

/// What an entry of `key_len` bytes of key holding `value` costs.
pub fn entry_size(key_len: usize, value: &Stored) -> usize {
    ENTRY_OVERHEAD + key_len + value.size()
}

struct Node {
    entry: Entry,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// Entries in least-recently-used order; `used` counts what they cost.
pub struct Store {
    index: HashMap<Box<[u8]>, u32>,
    nodes: Vec<Option<Node>>,
    vacant: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    used: usize,
    capacity: usize,
}

impl Store {
    pub fn new(capacity: usize) -> Store {
        Store { index: HashMap::new(), nodes: Vec::new(), vacant: Vec::new(), head: NIL, tail: NIL, used: 0, capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn free_space(&self) -> usize {
        self.capacity.saturating_sub(self.used)
    }

    /// Whether `bytes` more fit in the budget.
    pub fn fits(&self, bytes: usize) -> bool {
        self.used.checked_add(bytes).is_some_and(|total| total <= self.capacity)
    }

    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.index.get(key).copied()
    }

    fn node(&self, at: u32) -> &Node {
        self.nodes[at as usize].as_ref().expect("a live node")
    }

    fn node_mut(&mut self, at: u32) -> &mut Node {
        self.nodes[at as usize].as_mut().expect("a live node")
    }

    pub fn entry(&self, at: u32) -> &Entry {
        &self.node(at).entry
    }

    /// The entry, to change its flags or expiry. Its value changes through
    /// the methods below, which keep `used` right.
    pub fn entry_mut(&mut self, at: u32) -> &mut Entry {
        &mut self.node_mut(at).entry
    }

    /// The least recently used entry.
    pub fn tail(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The entry used just after `at` (towards the most recent).
    pub fn newer(&self, at: u32) -> Option<u32> {
        let prev = self.node(at).prev;
        (prev != NIL).then_some(prev)
    }

    fn unlink(&mut self, at: u32) {
        let (prev, next) = {
            let node = self.node(at);
            (node.prev, node.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.node_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.node_mut(n).prev = prev,
        }
    }

    fn link_head(&mut self, at: u32) {
        let old = self.head;
        {
            let node = self.node_mut(at);
            node.prev = NIL;
            node.next = old;
        }
        match old {
            NIL => self.tail = at,
            o => self.node_mut(o).prev = at,
        }
        self.head = at;
    }

    /// Makes `at` the most recently used entry.
    pub fn touch(&mut self, at: u32) {
        if self.head != at {
            self.unlink(at);
            self.link_head(at);
        }
    }

    /// Adds an entry as the most recently used (its key must be absent).
    pub fn insert(&mut self, entry: Entry) -> u32 {
        self.used += entry_size(entry.key.len(), &entry.value);
        let key = entry.key.clone();
        let node = Node { entry, prev: NIL, next: NIL };
        let at = match self.vacant.pop() {
            Some(at) => {
                self.nodes[at as usize] = Some(node);
                at
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
        };
        match self.index.entry(key) {
            MapEntry::Vacant(slot) => {
                slot.insert(at);
            }
            MapEntry::Occupied(_) => unreachable!("insert of a key that is present"),
        }
        self.link_head(at);
        at
    }

    pub fn remove(&mut self, at: u32) -> Entry {
        self.unlink(at);
        let node = self.nodes[at as usize].take().expect("a live node");
        self.vacant.push(at);
        self.index.remove(&node.entry.key);
        self.used -= entry_size(node.entry.key.len(), &node.entry.value);
        node.entry
    }

    /// Replaces the value of `at`.
    pub fn set_value(&mut self, at: u32, value: Stored) {
        let entry = &mut self.node_mut(at).entry;
        let old = std::mem::replace(&mut entry.value, value);
        let new_size = entry.value.size();
        self.used = self.used - old.size() + new_size;
    }

    /// Adds `item` to the list of `at` (at its front or back); returns the
    /// list's new length. `at` holds a list.
    pub fn push(&mut self, at: u32, item: Item, front: bool) -> usize {
        let size = item.size();
        let Stored::List(items) = &mut self.node_mut(at).entry.value else { unreachable!("push onto a list") };
        if front {
            items.push_front(item);
        } else {
            items.push_back(item);
        }
        let len = items.len();
        self.used += size;
        len
    }

    /// Takes an item from the front or back of the list of `at`.
    pub fn pop(&mut self, at: u32, front: bool) -> Option<Item> {
        let Stored::List(items) = &mut self.node_mut(at).entry.value else { return None };
        let item = if front { items.pop_front() } else { items.pop_back() }?;
        self.used -= item.size();
        Some(item)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry { key: key.as_bytes().into(), value: Stored::Str(value.as_bytes().into()), flags: 0, expires: 0 }
    }

    fn order(store: &Store) -> Vec<String> {
        let mut keys = Vec::new();
        let mut at = store.tail();
        while let Some(i) = at {
            keys.push(String::from_utf8(store.entry(i).key.to_vec()).unwrap());
            at = store.newer(i);
        }
        keys
    }

    #[test]
    fn keeps_lru_order_and_accounts_bytes() {
        let mut store = Store::new(1 << 20);
        let a = store.insert(entry("a", "1"));
        store.insert(entry("b", "22"));
        store.insert(entry("c", "333"));
        assert_eq!(order(&store), ["a", "b", "c"]);
        store.touch(a);
        assert_eq!(order(&store), ["b", "c", "a"]);
        assert_eq!(store.free_space(), (1 << 20) - 3 * ENTRY_OVERHEAD - 3 - 6);
        let b = store.find(b"b").unwrap();
        store.set_value(b, Stored::Num(1.0));
        assert_eq!(store.free_space(), (1 << 20) - 3 * ENTRY_OVERHEAD - 3 - 4 - 8);
        assert_eq!(store.remove(b).key.as_ref(), b"b");
        assert_eq!(order(&store), ["c", "a"]);
        let d = store.insert(entry("d", ""));
        assert_eq!(d, b, "a vacant node is reused");
        assert_eq!(order(&store), ["c", "a", "d"]);
        for key in ["a", "c", "d"] {
            let at = store.find(key.as_bytes()).unwrap();
            store.remove(at);
        }
        assert_eq!(store.free_space(), 1 << 20);
        assert_eq!(store.tail(), None);
    }

    #[test]
    fn lists_account_their_items() {
        let mut store = Store::new(1 << 20);
        let at = store.insert(Entry { key: b"l".as_slice().into(), value: Stored::List(VecDeque::new()), flags: 0, expires: 0 });
        assert_eq!(store.push(at, Item::Str(b"xy".as_slice().into()), false), 1);
        assert_eq!(store.push(at, Item::Num(2.0), true), 2);
        assert_eq!(store.free_space(), (1 << 20) - ENTRY_OVERHEAD - 1 - 2 * ITEM_OVERHEAD - 2 - 8);
        assert_eq!(store.pop(at, true), Some(Item::Num(2.0)));
        assert_eq!(store.pop(at, false), Some(Item::Str(b"xy".as_slice().into())));
        assert_eq!(store.pop(at, false), None);
        assert_eq!(store.free_space(), (1 << 20) - ENTRY_OVERHEAD - 1);
    }
}
