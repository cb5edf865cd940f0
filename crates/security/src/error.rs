//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong while loading a credential, authenticating a peer or
/// admitting a connection.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A token string that is too short or not valid text.
    #[error("invalid cluster token: {0}")]
    InvalidToken(String),
    /// The credential file could not be read or written.
    #[error("credential file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The credential file is readable by other users.
    #[error("credential file {0} must not be readable by group or others (chmod 600)")]
    FilePermissions(PathBuf),
    /// The peer did not prove knowledge of the cluster secret, or proved it
    /// for a role it may not take.
    #[error("authentication refused: {0}")]
    Refused(&'static str),
    /// The server does not authenticate and this side requires it.
    #[error("peer runs without authentication (--insecure); refusing to talk to it")]
    PeerInsecure,
    /// The server requires a credential and this side has none.
    #[error("peer requires the cluster credential (set MC_CLUSTER_TOKEN or MOONCAKE_CLUSTER_TOKEN_FILE)")]
    CredentialRequired,
    /// The peer sent something that is not this handshake.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The connection failed during the handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A listener or per-peer connection cap is reached.
    #[error("too many connections ({0})")]
    TooManyConnections(&'static str),
}
