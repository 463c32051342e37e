//! The bottom floor of cvm-stack: the deployment model (`cvm.toml`), the one wrapper every external
//! command goes through, the map from tools to the packages that provide them, and the check-result
//! types that host checks and validation share. Types and plumbing only, no policy.

pub mod check;
pub mod cmd;
pub mod deps;
pub mod error;
pub mod hash;
pub mod model;
pub mod skip;

pub use error::BadInput;
