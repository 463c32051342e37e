//! Unit tests of endpoint.
