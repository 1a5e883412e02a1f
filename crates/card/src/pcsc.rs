//! The PC/SC transport (feature `pcsc`).
