//! Master configuration (under construction).
/// Placeholder.
#[derive(Debug, Clone, Default)]
pub struct MasterConfig {}
