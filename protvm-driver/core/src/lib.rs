//! INS driver core (being built).
#![no_std]
