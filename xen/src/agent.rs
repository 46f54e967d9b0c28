//! The toolstack agent's request protocol: how a driver in a domU (the
//! protected VM) asks dom0's agent (`ins-xen-agent`) to create and destroy
//! instance domains, through xenstore.
//!
//! A domU may write only under its own `/local/domain/<id>/`, so the
//! requests live there and dom0 (which may write anywhere) answers beside
//! them:
//!
//! ```text
//!  /local/domain/<pvm>/data/ins-agent/req/<channel>   written by the PVM:
//!        "create"            a new instance domain for channel <channel>
//!                            (a Linux guest running `ins`)
//!        "create unikernel"  the same, a PV unikernel instance (`ins-pv`)
//!        "destroy <domid>"   the domain created for <channel> is done
//!  /local/domain/<pvm>/data/ins-agent/ans/<channel>   written by the agent
//!        (owner <pvm>, nobody else), which then removes the request:
//!        "created <domid>" | "destroyed" | "error <text>"
//!  the PVM reads the answer and removes it
//! ```
//!
//! Invariants:
//! * every value is parsed strictly here, on both sides: a request or an
//!   answer is short printable ASCII of a fixed shape, so nothing read
//!   from xenstore reaches a configuration file, a command line or a log
//!   unchecked;
//! * a channel name (the key) is 1 to [`MAX_NAME`] bytes of `[a-z0-9-]`,
//!   starting with a letter or digit: it is a xenstore path element, part
//!   of a domain name and a kernel argument, and safe in all three;
//! * the agent destroys only domains it created, for the channel named
//!   (a PVM cannot make dom0 destroy another domain).

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::domid::DomId;

/// Requests, relative to the PVM's domain home.
pub const REQ_DIR: &str = "data/ins-agent/req";
/// Answers, relative to the PVM's domain home.
pub const ANS_DIR: &str = "data/ins-agent/ans";
/// Longest channel name.
pub const MAX_NAME: usize = 32;
/// Longest request or answer value (bytes).
pub const MAX_VALUE: usize = 240;
/// Longest error text in an answer.
pub const MAX_ERROR: usize = 200;

/// What an instance domain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Linux guest whose init runs `ins --xen-driver … --xen-channel …`
    /// (the request `create`, as before kinds existed).
    Linux,
    /// The PV unikernel (`ins-pv`, `driver=… channel=…` on its command
    /// line; the request `create unikernel`).
    Unikernel,
}

impl Kind {
    /// Its name in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Linux => "linux",
            Kind::Unikernel => "unikernel",
        }
    }
}

/// What the PVM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A new instance domain of that kind for the channel.
    Create(Kind),
    /// The channel's domain (this one) is no longer needed.
    Destroy(DomId),
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The domain exists (being booted); the driver offers it the channel.
    Created(DomId),
    /// The domain is gone (destroyed now, or already).
    Destroyed,
    /// Nothing was done, and why (printable ASCII, at most [`MAX_ERROR`]).
    Error(String),
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// The channel name is not `[a-z0-9][a-z0-9-]{0,31}`.
    BadName,
    /// The value is too long, not printable ASCII, or of no known shape.
    BadValue,
    /// A domain id is missing, not canonical decimal, or special.
    BadDomain,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentError::BadName => "channel name is not [a-z0-9][a-z0-9-]{0,31}",
            AgentError::BadValue => "value is not a known request or answer",
            AgentError::BadDomain => "not a real domain id",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AgentError {}

/// Checks a channel name (see the module's invariants).
pub fn check_name(name: &str) -> Result<(), AgentError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok { Ok(()) } else { Err(AgentError::BadName) }
}

/// Printable ASCII (space to `~`), at most [`MAX_VALUE`] bytes.
fn printable(v: &[u8]) -> Result<&str, AgentError> {
    if v.len() > MAX_VALUE || !v.iter().all(|&c| (b' '..=b'~').contains(&c)) {
        return Err(AgentError::BadValue);
    }
    core::str::from_utf8(v).map_err(|_| AgentError::BadValue)
}

fn domid(v: &str) -> Result<DomId, AgentError> {
    DomId::parse(v.as_bytes()).ok_or(AgentError::BadDomain)
}

impl Request {
    /// Parses a request value.
    pub fn parse(v: &[u8]) -> Result<Request, AgentError> {
        match printable(v)?.split_once(' ') {
            None if v == b"create" => Ok(Request::Create(Kind::Linux)),
            Some(("create", "unikernel")) => Ok(Request::Create(Kind::Unikernel)),
            Some(("destroy", d)) => Ok(Request::Destroy(domid(d)?)),
            _ => Err(AgentError::BadValue),
        }
    }

    /// The value written.
    pub fn value(self) -> String {
        match self {
            Request::Create(Kind::Linux) => "create".into(),
            Request::Create(Kind::Unikernel) => "create unikernel".into(),
            Request::Destroy(d) => format!("destroy {d}"),
        }
    }
}

impl Answer {
    /// An error answer: the text is cut to [`MAX_ERROR`] bytes and every
    /// byte outside printable ASCII becomes `?`.
    pub fn error(text: &str) -> Answer {
        let s: String = text
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .take(MAX_ERROR)
            .collect();
        Answer::Error(s)
    }

    /// Parses an answer value.
    pub fn parse(v: &[u8]) -> Result<Answer, AgentError> {
        let s = printable(v)?;
        match s.split_once(' ') {
            None if s == "destroyed" => Ok(Answer::Destroyed),
            Some(("created", d)) => Ok(Answer::Created(domid(d)?)),
            Some(("error", t)) if t.len() <= MAX_ERROR => Ok(Answer::Error(t.into())),
            _ => Err(AgentError::BadValue),
        }
    }

    /// The value written.
    pub fn value(&self) -> String {
        match self {
            Answer::Created(d) => format!("created {d}"),
            Answer::Destroyed => "destroyed".into(),
            Answer::Error(t) => format!("error {t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "x123-4", "0", &"a".repeat(32)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a/b",
            "a b",
            "a.b",
            "a\"",
            "a\n",
            &"a".repeat(33),
            "é",
        ] {
            assert_eq!(check_name(bad), Err(AgentError::BadName), "{bad:?}");
        }
    }

    #[test]
    fn requests_round_trip_and_reject_everything_else() {
        for r in [
            Request::Create(Kind::Linux),
            Request::Create(Kind::Unikernel),
            Request::Destroy(DomId(7)),
        ] {
            assert_eq!(Request::parse(r.value().as_bytes()), Ok(r));
        }
        assert_eq!(Request::parse(b"destroy 0"), Ok(Request::Destroy(DomId(0))));
        // The Linux kind keeps the wire form agents have always read.
        assert_eq!(Request::Create(Kind::Linux).value(), "create");
        assert_eq!(
            Request::parse(b"create unikernel"),
            Ok(Request::Create(Kind::Unikernel))
        );
        for bad in [
            &b""[..],
            b"create ",
            b"create 1",
            b"create linux",
            b"create Unikernel",
            b"create unikernel ",
            b"create  unikernel",
            b"create unikernel 1",
            b"create\tunikernel",
            b"Create",
            b"destroy",
            b"destroy ",
            b"destroy 07",
            b"destroy -1",
            b"destroy 32752",
            b"destroy 1 2",
            b"destroy 1\n",
            b"destroy\t1",
            b"create\0",
            b"rm -rf /",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Request::parse(b"destroy 99999"), Err(AgentError::BadDomain));
        assert!(Request::parse(&[b'c'; 241]).is_err());
    }

    #[test]
    fn answers_round_trip_and_reject_everything_else() {
        for a in [
            Answer::Created(DomId(12)),
            Answer::Destroyed,
            Answer::error("max-domains (2) reached"),
            Answer::error(""),
        ] {
            assert_eq!(Answer::parse(a.value().as_bytes()), Ok(a));
        }
        assert_eq!(
            Answer::error("bad\nline\u{7f}é"),
            Answer::Error("bad?line??".into())
        );
        assert_eq!(Answer::error(&"x".repeat(500)).value().len(), 6 + MAX_ERROR);
        for bad in [
            &b"created"[..],
            b"created x",
            b"created 32767",
            b"destroyed ",
            b"ok",
            b"error\nx",
            b"error \x01",
        ] {
            assert!(Answer::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("error {}", "x".repeat(MAX_ERROR + 1));
        assert!(Answer::parse(long.as_bytes()).is_err());
    }
}
