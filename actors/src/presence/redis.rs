//! Redis presence (being written).
