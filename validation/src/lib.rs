//! The validation floor: node profiles (e.g. the Dell XE7745), the end-to-end suite composing
//! host-setup's checks with guest-image's artifacts, and its reports (JUnit, JSON, HTML).
//!
//! The flow: [`profile::load`] a node profile, open the node's facts bundle with host-setup's
//! `host_setup::facts::Bundle` (or collect this host into a temporary one), build a
//! [`stages::Context`], [`stages::run`] it into one `cvm_core::check::Report` (the profile rows,
//! host-setup's preflight registry and the end-to-end stages), and [`report::write_all`] the
//! reports from that one list.

pub mod artifacts;
pub mod attest;
pub mod egress;
pub mod endpoint;
pub mod firmware;
pub mod guest;
pub mod measurement;
pub mod node_checks;
pub mod node_facts;
pub mod profile;
pub mod report;
pub mod stages;
pub mod telemetry;
