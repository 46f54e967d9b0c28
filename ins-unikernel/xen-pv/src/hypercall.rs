//! Hypercalls through the hypercall page.
//!
//! Xen fills the page named by the `HYPERCALL_PAGE` ELF note with one
//! 32-byte stub per hypercall; hypercall `nr` is `call hypercall_page +
//! nr * 32` with arguments in `rdi, rsi, rdx, r10, r8` and the result in
//! `rax` (negative: `-errno`). The stubs use `syscall`, which clobbers
//! `rcx` and `r11`, and push onto the stack, so the asm below is not
//! `nostack` (the compiler then keeps no red-zone data across it).
//!
//! Until Xen has written the page it holds `int3` (0xcc): calling it too
//! early traps and, with no trap table, crashes the domain visibly.
//!
//! The raw [`hypercall`] is `unsafe`; the typed wrappers here are safe when
//! their arguments only point at memory they borrow for the call, and
//! `unsafe` when the operation changes this domain's mappings.
#![allow(unsafe_code)]

use core::arch::asm;
use core::fmt;

use crate::abi::{evtchnop, gnttabop, hc, sched, vcpuop};

core::arch::global_asm!(
    ".pushsection .text.hypercall_page, \"ax\", @progbits",
    ".balign 4096",
    ".globl hypercall_page",
    "hypercall_page:",
    ".fill 4096, 1, 0xcc",
    ".popsection",
);

unsafe extern "C" {
    /// The page Xen fills with hypercall stubs (defined above).
    static hypercall_page: [u8; 4096];
}

/// A failed hypercall: Xen's errno (the negated return value). Xen's errno
/// values are Linux's for every code a guest sees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct XenError(pub i32);

impl XenError {
    /// `EPERM`.
    pub const EPERM: XenError = XenError(1);
    /// `ENOENT`.
    pub const ENOENT: XenError = XenError(2);
    /// `EAGAIN`.
    pub const EAGAIN: XenError = XenError(11);
    /// `ENOMEM`.
    pub const ENOMEM: XenError = XenError(12);
    /// `EBUSY`.
    pub const EBUSY: XenError = XenError(16);
    /// `EINVAL`.
    pub const EINVAL: XenError = XenError(22);
    /// `ENOSPC`.
    pub const ENOSPC: XenError = XenError(28);
    /// `ENOSYS`.
    pub const ENOSYS: XenError = XenError(38);
    /// `ETIME`: a timer deadline already passed.
    pub const ETIME: XenError = XenError(62);

    fn from_ret(ret: i64) -> Result<u64, XenError> {
        if ret < 0 {
            Err(XenError(i32::try_from(-ret).unwrap_or(i32::MAX)))
        } else {
            Ok(ret as u64)
        }
    }
}

impl fmt::Debug for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XenError({})", self.0)
    }
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hypercall failed: errno {}", self.0)
    }
}

impl core::error::Error for XenError {}

/// Issues hypercall `nr` with up to five arguments; returns `rax`.
///
/// # Safety
///
/// The arguments must be what hypercall `nr` expects: every pointer valid
/// for the reads and writes Xen performs during the call, and the
/// operation must not break the memory the program relies on (mappings,
/// page tables). The domain must have been booted by Xen with the
/// hypercall page filled in.
#[inline(always)]
pub unsafe fn hypercall(nr: usize, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let stub = (&raw const hypercall_page).addr() + nr * 32;
    let ret: i64;
    // SAFETY: the caller guarantees the arguments suit hypercall `nr`;
    // the stub only clobbers rcx/r11 (syscall) besides rax, and the
    // argument registers are declared clobbered in case Xen poisons them.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") ret,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

fn ptr<T>(p: &mut T) -> u64 {
    (p as *mut T).addr() as u64
}

#[repr(C)]
struct Port {
    port: u32,
}

#[repr(C)]
struct SchedPoll {
    ports: u64,
    nr_ports: u32,
    _pad: u32,
    timeout: u64,
}

#[repr(C)]
struct BindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

#[repr(C)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
struct BindInterdomain {
    remote_dom: u16,
    _pad: u16,
    remote_port: u32,
    local_port: u32,
}

#[repr(C)]
struct SingleshotTimer {
    timeout_abs_ns: u64,
    flags: u32,
    _pad: u32,
}

/// One `mmu_update` request: `*ptr = val` checked by Xen; `ptr` is the
/// machine address of a page-table entry or'ed with the command.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmuUpdate {
    /// Machine address of the entry | `MMU_*` command.
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}

#[repr(C)]
struct SetupTable {
    dom: u16,
    _pad: u16,
    nr_frames: u32,
    status: i16,
    _pad2: [u8; 6],
    frame_list: u64,
}

#[repr(C)]
struct QuerySize {
    dom: u16,
    _pad: u16,
    nr_frames: u32,
    max_nr_frames: u32,
    status: i16,
    _pad2: u16,
}

#[repr(C)]
struct MapGrantRef {
    host_addr: u64,
    flags: u32,
    gref: u32,
    dom: u16,
    status: i16,
    handle: u32,
    dev_bus_addr: u64,
}

#[repr(C)]
struct UnmapGrantRef {
    host_addr: u64,
    dev_bus_addr: u64,
    handle: u32,
    status: i16,
    _pad: u16,
}

const _: () = {
    assert!(size_of::<SchedPoll>() == 24);
    assert!(size_of::<BindVirq>() == 12);
    assert!(size_of::<AllocUnbound>() == 8);
    assert!(size_of::<BindInterdomain>() == 12);
    assert!(size_of::<SingleshotTimer>() == 16);
    assert!(size_of::<MmuUpdate>() == 16);
    assert!(size_of::<Runstate>() == 48);
    assert!(size_of::<SetupTable>() == 24);
    assert!(size_of::<QuerySize>() == 16);
    assert!(size_of::<MapGrantRef>() == 32);
    assert!(size_of::<UnmapGrantRef>() == 24);
};

/// A grant-table status (`GNTST_*`, negative) turned into an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantStatus(pub i16);

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grant operation failed: GNTST {}", self.0)
    }
}

/// Why a grant-table hypercall failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The hypercall itself failed.
    Xen(XenError),
    /// The hypercall ran but the operation failed (`GNTST_*`).
    Status(GrantStatus),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Xen(e) => e.fmt(f),
            GrantError::Status(s) => s.fmt(f),
        }
    }
}

impl From<XenError> for GrantError {
    fn from(e: XenError) -> Self {
        GrantError::Xen(e)
    }
}

fn grant_status(s: i16) -> Result<(), GrantError> {
    if s < 0 {
        Err(GrantError::Status(GrantStatus(s)))
    } else {
        Ok(())
    }
}

/// `SCHEDOP_shutdown(reason)`: ends the domain; does not return.
pub fn shutdown(reason: u32) -> ! {
    let mut arg = reason;
    loop {
        // SAFETY: the argument is a valid `struct sched_shutdown` borrowed
        // for the call; shutting down touches no memory of ours.
        unsafe { hypercall(hc::SCHED_OP, sched::SHUTDOWN, ptr(&mut arg), 0, 0, 0) };
    }
}

/// `SCHEDOP_yield`.
pub fn sched_yield() {
    // SAFETY: yield takes no argument memory.
    unsafe { hypercall(hc::SCHED_OP, sched::YIELD, 0, 0, 0, 0) };
}

/// `SCHEDOP_poll`: sleeps until one of `ports` is pending or Xen system
/// time reaches `timeout_abs_ns` (0: no timeout). Returns at once if one is
/// pending already. Works with event delivery masked, which is how this
/// crate runs: no upcall ever lands on our stack.
pub fn poll(ports: &[u32], timeout_abs_ns: u64) -> Result<(), XenError> {
    if ports.len() > sched::POLL_MAX_PORTS {
        return Err(XenError::EINVAL);
    }
    let mut arg = SchedPoll {
        ports: ports.as_ptr().addr() as u64,
        nr_ports: ports.len() as u32,
        _pad: 0,
        timeout: timeout_abs_ns,
    };
    // SAFETY: `arg` and the port array it points to are borrowed for the
    // call and only read by Xen.
    XenError::from_ret(unsafe { hypercall(hc::SCHED_OP, sched::POLL, ptr(&mut arg), 0, 0, 0) })
        .map(drop)
}

fn evtchn_op<T>(cmd: u64, arg: &mut T) -> Result<(), XenError> {
    // SAFETY: `arg` is the `#[repr(C)]` structure of command `cmd`,
    // borrowed for the call; event-channel operations touch no other
    // memory of ours.
    XenError::from_ret(unsafe { hypercall(hc::EVENT_CHANNEL_OP, cmd, ptr(arg), 0, 0, 0) }).map(drop)
}

/// `EVTCHNOP_send`: raises the peer end of `port`.
pub fn evtchn_send(port: u32) -> Result<(), XenError> {
    evtchn_op(evtchnop::SEND, &mut Port { port })
}

/// `EVTCHNOP_unmask`: clears the mask bit; Xen re-delivers a pending event.
pub fn evtchn_unmask(port: u32) -> Result<(), XenError> {
    evtchn_op(evtchnop::UNMASK, &mut Port { port })
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> Result<(), XenError> {
    evtchn_op(evtchnop::CLOSE, &mut Port { port })
}

/// `EVTCHNOP_bind_virq` on vCPU 0: returns the new local port.
pub fn evtchn_bind_virq(virq: u32) -> Result<u32, XenError> {
    let mut a = BindVirq {
        virq,
        vcpu: 0,
        port: 0,
    };
    evtchn_op(evtchnop::BIND_VIRQ, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_alloc_unbound`: a port `remote_dom` may bind.
pub fn evtchn_alloc_unbound(remote_dom: u16) -> Result<u32, XenError> {
    let mut a = AllocUnbound {
        dom: crate::abi::mmu::DOMID_SELF,
        remote_dom,
        port: 0,
    };
    evtchn_op(evtchnop::ALLOC_UNBOUND, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain`: binds to `remote_port` of `remote_dom`;
/// returns the local port.
pub fn evtchn_bind_interdomain(remote_dom: u16, remote_port: u32) -> Result<u32, XenError> {
    let mut a = BindInterdomain {
        remote_dom,
        _pad: 0,
        remote_port,
        local_port: 0,
    };
    evtchn_op(evtchnop::BIND_INTERDOMAIN, &mut a)?;
    Ok(a.local_port)
}

/// `VCPUOP_set_singleshot_timer` on vCPU 0: `VIRQ_TIMER` fires once Xen
/// system time reaches `deadline_ns` (at once if it already has).
pub fn set_singleshot_timer(deadline_ns: u64) -> Result<(), XenError> {
    let mut a = SingleshotTimer {
        timeout_abs_ns: deadline_ns,
        flags: 0,
        _pad: 0,
    };
    // SAFETY: `a` is a `struct vcpu_set_singleshot_timer` borrowed for the
    // call; vCPU 0 is ours.
    XenError::from_ret(unsafe {
        hypercall(
            hc::VCPU_OP,
            vcpuop::SET_SINGLESHOT_TIMER,
            0,
            ptr(&mut a),
            0,
            0,
        )
    })
    .map(drop)
}

/// vCPU 0's run-state accounting (`VCPUOP_get_runstate_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runstate {
    /// Current state (`RUNSTATE_*`: 0 running, 1 runnable, 2 blocked, 3
    /// offline).
    pub state: i32,
    _pad: u32,
    /// Xen system time at which the current state was entered.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each state, up to `state_entry_time`.
    pub time: [u64; 4],
}

impl Runstate {
    /// Xen system time at which the vCPU was created (with the domain):
    /// the current state's entry time minus all accumulated time.
    pub fn created_ns(&self) -> u64 {
        let entry = self.state_entry_time & !(1 << 63);
        entry.saturating_sub(self.time.iter().sum())
    }

    /// Xen system time at which the vCPU first ran (left "offline": the
    /// domain builder's time before the unpause).
    pub fn first_run_ns(&self) -> u64 {
        self.created_ns() + self.time[3]
    }
}

/// `VCPUOP_get_runstate_info` for vCPU 0.
pub fn runstate() -> Result<Runstate, XenError> {
    let mut r = Runstate::default();
    // SAFETY: `r` is a `struct vcpu_runstate_info` borrowed for the call.
    XenError::from_ret(unsafe {
        hypercall(hc::VCPU_OP, vcpuop::GET_RUNSTATE_INFO, 0, ptr(&mut r), 0, 0)
    })?;
    Ok(r)
}

/// `VCPUOP_stop_periodic_timer` on vCPU 0.
pub fn stop_periodic_timer() -> Result<(), XenError> {
    // SAFETY: takes no argument memory.
    XenError::from_ret(unsafe { hypercall(hc::VCPU_OP, vcpuop::STOP_PERIODIC_TIMER, 0, 0, 0, 0) })
        .map(drop)
}

/// `VCPUOP_stop_singleshot_timer` on vCPU 0.
pub fn stop_singleshot_timer() -> Result<(), XenError> {
    // SAFETY: takes no argument memory.
    XenError::from_ret(unsafe { hypercall(hc::VCPU_OP, vcpuop::STOP_SINGLESHOT_TIMER, 0, 0, 0, 0) })
        .map(drop)
}

/// `xen_version(XENVER_version)`: `(major, minor)`.
pub fn xen_version() -> (u16, u16) {
    // SAFETY: XENVER_version takes no argument memory.
    let v = unsafe { hypercall(hc::XEN_VERSION, 0, 0, 0, 0, 0) } as u32;
    ((v >> 16) as u16, v as u16)
}

/// `update_va_mapping(va, pte, flags)`: sets the L1 entry that maps `va`.
///
/// # Safety
///
/// Nothing may rely on what `va` mapped before (no live reference into
/// it), and whatever `pte` maps must be treated as `va`'s new contents.
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), XenError> {
    // SAFETY: the caller vouches for the change of mapping.
    XenError::from_ret(unsafe { hypercall(hc::UPDATE_VA_MAPPING, va, pte, flags, 0, 0) }).map(drop)
}

/// `mmu_update(reqs, DOMID_SELF)`: applies checked page-table writes.
///
/// # Safety
///
/// As for [`update_va_mapping`], for every virtual address the changed
/// entries map.
pub unsafe fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), XenError> {
    let mut done: u32 = 0;
    // SAFETY: `reqs` is read and `done` written by Xen during the call; the
    // caller vouches for the mappings.
    let ret = unsafe {
        hypercall(
            hc::MMU_UPDATE,
            reqs.as_ptr().addr() as u64,
            reqs.len() as u64,
            ptr(&mut done),
            u64::from(crate::abi::mmu::DOMID_SELF),
            0,
        )
    };
    XenError::from_ret(ret)?;
    if done as usize != reqs.len() {
        return Err(XenError::EINVAL);
    }
    Ok(())
}

/// `GNTTABOP_query_size` for this domain: `(frames, max_frames)`.
pub fn gnttab_query_size() -> Result<(u32, u32), GrantError> {
    let mut a = QuerySize {
        dom: crate::abi::mmu::DOMID_SELF,
        _pad: 0,
        nr_frames: 0,
        max_nr_frames: 0,
        status: 0,
        _pad2: 0,
    };
    // SAFETY: `a` is a `struct gnttab_query_size` borrowed for the call.
    XenError::from_ret(unsafe {
        hypercall(
            hc::GRANT_TABLE_OP,
            gnttabop::QUERY_SIZE,
            ptr(&mut a),
            1,
            0,
            0,
        )
    })?;
    grant_status(a.status)?;
    Ok((a.nr_frames, a.max_nr_frames))
}

/// `GNTTABOP_setup_table`: makes this domain's grant table `frames.len()`
/// frames long and stores their machine frame numbers in `frames`.
pub fn gnttab_setup_table(frames: &mut [u64]) -> Result<(), GrantError> {
    let mut a = SetupTable {
        dom: crate::abi::mmu::DOMID_SELF,
        _pad: 0,
        nr_frames: frames.len() as u32,
        status: 0,
        _pad2: [0; 6],
        frame_list: frames.as_mut_ptr().addr() as u64,
    };
    // SAFETY: `a` and the frame array it points to (written by Xen, up to
    // nr_frames entries) are borrowed for the call.
    XenError::from_ret(unsafe {
        hypercall(
            hc::GRANT_TABLE_OP,
            gnttabop::SETUP_TABLE,
            ptr(&mut a),
            1,
            0,
            0,
        )
    })?;
    grant_status(a.status)
}

/// `GNTTABOP_map_grant_ref` with `GNTMAP_host_map`: maps grant `gref` of
/// domain `dom` at `va`; returns the map handle.
///
/// # Safety
///
/// `va` must be a page of this domain's address space with an L1 table and
/// nothing relying on its current contents; afterwards it holds the peer's
/// page, which the peer may write at any time.
pub unsafe fn gnttab_map(va: u64, dom: u16, gref: u32, readonly: bool) -> Result<u32, GrantError> {
    let mut a = MapGrantRef {
        host_addr: va,
        flags: gnttabop::GNTMAP_HOST_MAP
            | if readonly {
                gnttabop::GNTMAP_READONLY
            } else {
                0
            },
        gref,
        dom,
        status: 0,
        handle: 0,
        dev_bus_addr: 0,
    };
    // SAFETY: `a` is a `struct gnttab_map_grant_ref` borrowed for the call;
    // the caller vouches for `va`.
    XenError::from_ret(unsafe {
        hypercall(
            hc::GRANT_TABLE_OP,
            gnttabop::MAP_GRANT_REF,
            ptr(&mut a),
            1,
            0,
            0,
        )
    })?;
    grant_status(a.status)?;
    Ok(a.handle)
}

/// `GNTTABOP_unmap_grant_ref` of a mapping made by [`gnttab_map`].
///
/// # Safety
///
/// Nothing may use `va` afterwards until it is mapped again.
pub unsafe fn gnttab_unmap(va: u64, handle: u32) -> Result<(), GrantError> {
    let mut a = UnmapGrantRef {
        host_addr: va,
        dev_bus_addr: 0,
        handle,
        status: 0,
        _pad: 0,
    };
    // SAFETY: `a` is a `struct gnttab_unmap_grant_ref` borrowed for the
    // call; the caller vouches that `va` is no longer used.
    XenError::from_ret(unsafe {
        hypercall(
            hc::GRANT_TABLE_OP,
            gnttabop::UNMAP_GRANT_REF,
            ptr(&mut a),
            1,
            0,
            0,
        )
    })?;
    grant_status(a.status)
}
