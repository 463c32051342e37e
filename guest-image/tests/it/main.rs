//! Integration tests of guest-image, one module per feature (one test binary for the crate).

mod measure;
