//! What a person types, read as the contract says: words, and phrases in
//! double quotes. Nothing else is syntax, so no input is an error: `c++`,
//! `a:b` or a lone quote are words like any other.

/// The words and phrases of a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    /// Each must match.
    pub words: Vec<String>,
    /// Each must match, its words in order.
    pub phrases: Vec<String>,
}

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// Most words and phrases in one query.
pub const MAX_TERMS: usize = 32;

impl Terms {
    /// Reads `q`.
    pub fn parse(q: &str) -> Terms {
        let mut terms = Terms::default();
        let mut rest = q;
        while let Some(open) = rest.find('"') {
            terms.add_words(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('"') {
                Some(close) => {
                    let phrase = after[..close].trim();
                    if !phrase.is_empty() {
                        terms.phrases.push(phrase.to_owned());
                    }
                    rest = &after[close + 1..];
                }
                // An unclosed quote: the rest are words.
                None => {
                    rest = after;
                    break;
                }
            }
        }
        terms.add_words(rest);
        terms
    }

    fn add_words(&mut self, text: &str) {
        self.words
            .extend(text.split_whitespace().map(str::to_owned));
    }

    /// Nothing to match: the filters alone select.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty() && self.phrases.is_empty()
    }

    /// How many words and phrases.
    pub fn len(&self) -> usize {
        self.words.len() + self.phrases.len()
    }
}

/// Whether `body` holds a link (`http://`, `https://` or `www.`).
pub fn has_link(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    lower.contains("http://") || lower.contains("https://") || lower.contains("www.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quoted_phrases() {
        let t = Terms::parse(r#"  lunch "next friday" c++ a:b "#);
        assert_eq!(t.words, ["lunch", "c++", "a:b"]);
        assert_eq!(t.phrases, ["next friday"]);
        let t = Terms::parse(r#"a "unclosed phrase"#);
        assert_eq!(t.words, ["a", "unclosed", "phrase"]);
        assert!(t.phrases.is_empty());
        assert!(Terms::parse(r#" "" "#).is_empty());
        assert_eq!(Terms::parse("x y").len(), 2);
    }

    #[test]
    fn links_are_seen() {
        assert!(has_link("see https://example.com/x"));
        assert!(has_link("WWW.example.com"));
        assert!(!has_link("no link here, just http"));
    }
}
