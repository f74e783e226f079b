//! The host's kernel objects, without running any program: links, addresses
//! and routes through rtnetlink ([`netlink`]), named network namespaces
//! through unshare/setns and bind mounts ([`netns`]), mounts ([`mount`]).
pub mod mount;
pub mod netlink;
pub mod netns;

/// A failure on a host object, naming it. Netlink's "exists" and "not
/// found" answers have their own kinds, so callers can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what} {name} already exists")]
    Exists { what: &'static str, name: String },
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl HostError {
    /// Classifies a netlink answer: EEXIST and ENODEV/ENOENT/ESRCH get kinds
    /// of their own, anything else keeps the kernel's error.
    pub fn from_netlink(op: &'static str, object: String, e: rtnetlink::Error) -> Self {
        let io = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io(),
            other => std::io::Error::other(other.to_string()),
        };
        match io.raw_os_error() {
            Some(libc::EEXIST) => HostError::Exists {
                what: "object",
                name: object,
            },
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH) if op == "deleting" => {
                HostError::NotFound {
                    what: "object",
                    name: object,
                }
            }
            _ => HostError::Netlink {
                op,
                object,
                source: io,
            },
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HostError::Io {
            what: what.into(),
            source,
        }
    }
}
