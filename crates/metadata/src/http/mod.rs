//! The HTTP metadata protocol: our server ([`server`]) and the client backend
//! ([`client`]), wire-compatible with the reference's metadata server.
//!
//! Wire protocol (paths relative to the base URL, `/metadata` by default):
//!
//! | request                         | answer                                               |
//! |---------------------------------|------------------------------------------------------|
//! | `GET /metadata?key=K`           | 200 + raw value, or 404 `metadata not found`          |
//! | `PUT /metadata?key=K` body=V    | 200 `metadata updated`                                |
//! | `DELETE /metadata?key=K`        | 200 `metadata deleted`, or 404 `metadata not found`   |
//! | `GET /metadata?prefix=P`        | 200 + JSON [`Listing`] (our extension, for `list` and watch) |
//! | `GET /health`                   | 200 `OK`                                              |
//!
//! Keys are URL-encoded query parameters; values are opaque bytes. A request
//! with neither `key` nor `prefix` answers 400.
//!
//! Authentication: a server started with a credential requires every
//! `/metadata` request to carry a signature (header `x-mooncake-auth`, see
//! `mooncake_security::http`) and answers 401 with a JSON body otherwise;
//! our client signs whenever it has a credential (given, or from
//! `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`). Servers started
//! insecure accept unsigned requests, as the reference's does.

pub mod client;
pub mod serve;
pub mod server;

use serde::{Deserialize, Serialize};

/// The body of `GET /metadata?prefix=P`: every key under `P`, sorted, each
/// with the server revision at which it was last written. Revisions only grow,
/// so a watcher that polls the listing sees exactly which keys changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The server's revision when the listing was taken.
    pub revision: u64,
    pub keys: Vec<ListedKey>,
}

/// One key of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedKey {
    pub key: String,
    /// Revision of the last write to this key.
    pub revision: u64,
}

/// Body of a 404 for a missing key (the reference's text, byte for byte).
pub const NOT_FOUND_BODY: &str = "metadata not found";
