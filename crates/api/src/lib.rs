//! The contracts of Mercato as Rust: messages and tonic clients and servers generated at build time from
//! `proto/`, plus the encoded file descriptor set that server reflection and the gateway read.

/// The encoded `google.protobuf.FileDescriptorSet` of every proto in `proto/`, imports included, with
/// custom options and source comments kept.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

// The module tree of every package in proto/ (`google::api`, `mercato::catalog::v1`, ...), generated.
include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

pub use mercato::{auth::v1 as auth, catalog::v1 as catalog, common::v1 as common};
