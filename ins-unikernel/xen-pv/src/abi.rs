//! Numbers and layouts of Xen's public ABI (`xen/include/public/*.h`) for a
//! 64-bit PV guest: hypercall numbers, sub-operations, and the byte offsets
//! of the shared structures this crate reads. Offsets are for x86_64.

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod hc {
    /// `mmu_update`.
    pub const MMU_UPDATE: usize = 1;
    /// `set_trap_table`.
    pub const SET_TRAP_TABLE: usize = 0;
    /// `memory_op`.
    pub const MEMORY_OP: usize = 12;
    /// `update_va_mapping`.
    pub const UPDATE_VA_MAPPING: usize = 14;
    /// `set_timer_op`.
    pub const SET_TIMER_OP: usize = 15;
    /// `xen_version`.
    pub const XEN_VERSION: usize = 17;
    /// `console_io`.
    pub const CONSOLE_IO: usize = 18;
    /// `grant_table_op`.
    pub const GRANT_TABLE_OP: usize = 20;
    /// `vcpu_op`.
    pub const VCPU_OP: usize = 24;
    /// `mmuext_op`.
    pub const MMUEXT_OP: usize = 26;
    /// `sched_op`.
    pub const SCHED_OP: usize = 29;
    /// `event_channel_op`.
    pub const EVENT_CHANNEL_OP: usize = 32;
}

/// `sched_op` commands and shutdown reasons.
pub mod sched {
    /// `SCHEDOP_yield`.
    pub const YIELD: u64 = 0;
    /// `SCHEDOP_block` (clears the upcall mask: never used here).
    pub const BLOCK: u64 = 1;
    /// `SCHEDOP_shutdown`.
    pub const SHUTDOWN: u64 = 2;
    /// `SCHEDOP_poll`.
    pub const POLL: u64 = 3;
    /// `SHUTDOWN_poweroff`.
    pub const POWEROFF: u32 = 0;
    /// `SHUTDOWN_reboot`.
    pub const REBOOT: u32 = 1;
    /// `SHUTDOWN_crash`.
    pub const CRASH: u32 = 3;
    /// Most ports one `SCHEDOP_poll` may name (Xen's limit).
    pub const POLL_MAX_PORTS: usize = 128;
}

/// `event_channel_op` commands.
pub mod evtchnop {
    /// `EVTCHNOP_bind_interdomain` {u16 remote_dom, u32 remote_port, u32 local_port}.
    pub const BIND_INTERDOMAIN: u64 = 0;
    /// `EVTCHNOP_bind_virq` {u32 virq, u32 vcpu, u32 port}.
    pub const BIND_VIRQ: u64 = 1;
    /// `EVTCHNOP_close` {u32 port}.
    pub const CLOSE: u64 = 3;
    /// `EVTCHNOP_send` {u32 port}.
    pub const SEND: u64 = 4;
    /// `EVTCHNOP_alloc_unbound` {u16 dom, u16 remote_dom, u32 port}.
    pub const ALLOC_UNBOUND: u64 = 6;
    /// `EVTCHNOP_unmask` {u32 port}.
    pub const UNMASK: u64 = 9;
    /// `VIRQ_TIMER`.
    pub const VIRQ_TIMER: u32 = 0;
}

/// `vcpu_op` commands.
pub mod vcpuop {
    /// `VCPUOP_get_runstate_info` {i32 state, u64 state_entry_time, u64 time\[4\]}.
    pub const GET_RUNSTATE_INFO: u64 = 4;
    /// `VCPUOP_stop_periodic_timer` (Xen gives PV vCPUs a 10 ms periodic
    /// `VIRQ_TIMER` by default).
    pub const STOP_PERIODIC_TIMER: u64 = 7;
    /// `VCPUOP_set_singleshot_timer` {u64 timeout_abs_ns, u32 flags}.
    pub const SET_SINGLESHOT_TIMER: u64 = 8;
    /// `VCPUOP_stop_singleshot_timer`.
    pub const STOP_SINGLESHOT_TIMER: u64 = 9;
}

/// `grant_table_op` commands, flags and status codes.
pub mod gnttabop {
    /// `GNTTABOP_map_grant_ref`.
    pub const MAP_GRANT_REF: u64 = 0;
    /// `GNTTABOP_unmap_grant_ref`.
    pub const UNMAP_GRANT_REF: u64 = 1;
    /// `GNTTABOP_setup_table`.
    pub const SETUP_TABLE: u64 = 2;
    /// `GNTTABOP_query_size`.
    pub const QUERY_SIZE: u64 = 6;
    /// `GNTMAP_host_map`: map at a virtual address.
    pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
    /// `GNTMAP_readonly`.
    pub const GNTMAP_READONLY: u32 = 1 << 2;
    /// `GTF_permit_access`.
    pub const GTF_PERMIT_ACCESS: u16 = 1;
    /// `GTF_readonly`.
    pub const GTF_READONLY: u16 = 1 << 2;
    /// `GTF_reading`: the peer maps the frame.
    pub const GTF_READING: u16 = 1 << 3;
    /// `GTF_writing`: the peer maps the frame writable.
    pub const GTF_WRITING: u16 = 1 << 4;
    /// Entries `0..8` are reserved for the toolstack.
    pub const NR_RESERVED_ENTRIES: u32 = 8;
    /// Bytes of a v1 grant entry {u16 flags, u16 domid, u32 frame}.
    pub const ENTRY_SIZE: usize = 8;
}

/// `mmu_update` / `update_va_mapping` / page-table entry bits.
pub mod mmu {
    /// `MMU_NORMAL_PT_UPDATE` (low bits of `mmu_update.ptr`).
    pub const NORMAL_PT_UPDATE: u64 = 0;
    /// `UVMF_INVLPG` | `UVMF_LOCAL`: flush this address on this vCPU.
    pub const UVMF_INVLPG: u64 = 2;
    /// `_PAGE_PRESENT`.
    pub const PRESENT: u64 = 1;
    /// `_PAGE_RW`.
    pub const RW: u64 = 1 << 1;
    /// `_PAGE_USER`.
    pub const USER: u64 = 1 << 2;
    /// `_PAGE_ACCESSED`.
    pub const ACCESSED: u64 = 1 << 5;
    /// `_PAGE_DIRTY`.
    pub const DIRTY: u64 = 1 << 6;
    /// The frame bits of a 4-level entry (bits 12..51).
    pub const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// `DOMID_SELF`.
    pub const DOMID_SELF: u16 = 0x7ff0;
    /// Virtual address of Xen's read-only machine-to-physical table.
    pub const M2P_VIRT_START: u64 = 0xffff_8000_0000_0000;
}

/// `struct start_info` (x86_64) field offsets.
pub mod start_info {
    /// `magic[32]`: "xen-3.0-x86_64".
    pub const MAGIC: usize = 0;
    /// `nr_pages`.
    pub const NR_PAGES: usize = 32;
    /// `shared_info` (machine address).
    pub const SHARED_INFO: usize = 40;
    /// `flags` (u32).
    pub const FLAGS: usize = 48;
    /// `store_mfn`.
    pub const STORE_MFN: usize = 56;
    /// `store_evtchn` (u32).
    pub const STORE_EVTCHN: usize = 64;
    /// `console.domU.mfn`.
    pub const CONSOLE_MFN: usize = 72;
    /// `console.domU.evtchn` (u32).
    pub const CONSOLE_EVTCHN: usize = 80;
    /// `pt_base` (virtual address of the L4 table).
    pub const PT_BASE: usize = 88;
    /// `nr_pt_frames`.
    pub const NR_PT_FRAMES: usize = 96;
    /// `mfn_list` (virtual address of the p2m array).
    pub const MFN_LIST: usize = 104;
    /// `mod_start`.
    pub const MOD_START: usize = 112;
    /// `mod_len`.
    pub const MOD_LEN: usize = 120;
    /// `cmd_line[1024]`.
    pub const CMD_LINE: usize = 128;
    /// Length of `cmd_line`.
    pub const CMD_LINE_LEN: usize = 1024;
    /// Bytes of the structure up to the end of `cmd_line`.
    pub const LEN: usize = CMD_LINE + CMD_LINE_LEN;
}

/// `struct shared_info` (x86_64) offsets.
pub mod shared_info {
    /// `vcpu_info[0].evtchn_upcall_pending` (u8).
    pub const UPCALL_PENDING: usize = 0;
    /// `vcpu_info[0].evtchn_upcall_mask` (u8).
    pub const UPCALL_MASK: usize = 1;
    /// `vcpu_info[0].time` (`struct vcpu_time_info`, 32 bytes).
    pub const TIME: usize = 32;
    /// `time.version` (u32, odd while Xen updates).
    pub const TIME_VERSION: usize = TIME;
    /// `time.tsc_timestamp` (u64).
    pub const TIME_TSC: usize = TIME + 8;
    /// `time.system_time` (u64 ns).
    pub const TIME_SYSTEM: usize = TIME + 16;
    /// `time.tsc_to_system_mul` (u32).
    pub const TIME_MUL: usize = TIME + 24;
    /// `time.tsc_shift` (i8).
    pub const TIME_SHIFT: usize = TIME + 28;
    /// `evtchn_pending[64]` (u64 words).
    pub const EVTCHN_PENDING: usize = 2048;
    /// `evtchn_mask[64]`.
    pub const EVTCHN_MASK: usize = 2560;
    /// `wc_version` (u32).
    pub const WC_VERSION: usize = 3072;
    /// `wc_sec` (u32).
    pub const WC_SEC: usize = 3076;
    /// `wc_nsec` (u32).
    pub const WC_NSEC: usize = 3080;
    /// `wc_sec_hi` (u32, x86_64).
    pub const WC_SEC_HI: usize = 3084;
    /// Ports of the 2-level event ABI (64 words of 64 bits).
    pub const NR_PORTS: u32 = 4096;
}

/// `struct xencons_interface` (io/console.h) offsets.
pub mod console {
    /// `out[2048]`.
    pub const OUT: usize = 1024;
    /// Size of `out`.
    pub const OUT_LEN: u32 = 2048;
    /// `out_cons` (u32).
    pub const OUT_CONS: usize = 3080;
    /// `out_prod` (u32).
    pub const OUT_PROD: usize = 3084;
}
