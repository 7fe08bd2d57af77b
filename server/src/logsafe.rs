//! Escaping of user-controlled text before it reaches a log line or a
//! terminal (issue 14 item 11).
//!
//! Login names, exec command lines, repository strings that failed
//! validation, user agents and paths come from clients. Written raw, a `\n`
//! forges a whole log line and an ESC sequence drives the reader's terminal.
//! [`Escaped`] (and [`escape`]) render such a value with Rust's debug escapes
//! for every control character (`\n`, `\r`, `\t`, `\u{1b}`, ...), and
//! backslash as `\\` so an escape cannot be faked; printable text, UTF-8
//! included, stays as it is.

use std::fmt;

/// A value rendered with its control characters escaped; use it in
/// `tracing` fields (`user = %Escaped(&who.user)`) and in `format!`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' || c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// [`Escaped`] as an owned string.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("bob\nFAKE line"), "bob\\nFAKE line");
        assert_eq!(escape("x\u{1b}[31mred"), "x\\u{1b}[31mred");
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        assert_eq!(escape("c1\u{9b}2J"), "c1\\u{9b}2J");
        assert_eq!(escape("ünïcode/ok"), "ünïcode/ok");
    }
}
