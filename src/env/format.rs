//! Formats for exported environments (placeholder).
