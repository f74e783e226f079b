//! The kernel/user ABI of cnet.
//!
//! Every map key and value is `#[repr(C)]`, has explicit padding and derives
//! `bytemuck::Pod` (which rejects implicit padding at compile time). With the
//! `user` feature the types also implement `aya::Pod` so userspace can put them
//! in maps. Pure packet math (checksums) lives here too so it can be tested on
//! the host.
#![no_std]

pub mod csum;
pub mod drop;
pub mod maps;

pub use drop::{Counter, DropReason};

/// Declares ABI structs: `repr(C)`, `Pod`, `Zeroable`, and `aya::Pod` for userspace,
/// with a compile-time size check.
macro_rules! abi {
    ($(#[$m:meta])* $name:ident [$size:expr] { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        #[cfg(feature = "user")]
        // SAFETY: the type is repr(C), has no padding (bytemuck::Pod checks it) and
        // every bit pattern is valid.
        unsafe impl aya::Pod for $name {}
    };
}
pub(crate) use abi;

/// An IPv4 address as the maps hold it: the packet's bytes, read natively.
pub const fn addr_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of a map-held address.
pub const fn addr_octets(key: u32) -> [u8; 4] {
    key.to_ne_bytes()
}

/// A port as the maps hold it (network byte order).
pub const fn port_key(port: u16) -> u16 {
    port.to_be()
}

/// The host-order port of a map-held port.
pub const fn port_host(key: u16) -> u16 {
    u16::from_be(key)
}
