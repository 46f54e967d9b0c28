//! The portable core of an INS instance (being built).
