//! Vessel container engine.
