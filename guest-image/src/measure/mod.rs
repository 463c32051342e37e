//! Launch measurements: the SEV-SNP launch digest and the TDX MRTD/RTMRs (issue 4).
