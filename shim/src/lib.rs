//! libshim.so (being built).
