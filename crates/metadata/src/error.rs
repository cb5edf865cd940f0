//! Errors of the metadata service.

/// What can go wrong talking to a metadata backend.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("invalid metadata connection string {0:?}: {1}")]
    InvalidConnectionString(String, String),
    #[error("metadata backend {backend} unreachable: {message}")]
    Unreachable {
        backend: &'static str,
        message: String,
    },
    #[error("metadata backend {backend} answered with an error: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    #[error("metadata value for {key:?} is malformed: {message}")]
    Malformed { key: String, message: String },
    #[error("operation not supported by the {0} metadata backend")]
    Unsupported(&'static str),
}
