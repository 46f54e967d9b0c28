//! Settings from the environment, read once.

use std::ffi::CString;
use std::sync::OnceLock;

/// Default control socket of the driver.
pub const DEFAULT_SOCKET: &str = "/run/ins/shim.sock";

/// The shim's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `INS_SHIM_SOCKET`: the driver's shim socket.
    pub socket_path: CString,
    /// `INS_FAIL_OPEN=1`: use the host stack when the driver is unreachable.
    pub fail_open: bool,
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
        }
    }

    fn from_env() -> Config {
        use std::os::unix::ffi::OsStrExt;
        let s = std::env::var_os("INS_SHIM_SOCKET");
        let f = std::env::var_os("INS_FAIL_OPEN");
        Config::from_vars(
            s.as_deref().map(|v| v.as_bytes()),
            f.as_deref().map(|v| v.as_bytes()),
        )
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
    }
}
