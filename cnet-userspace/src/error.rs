//! The kinds of failure a caller can act on, mapped to HTTP statuses in one
//! place ([`kind`]). Library code returns `anyhow` errors with context; the
//! ones about a missing object or a conflict carry an [`Error`] in their
//! chain, host and kernel failures are internal, and the rest is a bad
//! request (validation speaks for itself).
use crate::host::HostError;

/// A typed failure with Docker's wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request collides with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
}

/// What kind of failure `e` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    Conflict,
    Invalid,
    Internal,
}

impl Kind {
    pub fn status(self) -> u16 {
        match self {
            Kind::NotFound => 404,
            Kind::Conflict => 409,
            Kind::Invalid => 400,
            Kind::Internal => 500,
        }
    }
}

/// The kind of the first typed error in `e`'s chain; kernel, host and I/O
/// failures are internal; anything else is a bad request.
pub fn kind(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<Error>() {
            return match x {
                Error::NotFound(_) => Kind::NotFound,
                Error::Conflict(_) => Kind::Conflict,
                Error::Invalid(_) => Kind::Invalid,
            };
        }
        if let Some(h) = cause.downcast_ref::<HostError>() {
            return match h {
                HostError::NotFound { .. } => Kind::NotFound,
                HostError::Exists { .. } => Kind::Conflict,
                _ => Kind::Internal,
            };
        }
        if cause.downcast_ref::<std::io::Error>().is_some()
            || cause.downcast_ref::<aya::maps::MapError>().is_some()
            || cause
                .downcast_ref::<aya::programs::ProgramError>()
                .is_some()
            || cause.downcast_ref::<aya::EbpfError>().is_some()
        {
            return Kind::Internal;
        }
    }
    Kind::Invalid
}

/// `Err(NotFound)` as an `anyhow` error.
pub fn not_found(msg: impl Into<String>) -> anyhow::Error {
    Error::NotFound(msg.into()).into()
}

/// `Err(Conflict)` as an `anyhow` error.
pub fn conflict(msg: impl Into<String>) -> anyhow::Error {
    Error::Conflict(msg.into()).into()
}

/// A bad value in a request (400).
pub fn invalid(msg: impl Into<String>) -> anyhow::Error {
    Error::Invalid(msg.into()).into()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn kinds_are_found_anywhere_in_the_chain() {
        let e = Err::<(), _>(not_found("No such container: x"))
            .context("removing x")
            .unwrap_err();
        assert_eq!(kind(&e), Kind::NotFound);
        assert_eq!(format!("{e:#}"), "removing x: No such container: x");
        let io = anyhow::Error::new(std::io::Error::other("disk")).context("saving");
        assert_eq!(kind(&io), Kind::Internal);
        assert_eq!(kind(&anyhow::anyhow!("invalid --ip")), Kind::Invalid);
        assert_eq!(kind(&conflict("port is already allocated")).status(), 409);
    }
}
