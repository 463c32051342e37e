//! The host floor: the facts bundle (collect + parsers), the preflight check registry, the Redfish
//! client and provisioning plans. Never imports guest-image.
