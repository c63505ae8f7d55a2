//! The messages of `grpc/tests/protos/*.proto`, written out for prost (no
//! code generation step).

use prost::{Enumeration, Message, Oneof};

#[derive(Clone, PartialEq, Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Point {
    #[prost(int32, tag = "1")]
    pub latitude: i32,
    #[prost(int32, tag = "2")]
    pub longitude: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Rectangle {
    #[prost(message, optional, tag = "1")]
    pub lo: Option<Point>,
    #[prost(message, optional, tag = "2")]
    pub hi: Option<Point>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub location: Option<Point>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RouteNote {
    #[prost(message, optional, tag = "1")]
    pub location: Option<Point>,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RouteSummary {
    #[prost(int32, tag = "1")]
    pub point_count: i32,
    #[prost(int32, tag = "2")]
    pub feature_count: i32,
    #[prost(int32, tag = "3")]
    pub distance: i32,
    #[prost(int32, tag = "4")]
    pub elapsed_time: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Color {
    Red = 0,
    Green = 1,
    Blue = 2,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct XyPoint {
    #[prost(int32, tag = "1")]
    pub x: i32,
    #[prost(int32, tag = "2")]
    pub y: i32,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum Choice {
    #[prost(string, tag = "14")]
    Text(String),
    #[prost(int32, tag = "15")]
    Number(i32),
}

#[derive(Clone, PartialEq, Message)]
pub struct Everything {
    #[prost(string, tag = "1")]
    pub s: String,
    #[prost(bytes = "vec", tag = "2")]
    pub b: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub i64: i64,
    #[prost(uint64, tag = "4")]
    pub u64: u64,
    #[prost(sint32, tag = "5")]
    pub s32: i32,
    #[prost(double, tag = "6")]
    pub d: f64,
    #[prost(bool, tag = "7")]
    pub flag: bool,
    #[prost(enumeration = "Color", tag = "8")]
    pub color: i32,
    #[prost(message, optional, tag = "9")]
    pub point: Option<XyPoint>,
    #[prost(message, repeated, tag = "10")]
    pub points: Vec<XyPoint>,
    #[prost(int32, repeated, tag = "11")]
    pub nums: Vec<i32>,
    #[prost(btree_map = "string, int32", tag = "12")]
    pub counts: std::collections::BTreeMap<String, i32>,
    #[prost(btree_map = "int32, string", tag = "13")]
    pub names: std::collections::BTreeMap<i32, String>,
    #[prost(oneof = "Choice", tags = "14, 15")]
    pub choice: Option<Choice>,
    #[prost(float, tag = "16")]
    pub f: f32,
    #[prost(fixed64, tag = "17")]
    pub fx: u64,
    #[prost(int32, optional, tag = "18")]
    pub maybe: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Reply {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Control {
    #[prost(int32, tag = "1")]
    pub delay_ms: i32,
    #[prost(int32, tag = "2")]
    pub fail_code: i32,
    #[prost(string, tag = "3")]
    pub fail_message: String,
    #[prost(int32, tag = "4")]
    pub count: i32,
    #[prost(int32, tag = "5")]
    pub interval_ms: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, Message)]
pub struct Stats {
    #[prost(int64, tag = "1")]
    pub started: i64,
    #[prost(int64, tag = "2")]
    pub cancelled: i64,
    #[prost(int64, tag = "3")]
    pub finished: i64,
    #[prost(int64, tag = "4")]
    pub unary: i64,
}

/// google.rpc.Status, what rich errors carry in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
