//! Host provisioning plans per Ubuntu release and TEE, and applying them (issue 7).
