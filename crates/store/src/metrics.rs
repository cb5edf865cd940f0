//! Master metrics (under construction).
