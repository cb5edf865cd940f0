//! Transfer Engine (under construction)
