//! Text from outside (an operator's name and reason, an order id, a
//! dead-lettered body, a provider's error) as a terminal may show it:
//! control characters could move the cursor or rewrite earlier lines, and
//! bidi overrides and zero-width characters make one id look like another.
//! Each is written as `\u{XXXX}`; `--json` output is JSON-escaped already.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as itself.
fn unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space, joiners, marks
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}') // zero-width no-break space
}

/// `text` with every character unsafe on a terminal escaped as `\u{..}`;
/// borrowed when nothing needs it.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_on_terminal(c) {
            out.push_str(&format!("\\u{{{:X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn controls_bidi_and_zero_width_characters_are_escaped() {
        assert!(matches!(
            shown("ann: provider back"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(shown("a\x1b[2Jb"), "a\\u{1B}[2Jb");
        assert_eq!(shown("line\nnext\r"), "line\\u{A}next\\u{D}");
        assert_eq!(shown("o-\u{202E}1-o"), "o-\\u{202E}1-o");
        assert_eq!(shown("o\u{200B}1"), "o\\u{200B}1");
        assert_eq!(
            shown("ö-1 🛒"),
            "ö-1 🛒",
            "other non-ASCII text is shown as it is"
        );
    }
}
