//! Integration tests of host-setup (one binary per crate); each module is one feature.

mod provision;
