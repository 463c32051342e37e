//! The guest image build pipeline and the emulated boot test (issue 3).
