//! Security mechanisms every Mooncake listener and client shares; this crate
//! is their one owner and sits at the bottom of the dependency graph (it
//! depends on no other workspace crate).
//!
//! | module | owns |
//! |---|---|
//! | [`credential`] | the cluster secret (and an optional admin secret): generation, the 0600 file, `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`, the explicit insecure mode |
//! | [`handshake`] | the mutual challenge–response (HMAC-SHA256) run once at the start of every TCP connection, before the protocol's own frames |
//! | [`http`] | signing and verifying HTTP requests (metadata server, admin endpoints) with a replay window |
//! | [`limits`] | connection caps (per listener and per peer), a budget of in-flight bytes, idle timeouts on a stream |
//!
//! Invariants:
//! - The secret never crosses the wire: peers prove knowledge of it with an
//!   HMAC over fresh nonces from both sides, so a recorded exchange cannot be
//!   replayed, and the server proves itself to the client in turn (a fake
//!   segment or master that does not hold the secret is refused by clients).
//! - Every handshake message has a fixed size: nothing a peer sends makes a
//!   server allocate or wait beyond the handshake's timeout.
//! - `Debug` of a credential never prints the secret.
//! - Running without a credential is an explicit [`AuthMode::Insecure`]; an
//!   authenticated client refuses an insecure server unless told to accept it.
//!
//! ```
//! use mooncake_security::{AuthMode, Credential, handshake};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cred = Credential::generate();
//! let (mut a, mut b) = tokio::io::duplex(1024);
//! let server_mode = AuthMode::Required(cred.clone());
//! let server = tokio::spawn(async move {
//!     handshake::accept(&mut b, &server_mode, "demo", handshake::DEFAULT_TIMEOUT).await
//! });
//! let role = handshake::connect(&mut a, &AuthMode::Required(cred), "demo",
//!                               handshake::DEFAULT_TIMEOUT).await.unwrap();
//! assert_eq!(role, server.await.unwrap().unwrap());
//! # }
//! ```

pub mod credential;
mod error;
pub mod handshake;
pub mod http;
pub mod limits;
mod mac;

pub use credential::{AuthMode, Credential, Role};
pub use error::SecurityError;
pub use handshake::AuthStats;
