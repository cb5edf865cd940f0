//! The metadata master (under construction).
