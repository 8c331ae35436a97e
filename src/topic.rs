//! Topic patterns with RabbitMQ's topic-exchange semantics, matched against
//! event types and stream names.
//!
//! A topic and a pattern are split at every `.` into words. In a pattern, the
//! word `*` stands for exactly one word and the word `#` for zero or more
//! words; every other word (including one such as `a*` or `#b`, which only
//! contains those characters) must equal the topic's word. Empty words are
//! words: `a..b` has three, the middle one empty, and `*` matches it. As in
//! RabbitMQ, the empty string has no word at all, so the pattern `#` and the
//! pattern `` (empty) match it and `*` does not.
//!
//! This module owns what it means for a topic to match a pattern; it must
//! never decide how candidates are found or do I/O.

/// One word of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// This exact word.
    Literal(String),
    /// `*`: exactly one word.
    One,
    /// `#`: zero or more words.
    Many,
}

/// A compiled topic pattern that compares, prints and serializes as its source.
#[derive(Clone)]
pub struct TopicPattern {
    source: String,
    words: Vec<Word>,
}

/// The words of a topic or pattern: none for the empty string, else the
/// pieces between the dots (empty pieces included).
fn words(text: &str) -> impl Iterator<Item = &str> {
    let empty = text.is_empty();
    text.split('.').filter(move |_| !empty)
}

impl TopicPattern {
    /// Compiles a pattern; every string is a valid pattern.
    pub fn new(source: &str) -> Self {
        let mut compiled: Vec<Word> = Vec::new();
        for w in words(source) {
            let word = match w {
                "*" => Word::One,
                "#" => Word::Many,
                other => Word::Literal(other.to_string()),
            };
            // `#.#` means what `#` means; one is enough for the matcher.
            if word == Word::Many && compiled.last() == Some(&Word::Many) {
                continue;
            }
            compiled.push(word);
        }
        TopicPattern {
            source: source.to_string(),
            words: compiled,
        }
    }

    /// The pattern's source.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The topic every match has, if the pattern has no wildcard word.
    pub fn literal(&self) -> Option<&str> {
        self.words
            .iter()
            .all(|w| matches!(w, Word::Literal(_)))
            .then_some(self.source.as_str())
    }

    /// True if `topic` matches the pattern. Allocates nothing: called on
    /// every event a read by pattern decodes.
    pub fn is_match(&self, topic: &str) -> bool {
        let p = &self.words;
        // Where the topic's next word starts (`None`: no word left).
        let mut t = (!topic.is_empty()).then_some(0usize);
        let mut i = 0usize;
        // The latest `#` seen: the pattern index after it, and where in the
        // topic the words it has taken end. A mismatch gives it one word
        // more and tries again from there; an earlier `#` need never take
        // more, since the later one can take whatever it would have.
        let mut many: Option<(usize, usize)> = None;
        while let Some(at) = t {
            let (word, next) = next_word(topic, at);
            match p.get(i) {
                Some(Word::Many) => {
                    many = Some((i + 1, at));
                    i += 1;
                    continue;
                }
                Some(Word::One) => {
                    i += 1;
                    t = next;
                    continue;
                }
                Some(Word::Literal(lit)) if lit == word => {
                    i += 1;
                    t = next;
                    continue;
                }
                _ => {}
            }
            let Some((after, taken)) = many else {
                return false;
            };
            // The `#` takes the word at `taken` too.
            let grown = next_word(topic, taken).1;
            i = after;
            t = grown;
            many = grown.map(|g| (after, g));
        }
        // No word left: what is left of the pattern must take none.
        p[i.min(p.len())..].iter().all(|w| *w == Word::Many)
    }
}

/// The word of `topic` starting at byte `at`, and where the next one starts
/// (`None` after the last word).
fn next_word(topic: &str, at: usize) -> (&str, Option<usize>) {
    let rest = topic.get(at..).unwrap_or("");
    // A byte loop: words are short, shorter than a vectorised search pays for.
    match rest.bytes().position(|b| b == b'.') {
        Some(d) => (&rest[..d], Some(at + d + 1)),
        None => (rest, None),
    }
}

impl std::fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for TopicPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TopicPattern {}

impl serde::Serialize for TopicPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for TopicPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TopicPattern::new(&String::deserialize(d)?))
    }
}

/// True if any of `patterns` matches `topic` (none given: true).
pub fn any_match(patterns: &[TopicPattern], topic: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.is_match(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, topic: &str) -> bool {
        TopicPattern::new(pattern).is_match(topic)
    }

    #[test]
    fn literal_words_match_only_themselves() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b.c", "a.b.d"));
        assert!(!m("a.b", "a.bb"));
        assert!(m("order", "order"));
        assert!(!m("order", "Order"));
        assert_eq!(TopicPattern::new("a.b").literal(), Some("a.b"));
        assert_eq!(TopicPattern::new("a.*").literal(), None);
    }

    #[test]
    fn star_is_exactly_one_word() {
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(!m("*", ""));
        assert!(m("hook.triggered.*", "hook.triggered.push"));
        assert!(!m("hook.triggered.*", "hook.triggered"));
        assert!(!m("hook.triggered.*", "hook.triggered.push.main"));
        assert!(m("*.b.*", "a.b.c"));
        assert!(!m("*.b.*", "b.c"));
        assert!(m("*.*", "a.b"));
        assert!(!m("*.*", "a"));
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        assert!(m("#", "a"));
        assert!(m("#", "a.b.c"));
        assert!(m("#", ""));
        assert!(m("app.lifecycle.#", "app.lifecycle"));
        assert!(m("app.lifecycle.#", "app.lifecycle.started"));
        assert!(m("app.lifecycle.#", "app.lifecycle.started.again"));
        assert!(!m("app.lifecycle.#", "app.lifecyclex"));
        assert!(!m("app.lifecycle.#", "app"));
        assert!(m("#.end", "end"));
        assert!(m("#.end", "a.b.end"));
        assert!(!m("#.end", "a.b.end.x"));
        assert!(m("a.#.b", "a.b"));
        assert!(m("a.#.b", "a.x.b"));
        assert!(m("a.#.b", "a.x.y.b"));
        assert!(m("a.#.b", "a.b.b"));
        assert!(!m("a.#.b", "a.b.c"));
        assert!(!m("a.#.b", "b"));
        assert!(m("#.#", "a.b"));
        assert!(m("#.#", ""));
        assert!(m("a.#.#.b", "a.b"));
        assert!(m("#.*", "a"));
        assert!(!m("#.*", ""));
        assert!(m("*.#", "a"));
        assert!(m("*.#", "a.b.c"));
        assert!(!m("*.#", ""));
        assert!(m("#.b.#", "b"));
        assert!(m("#.b.#", "a.b.c"));
        assert!(!m("#.b.#", "a.c"));
        assert!(m("a.*.#", "a.b"));
        assert!(!m("a.*.#", "a"));
    }

    #[test]
    fn empty_words_are_words() {
        // "a..b" is three words, the middle one empty.
        assert!(m("a.*.b", "a..b"));
        assert!(m("a..b", "a..b"));
        assert!(!m("a.b", "a..b"));
        assert!(m("a.#.b", "a..b"));
        // A leading or trailing dot makes an empty first or last word.
        assert!(m("*.a", ".a"));
        assert!(m("a.*", "a."));
        assert!(!m("a", "a."));
        assert!(m("a.", "a."));
        assert!(m("*.*", "."));
        assert!(!m("*", "."));
        assert!(m("#", "."));
        // The empty string has no word.
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
        assert!(!m("", "."));
    }

    #[test]
    fn wildcard_characters_inside_a_word_are_literal() {
        assert!(m("a*", "a*"));
        assert!(!m("a*", "ab"));
        assert!(m("#b", "#b"));
        assert!(!m("#b", "b"));
        assert!(!m("a.#b", "a.x.b"));
        assert!(m("order-*", "order-*"));
        assert!(!m("order-*", "order-1"));
    }

    #[test]
    fn patterns_compare_and_serialize_as_their_source() {
        let p = TopicPattern::new("a.#.#.b");
        assert_eq!(p.as_str(), "a.#.#.b");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"a.#.#.b\"");
        let back: TopicPattern = serde_json::from_str("\"a.#.#.b\"").unwrap();
        assert_eq!(back, p);
        assert!(back.is_match("a.b"));
        assert_ne!(TopicPattern::new("a.#"), TopicPattern::new("a.#.#"));
    }

    #[test]
    fn several_patterns_are_or_ed() {
        let ps = vec![
            TopicPattern::new("app.lifecycle.#"),
            TopicPattern::new("hook.triggered.*"),
        ];
        assert!(any_match(&ps, "app.lifecycle.stopped"));
        assert!(any_match(&ps, "hook.triggered.x"));
        assert!(!any_match(&ps, "activity.x"));
        assert!(any_match(&[], "anything"));
    }

    /// A second, recursive reading of the rules, checked against the matcher
    /// on every pattern and topic made of a few words.
    fn reference(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|k| reference(rest, &t[k..])),
            Some((&"*", rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((w, rest)) => t.first() == Some(w) && reference(rest, &t[1..]),
        }
    }

    #[test]
    fn matcher_agrees_with_a_recursive_reading_on_all_short_inputs() {
        let pattern_words = ["a", "b", "", "*", "#"];
        let topic_words = ["a", "b", ""];
        let mut patterns: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = patterns
                .iter()
                .filter(|p| p.len() < 4)
                .flat_map(|p| {
                    pattern_words.iter().map(move |w| {
                        let mut q = p.clone();
                        q.push(w);
                        q
                    })
                })
                .collect();
            patterns.extend(longer);
            patterns.sort();
            patterns.dedup();
        }
        let mut topics: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = topics
                .iter()
                .filter(|t| t.len() < 4)
                .flat_map(|t| {
                    topic_words.iter().map(move |w| {
                        let mut u = t.clone();
                        u.push(w);
                        u
                    })
                })
                .collect();
            topics.extend(longer);
            topics.sort();
            topics.dedup();
        }
        let mut checked = 0;
        for p in &patterns {
            // A pattern of one empty word is the string "", which has no word.
            let p_src = p.join(".");
            let p_words: Vec<&str> = if p_src.is_empty() { vec![] } else { p.clone() };
            let compiled = TopicPattern::new(&p_src);
            for t in &topics {
                let t_src = t.join(".");
                let t_words: Vec<&str> = if t_src.is_empty() { vec![] } else { t.clone() };
                assert_eq!(
                    compiled.is_match(&t_src),
                    reference(&p_words, &t_words),
                    "pattern {p_src:?} topic {t_src:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// Long topics, where a `#` must give back words it took, more than once.
    #[test]
    fn matcher_agrees_with_a_recursive_reading_on_long_topics() {
        let patterns = [
            "#.a.#.b",
            "#.a.#.b.#",
            "a.#.b.*",
            "*.#.a.*.#.b",
            "#.a.a.b",
            "#.*.b.#.a",
            "a.#",
        ];
        let mut checked = 0;
        for seed in 0u64..400 {
            // Topics of up to 24 words drawn from a, b and c.
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let len = (seed % 25) as usize;
            let t: Vec<&str> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ["a", "b", "c"][(x % 3) as usize]
                })
                .collect();
            let topic = t.join(".");
            for p in patterns {
                let words: Vec<&str> = p.split('.').collect();
                assert_eq!(
                    TopicPattern::new(p).is_match(&topic),
                    reference(&words, &t),
                    "pattern {p:?} topic {topic:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 2800);
    }
}
