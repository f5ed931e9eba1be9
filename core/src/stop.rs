//! Stop strings over streamed text: text is let out only once no stop
//! string can still begin in it, so a stop split across tokens is cut
//! exactly and never half-shown.

use alloc::string::String;
use alloc::vec::Vec;

/// Watches generated text for any of a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received and not yet let out.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new(), stopped: false }
    }

    /// Whether a stop string was seen; no text comes out after it.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes `piece` and returns the text that is now safe to show.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        let first_stop = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let out = String::from(&self.held[..at]);
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that some stop string starts with.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = String::from(&self.held[..cut]);
        self.held.drain(..cut);
        out
    }

    /// The text still held when generation ends without a stop.
    pub fn finish(&mut self) -> String {
        core::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| String::from(*s)).collect());
        let mut out: String = pieces.iter().map(|p| m.push(p)).collect();
        if !m.stopped() {
            out.push_str(&m.finish());
        }
        (out, m.stopped())
    }

    #[test]
    fn a_stop_split_across_pieces_is_cut_exactly() {
        assert_eq!(run(&["\n\n"], &["Paris", ".\n", "\nThe"]), ("Paris.".into(), true));
        assert_eq!(run(&["END"], &["a E", "N", "D b"]), ("a ".into(), true));
        // A near miss lets the held text out.
        assert_eq!(run(&["END"], &["a E", "N", "x"]), ("a ENx".into(), false));
        assert_eq!(run(&["END"], &["a EN"]), ("a EN".into(), false));
        // The earliest of several stops wins.
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
        assert_eq!(run(&[], &["any", "thing"]), ("anything".into(), false));
    }

    #[test]
    fn held_text_is_only_a_possible_stop_start() {
        let mut m = StopMatcher::new(vec!["über".into()]);
        assert_eq!(m.push("grün ü"), "grün ");
        assert_eq!(m.push("b"), "");
        assert_eq!(m.push("x"), "übx");
    }
}
