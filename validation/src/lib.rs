//! The validation floor: node profiles (e.g. the Dell XE7745), the end-to-end suite composing
//! host-setup's checks with guest-image's artifacts, and its reports (JUnit, JSON, HTML).
