//! # ins-xen-agent
//!
//! The toolstack agent: runs in dom0 (where `xl` can create domains) on
//! behalf of one protected VM whose driver cannot. The driver writes
//! requests under its own xenstore home (`ins_xen::agent`); the agent
//! creates an instance domain from an xl template for each `create`,
//! answers with its domain id, and destroys it on `destroy` (stop, scale
//! down, rotation, a dead instance). A `create unikernel` is served the
//! same way from the unikernel's own template (`--unikernel-template`,
//! `--unikernel-kernel`), by an agent started with one; any other agent
//! answers it with an error naming those options.
//!
//! ```text
//!  PVM: ins-driver --xen-spawn          dom0: ins-xen-agent --pvm P --template F
//!   req/<chan> = "create"  ──xenstore──▶ render F (name, mac, ip, ins_driver=P
//!                                         ins_channel=<chan>) → xl create
//!   ◀── ans/<chan> = "created <D>" ────   (request removed)
//!   offer channel <chan> to D (attach-xen path)     domain D boots: its init runs
//!                                         ins --xen-driver P --xen-channel <chan>
//!   req/<chan> = "create unikernel" ───▶ the same from --unikernel-template
//!                                         (driver=P channel=<chan> seed=<random>
//!                                         on ins-pv's command line; it joins)
//!   instance dead / stopped:
//!   req/<chan> = "destroy <D>" ─────────▶ xl destroy D (only a domain it made)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`template`] | the xl template, its placeholders, the options' patterns, the address pool |
//! | [`agent`] | the state machine over a xenstore and a toolstack (trait objects the tests fake) |
//! | `main.rs` | arguments, the real xenstore (`/dev/xen/xenbus`) and `xl` (argument vectors, no shell, a timeout) |

pub mod agent;
pub mod template;
