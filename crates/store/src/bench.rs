//! The append benchmark (filled in below).
