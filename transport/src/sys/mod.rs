//! Operating-system specific code. Everything above this module is portable.

pub mod kmod;
pub mod linux;
pub mod xen;
