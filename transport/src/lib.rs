//! Shared regions, doorbells and rendezvous (being built).
