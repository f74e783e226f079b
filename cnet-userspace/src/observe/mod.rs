//! What the datapath saw: counters per container and per published port
//! (`cnet stats --by`, `cnet port --stats`), live events (`cnet monitor`) and
//! Prometheus metrics (`cnet daemon --metrics`).
pub mod counters;
pub mod metrics;
pub mod monitor;

pub use counters::{ContainerStats, PortCounters, Usage};
