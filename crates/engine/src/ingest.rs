//! Municipal messages (filled in next).
