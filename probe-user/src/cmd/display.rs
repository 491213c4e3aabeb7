//! Text another process controls (its comm, its cgroup's and pod's names,
//! its endpoints, its executable's build info) made safe for a terminal:
//! `doctor` and `top` print every such field through [`shown`]. JSON output
//! needs none of this (serde_json escapes control characters itself).
use std::{borrow::Cow, fmt::Write as _};

/// `s` with every control character (C0, DEL, C1: ESC among them) and every
/// bidirectional formatting character escaped as `\u{…}`: nothing in it can
/// move the cursor, clear, hide or recolour the screen, or reorder the text
/// that follows it.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hazard) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hazard(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn hazard(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(shown("api-server"), Cow::Borrowed("api-server")));
        assert_eq!(shown("/k8s/ns/pod-ü/c"), "/k8s/ns/pod-ü/c");
        assert_eq!(shown("\x1b[2J\x1b[8mevil"), "\\u{1b}[2J\\u{1b}[8mevil");
        assert_eq!(shown("a\r\nb\x07\x7f\u{9b}c"), "a\\u{d}\\u{a}b\\u{7}\\u{7f}\\u{9b}c");
        assert_eq!(shown("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert!(!shown("\u{2066}x\u{2069}").chars().any(hazard));
    }
}
