//! Splitting text into case-folded words and tabulating how often each occurs, for the `wordfreq` example.
//!
//! A word is a maximal run of letters, digits and apostrophes (Unicode-aware, so "naïve" and "Straße" are
//! single words). The typographic apostrophe `’` counts as `'`, and apostrophes at either end of a run are
//! dropped, so quoting ('like this') does not create new words while "don't" stays one word.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Calls `on_word` with every word of `text`, lower-cased and with apostrophes normalised.
pub fn for_each_word(text: &str, mut on_word: impl FnMut(String)) {
    for run in text.split(|c: char| !is_word_char(c)) {
        let trimmed = run.trim_matches(is_apostrophe);
        if !trimmed.is_empty() {
            on_word(trimmed.replace('\u{2019}', "'").to_lowercase());
        }
    }
}

/// The words of `text` as a vector; convenient for tests and small inputs.
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for_each_word(text, |word| words.push(word));
    words
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_apostrophe(c)
}

/// How often each word occurred, across every text added so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WordCounts {
    /// Kept sorted so the JSON output needs no extra sort and is byte-for-byte deterministic.
    counts: BTreeMap<String, u64>,
    total: u64,
}

impl WordCounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts every word of `text`. Texts are split separately, so a word never spans two of them.
    pub fn add_text(&mut self, text: &str) {
        for_each_word(text, |word| {
            *self.counts.entry(word).or_insert(0) += 1;
            self.total += 1;
        });
    }

    /// Number of words seen, repeats included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of different words seen.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    pub fn count(&self, word: &str) -> u64 {
        self.counts.get(word).copied().unwrap_or(0)
    }

    /// The `limit` most frequent words, by count descending and then by word ascending (byte order).
    pub fn top(&self, limit: usize) -> Vec<(&str, u64)> {
        let mut entries: Vec<(&str, u64)> = self.counts.iter().map(|(word, &count)| (word.as_str(), count)).collect();
        // The map is already in word order and the sort is stable, so sorting by count alone suffices.
        entries.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
        entries.truncate(limit);
        entries
    }

    /// The whole table as one line of JSON, `{"total": T, "distinct": D, "words": {"word": count, ...}}`,
    /// with keys in byte order and a trailing newline. Written by hand to keep serde out of the example.
    pub fn to_json(&self) -> String {
        let mut json = format!("{{\"total\": {}, \"distinct\": {}, \"words\": {{", self.total, self.distinct());
        for (position, (word, count)) in self.counts.iter().enumerate() {
            if position > 0 {
                json.push_str(", ");
            }
            push_json_string(&mut json, word);
            let _ = write!(json, ": {count}");
        }
        json.push_str("}}\n");
        json
    }
}

/// Appends `text` as a JSON string literal. Words cannot contain quotes or control characters, but the
/// escaping keeps the writer correct for any input.
fn push_json_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_anything_but_letters_digits_and_apostrophes() {
        assert_eq!(
            split_words("Hello, world! It's 2024 -- don't stop_now."),
            ["hello", "world", "it's", "2024", "don't", "stop", "now"]
        );
    }

    #[test]
    fn folds_case_and_handles_unicode_letters() {
        assert_eq!(split_words("Naïve NAÏVE Straße ÉCOLE"), ["naïve", "naïve", "straße", "école"]);
    }

    #[test]
    fn normalises_and_trims_apostrophes() {
        assert_eq!(split_words("'quoted' don’t ''' rock'n'roll"), ["quoted", "don't", "rock'n'roll"]);
    }

    #[test]
    fn empty_and_separator_only_texts_have_no_words() {
        assert!(split_words("").is_empty());
        assert!(split_words(" \n\t--!?").is_empty());
    }

    #[test]
    fn top_sorts_by_count_then_word() {
        let mut counts = WordCounts::new();
        counts.add_text("b a c b a d b");
        counts.add_text("C");
        assert_eq!(counts.total(), 8);
        assert_eq!(counts.distinct(), 4);
        assert_eq!(counts.top(10), [("b", 3), ("a", 2), ("c", 2), ("d", 1)]);
        assert_eq!(counts.top(2), [("b", 3), ("a", 2)]);
        assert!(counts.top(0).is_empty());
    }

    #[test]
    fn json_has_sorted_keys_and_escapes() {
        let mut counts = WordCounts::new();
        counts.add_text("zebra apple Apple it's");
        assert_eq!(
            counts.to_json(),
            "{\"total\": 4, \"distinct\": 3, \"words\": {\"apple\": 2, \"it's\": 1, \"zebra\": 1}}\n"
        );
        assert_eq!(WordCounts::new().to_json(), "{\"total\": 0, \"distinct\": 0, \"words\": {}}\n");
        let mut escaped = String::new();
        push_json_string(&mut escaped, "a\"b\\c\u{1}");
        assert_eq!(escaped, "\"a\\\"b\\\\c\\u0001\"");
    }
}
