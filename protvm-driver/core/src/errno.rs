//! The Linux errno values the driver answers with (the instance's own
//! errnos pass through unchanged).

/// I/O error.
pub const EIO: i32 = 5;
/// Bad file descriptor.
pub const EBADF: i32 = 9;
/// Try again.
pub const EAGAIN: i32 = 11;
/// Out of memory.
pub const ENOMEM: i32 = 12;
/// Invalid argument.
pub const EINVAL: i32 = 22;
/// File table overflow.
pub const ENFILE: i32 = 23;
/// Protocol error.
pub const EPROTO: i32 = 71;
/// Not a socket.
pub const ENOTSOCK: i32 = 88;
/// Protocol not available (unknown option).
pub const ENOPROTOOPT: i32 = 92;
/// Protocol not supported.
pub const EPROTONOSUPPORT: i32 = 93;
/// Socket type not supported.
pub const ESOCKTNOSUPPORT: i32 = 94;
/// Operation not supported.
pub const EOPNOTSUPP: i32 = 95;
/// Address family not supported.
pub const EAFNOSUPPORT: i32 = 97;
/// Address in use.
pub const EADDRINUSE: i32 = 98;
/// Network is down (no live instance).
pub const ENETDOWN: i32 = 100;
/// Software caused connection abort.
pub const ECONNABORTED: i32 = 103;
/// Connection reset by peer.
pub const ECONNRESET: i32 = 104;
/// Already connected.
pub const EISCONN: i32 = 106;
/// Not connected.
pub const ENOTCONN: i32 = 107;
/// Connection refused.
pub const ECONNREFUSED: i32 = 111;
/// Operation already in progress.
pub const EALREADY: i32 = 114;
/// Operation now in progress.
pub const EINPROGRESS: i32 = 115;
