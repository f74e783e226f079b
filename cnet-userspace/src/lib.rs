//! cnet's control plane as a library: the CLI, the tests and the benchmark all
//! call these functions.

pub mod ebpf;
