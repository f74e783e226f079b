//! Test support for cnet: crafted frames and BPF_PROG_TEST_RUN (`frames`,
//! `prog`), and throwaway network-namespace topologies with real traffic
//! (`netns`, `traffic`). Tests panic on failure, as aya's integration tests do.
#![allow(
    clippy::unwrap_used,
    reason = "test support: failing loudly is the point"
)]

pub mod bench;
pub mod cnet;
pub mod consistency;
pub mod docker;
pub mod frames;
pub mod image;
pub mod netns;
pub mod prog;
pub mod traffic;
