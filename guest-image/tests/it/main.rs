//! Integration tests of guest-image: each module tests one feature through the public API (and,
//! in the slow suite, the real tools).

mod launch;
mod measure;
