//! `start_info`: what the domain builder tells a PV guest at entry.
//!
//! The page is this domain's own memory; it is copied once at boot into a
//! [`StartInfo`] and parsed from bytes (so the parser is tested on the
//! host).

use crate::abi::start_info as off;

/// The fields of `start_info` this platform uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Total pages of the domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info_maddr: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Machine frame of the console ring.
    pub console_mfn: u64,
    /// Event channel of the console ring.
    pub console_evtchn: u32,
    /// Virtual address of the L4 page table.
    pub pt_base: u64,
    /// Frames of the bootstrap page tables.
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn → mfn array.
    pub mfn_list: u64,
    /// Command line bytes (up to the first NUL).
    cmd_line: [u8; off::CMD_LINE_LEN],
    cmd_len: usize,
}

/// `start_info` is not one of a 64-bit PV guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadMagic;

fn u64_at(b: &[u8; off::LEN], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8; off::LEN], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}

impl StartInfo {
    /// Parses the first [`off::LEN`] bytes of the start_info page. The
    /// magic must start with `xen-3.0-x86_64`.
    pub fn parse(b: &[u8; off::LEN]) -> Result<StartInfo, BadMagic> {
        if !b[off::MAGIC..].starts_with(b"xen-3.0-x86_64") {
            return Err(BadMagic);
        }
        let mut cmd_line = [0u8; off::CMD_LINE_LEN];
        cmd_line.copy_from_slice(&b[off::CMD_LINE..off::CMD_LINE + off::CMD_LINE_LEN]);
        let cmd_len = cmd_line
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(off::CMD_LINE_LEN);
        Ok(StartInfo {
            nr_pages: u64_at(b, off::NR_PAGES),
            shared_info_maddr: u64_at(b, off::SHARED_INFO),
            flags: u32_at(b, off::FLAGS),
            store_mfn: u64_at(b, off::STORE_MFN),
            store_evtchn: u32_at(b, off::STORE_EVTCHN),
            console_mfn: u64_at(b, off::CONSOLE_MFN),
            console_evtchn: u32_at(b, off::CONSOLE_EVTCHN),
            pt_base: u64_at(b, off::PT_BASE),
            nr_pt_frames: u64_at(b, off::NR_PT_FRAMES),
            mfn_list: u64_at(b, off::MFN_LIST),
            cmd_line,
            cmd_len,
        })
    }

    /// The command line (`extra=` of the domain's configuration), as bytes.
    pub fn cmd_line(&self) -> &[u8] {
        &self.cmd_line[..self.cmd_len]
    }

    /// The value of `key=value` on the command line (space-separated
    /// words; the last occurrence wins), or `Some("")` for a bare `key`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        let line = core::str::from_utf8(self.cmd_line()).ok()?;
        let mut found = None;
        for word in line.split_ascii_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if k == key => found = Some(v),
                None if word == key => found = Some(""),
                _ => {}
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> [u8; off::LEN] {
        let mut b = [0u8; off::LEN];
        b[..14].copy_from_slice(b"xen-3.0-x86_64");
        b[off::NR_PAGES..off::NR_PAGES + 8].copy_from_slice(&4096u64.to_le_bytes());
        b[off::CONSOLE_EVTCHN..off::CONSOLE_EVTCHN + 4].copy_from_slice(&2u32.to_le_bytes());
        b[off::MFN_LIST..off::MFN_LIST + 8].copy_from_slice(&0x12_3000u64.to_le_bytes());
        let cmd = b"ip=10.0.0.2/24 gw=10.0.0.1 verbose ip=10.0.0.3/24";
        b[off::CMD_LINE..off::CMD_LINE + cmd.len()].copy_from_slice(cmd);
        b
    }

    #[test]
    fn parses_fields_and_args() {
        let si = StartInfo::parse(&page()).unwrap();
        assert_eq!(si.nr_pages, 4096);
        assert_eq!(si.console_evtchn, 2);
        assert_eq!(si.mfn_list, 0x12_3000);
        assert_eq!(si.arg("ip"), Some("10.0.0.3/24"));
        assert_eq!(si.arg("gw"), Some("10.0.0.1"));
        assert_eq!(si.arg("verbose"), Some(""));
        assert_eq!(si.arg("mask"), None);
    }

    #[test]
    fn rejects_other_magic_and_unterminated_line() {
        let mut b = page();
        b[9] = b'y';
        assert_eq!(StartInfo::parse(&b), Err(BadMagic));
        let mut b = page();
        b[off::CMD_LINE..].fill(b'a');
        let si = StartInfo::parse(&b).unwrap();
        assert_eq!(si.cmd_line().len(), off::CMD_LINE_LEN);
    }
}
