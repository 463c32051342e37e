//! Integration tests of host-setup, one module per feature.

// Reading bundles: the three fact states and bad bundles.
mod bundle;
// The check registry over the healthy bundles and their broken variants.
mod checks;
// Collecting this machine live.
mod live;
// Provisioning plans applied inside a throwaway root.
mod provision;
// Mutated real outputs thrown at every parser and at the checks.
mod props;
// The Redfish client against a local HTTP server.
mod redfish;
// Copying fixture bundles and applying edits to them.
mod support;
