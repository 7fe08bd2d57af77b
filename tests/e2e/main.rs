//! End-to-end tests of berth against real peers. One integration binary, one
//! module per area; helpers live in the `berth_tests` library (`tests/lib.rs`).

mod access;
mod archive;
mod authz;
mod catalog;
mod client;
mod compress;
mod digests;
mod fuzz;
mod gluster;
mod hostile;
mod house;
mod isolation_ops;
mod isolation_ssh;
mod isolation_v1;
mod isolation_v2;
mod layer_facts;
mod mirror;
mod oci;
mod ops;
mod package;
mod plugin;
mod resume;
mod roles;
mod sharedfs;
mod ssh;
mod storage;
mod v1;
mod v2;
mod verify_push;
