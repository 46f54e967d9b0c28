//! Xenstore path syntax (`docs/misc/xenstore.txt`).
//!
//! A path is ASCII alphanumerics and `-/_@`; absolute paths start with `/`,
//! relative ones are relative to the caller's `/local/domain/<id>`; no
//! doubled or trailing slash; at most [`ABS_PATH_MAX`] bytes absolute and
//! [`REL_PATH_MAX`] relative. Special watch paths start with `@`. A path
//! element (a directory entry) is a non-empty run of the same characters
//! without `/`.

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// Why a path, element or token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Empty.
    Empty,
    /// Longer than the protocol allows.
    TooLong,
    /// A character outside `[A-Za-z0-9-/_@]`.
    BadChar,
    /// `//`, a trailing `/`, or a `/` inside an element.
    BadSlash,
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty xenstore path",
            PathError::TooLong => "xenstore path too long",
            PathError::BadChar => "character not allowed in a xenstore path",
            PathError::BadSlash => "misplaced '/' in a xenstore path",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PathError {}

const fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Checks a path for a request: absolute, relative, or special (`@…`).
pub fn check(path: &[u8]) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let max = if path[0] == b'/' {
        ABS_PATH_MAX
    } else {
        REL_PATH_MAX
    };
    if path.len() > max {
        return Err(PathError::TooLong);
    }
    if !path.iter().all(|&b| path_char(b)) {
        return Err(PathError::BadChar);
    }
    if path == b"/" {
        return Ok(());
    }
    if path.ends_with(b"/") || path.windows(2).any(|w| w == b"//") {
        return Err(PathError::BadSlash);
    }
    Ok(())
}

/// Checks an absolute path (what the daemon sends back in watch events
/// for absolute watches and in `GET_DOMAIN_PATH` replies).
pub fn check_absolute(path: &[u8]) -> Result<(), PathError> {
    check(path)?;
    if path[0] == b'/' {
        Ok(())
    } else {
        Err(PathError::BadSlash)
    }
}

/// Checks one path element (a directory entry name).
pub fn check_element(name: &[u8]) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name.len() > ABS_PATH_MAX {
        return Err(PathError::TooLong);
    }
    if name.contains(&b'/') {
        return Err(PathError::BadSlash);
    }
    if !name.iter().all(|&b| path_char(b)) {
        return Err(PathError::BadChar);
    }
    Ok(())
}

/// Checks a watch token: 1 to [`REL_PATH_MAX`] printable ASCII bytes
/// other than space (tokens are opaque to the daemon but must not
/// contain NUL; we keep them printable for logs).
pub fn check_token(token: &[u8]) -> Result<(), PathError> {
    if token.is_empty() {
        return Err(PathError::Empty);
    }
    if token.len() > REL_PATH_MAX {
        return Err(PathError::TooLong);
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(PathError::BadChar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check(b"/"), Ok(()));
        assert_eq!(check(b"/local/domain/3/data"), Ok(()));
        assert_eq!(check(b"data/ins-1"), Ok(()));
        assert_eq!(check(b"@releaseDomain"), Ok(()));
        assert_eq!(check(b""), Err(PathError::Empty));
        assert_eq!(check(b"/a//b"), Err(PathError::BadSlash));
        assert_eq!(check(b"/a/"), Err(PathError::BadSlash));
        assert_eq!(check(b"/a b"), Err(PathError::BadChar));
        assert_eq!(check(b"/a\0"), Err(PathError::BadChar));
        assert_eq!(check(&[b'a'; REL_PATH_MAX + 1]), Err(PathError::TooLong));
        assert_eq!(check_absolute(b"data"), Err(PathError::BadSlash));
        assert_eq!(check_element(b"ring-ref"), Ok(()));
        assert_eq!(check_element(b"a/b"), Err(PathError::BadSlash));
        assert_eq!(check_token(b"ins:1"), Ok(()));
        assert_eq!(check_token(b"a b"), Err(PathError::BadChar));
    }
}
