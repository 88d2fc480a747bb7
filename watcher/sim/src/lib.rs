//! The cluster simulator (work in progress).
