//! Master server (under construction).
