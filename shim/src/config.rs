//! Settings from the environment, read once.

use std::ffi::CString;
use std::sync::OnceLock;

/// Default control socket of the driver.
pub const DEFAULT_SOCKET: &str = "/run/ins/shim.sock";
/// Default misc device of the kernel module.
pub const DEFAULT_KMOD_DEVICE: &str = "/dev/ins";

/// The shim's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `INS_SHIM_SOCKET`: the driver's shim socket.
    pub socket_path: CString,
    /// `INS_FAIL_OPEN=1`: use the host stack when the driver is unreachable.
    pub fail_open: bool,
    /// `INS_KMOD_DEVICE`: the kernel module's device, used when it exists
    /// and answers this shim's version (`off`: never; default `/dev/ins`).
    pub kmod_device: Option<CString>,
}

impl Config {
    /// Builds the settings from the two variables' values.
    pub fn from_vars(socket: Option<&[u8]>, fail_open: Option<&[u8]>) -> Config {
        let path = socket
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_SOCKET.as_bytes());
        let socket_path =
            CString::new(path).unwrap_or_else(|_| CString::new(DEFAULT_SOCKET).unwrap_or_default());
        Config {
            socket_path,
            fail_open: fail_open == Some(b"1"),
            kmod_device: Some(CString::new(DEFAULT_KMOD_DEVICE).unwrap_or_default()),
        }
    }

    /// With `INS_KMOD_DEVICE`'s value: `off` disables the module, empty or
    /// unset is the default device.
    pub fn with_kmod_device(mut self, dev: Option<&[u8]>) -> Config {
        match dev.filter(|d| !d.is_empty()) {
            Some(b"off") => self.kmod_device = None,
            Some(d) => {
                if let Ok(c) = CString::new(d) {
                    self.kmod_device = Some(c);
                }
            }
            None => {}
        }
        self
    }

    fn from_env() -> Config {
        use std::os::unix::ffi::OsStrExt;
        let s = std::env::var_os("INS_SHIM_SOCKET");
        let f = std::env::var_os("INS_FAIL_OPEN");
        let k = std::env::var_os("INS_KMOD_DEVICE");
        Config::from_vars(
            s.as_deref().map(|v| v.as_bytes()),
            f.as_deref().map(|v| v.as_bytes()),
        )
        .with_kmod_device(k.as_deref().map(|v| v.as_bytes()))
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The settings (read from the environment on first use; the library's
/// constructor forces this while the process is still single-threaded).
pub fn get() -> &'static Config {
    CONFIG.get_or_init(Config::from_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars() {
        let c = Config::from_vars(None, None);
        assert_eq!(c.socket_path.as_bytes(), DEFAULT_SOCKET.as_bytes());
        assert!(!c.fail_open);
        let c = Config::from_vars(Some(b"/tmp/x.sock"), Some(b"1"));
        assert_eq!(c.socket_path.as_bytes(), b"/tmp/x.sock");
        assert!(c.fail_open);
        assert!(!Config::from_vars(None, Some(b"yes")).fail_open);
        assert_eq!(
            Config::from_vars(Some(b""), None).socket_path.as_bytes(),
            DEFAULT_SOCKET.as_bytes()
        );
        let k = |v: Option<&[u8]>| {
            Config::from_vars(None, None)
                .with_kmod_device(v)
                .kmod_device
        };
        assert_eq!(k(None).as_deref(), Some(c"/dev/ins"));
        assert_eq!(k(Some(b"")).as_deref(), Some(c"/dev/ins"));
        assert_eq!(k(Some(b"off")), None);
        assert_eq!(k(Some(b"/dev/x")).as_deref(), Some(c"/dev/x"));
    }
}
