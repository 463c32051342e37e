//! The host floor: the facts bundle (collect + parsers), the preflight check registry, the Redfish
//! client and provisioning plans. Never imports guest-image.

pub mod checks;
pub mod facts;
pub mod provision;
pub mod redfish;
