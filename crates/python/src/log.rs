//! Failure reports of the return-code API go to Python's `logging`
//! (logger "mooncake"), since the reference's API answers only a number.

use pyo3::prelude::*;

/// Log `msg` at WARNING level on the "mooncake" logger; never fails.
pub fn error(py: Python<'_>, msg: &str) {
    let logged = py
        .import("logging")
        .and_then(|m| m.call_method1("getLogger", ("mooncake",)))
        .and_then(|l| l.call_method1("warning", (msg,)));
    if logged.is_err() {
        eprintln!("mooncake: {msg}");
    }
}

/// Rust-side tracing to stderr when `MOONCAKE_LOG` (an env-filter such as
/// "info" or "mooncake_store=debug") is set.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("MOONCAKE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}
