//! Rendering of launch scripts and libvirt domain XML from the model (issue 5).
