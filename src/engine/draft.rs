//! Prompt-lookup drafting for speculative decoding: guess a sequence's next tokens by finding
//! its latest n-gram earlier in its own tokens (prompt and output) and proposing what followed
//! there (vLLM's `ngram` method, llama.cpp's `lookup`).
//!
//! Owns: the drafting parameters and the search.
//! Must not: verify drafts or touch logits; the engine's verification keeps the output exactly
//! what plain decoding gives (`core`), so a bad draft only costs compute.

/// How drafts are proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLookup {
    /// Most draft tokens per step.
    pub num_tokens: usize,
    /// The longest and shortest n-gram matched; longer matches are tried first.
    pub max_ngram: usize,
    pub min_ngram: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup {
            num_tokens: 8,
            max_ngram: 3,
            min_ngram: 2,
        }
    }
}

impl PromptLookup {
    /// Up to `limit` (and `num_tokens`) tokens that followed the latest earlier occurrence of
    /// `tokens`' final n-gram, for the longest n in `min_ngram..=max_ngram` that occurs;
    /// empty when none does.
    pub fn propose<'t>(&self, tokens: &'t [u32], limit: usize) -> &'t [u32] {
        let want = self.num_tokens.min(limit);
        if want == 0 {
            return &[];
        }
        for n in (self.min_ngram.max(1)..=self.max_ngram).rev() {
            if let Some(found) = latest_match(tokens, n) {
                let end = (found + want).min(tokens.len());
                return &tokens[found..end];
            }
        }
        &[]
    }
}

/// Where the tokens after the latest earlier occurrence of `tokens`' last `n` tokens begin.
fn latest_match(tokens: &[u32], n: usize) -> Option<usize> {
    let len = tokens.len();
    if len <= n {
        return None;
    }
    let tail = &tokens[len - n..];
    // Occurrences start at i < len - n (the tail itself excluded); the latest is the most
    // relevant (a quoted passage being copied right now).
    (0..len - n).rev().find(|&i| &tokens[i..i + n] == tail).map(|i| i + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(num_tokens: usize, max_ngram: usize, min_ngram: usize) -> PromptLookup {
        PromptLookup {
            num_tokens,
            max_ngram,
            min_ngram,
        }
    }

    #[test]
    fn proposes_what_followed_the_latest_earlier_occurrence() {
        let l = lookup(3, 2, 1);
        // "5 6" occurs at 1 and 6; the latest earlier one (6) was followed by 9 1 5.
        let t = [4, 5, 6, 7, 8, 0, 5, 6, 9, 1, 5, 6];
        assert_eq!(l.propose(&t, 10), &[9, 1, 5]);
        assert_eq!(l.propose(&t, 2), &[9, 1], "capped by the caller's limit");
        assert_eq!(l.propose(&t, 0), &[] as &[u32]);
    }

    #[test]
    fn longer_ngrams_win_and_short_ones_are_the_fallback() {
        // Last 2 tokens "1 2" occur at 0 (followed by 3); the last token alone, "2", occurs
        // latest at 5 (followed by 8).
        let t = [1, 2, 3, 9, 7, 2, 8, 1, 2];
        assert_eq!(lookup(1, 2, 1).propose(&t, 5), &[3]);
        assert_eq!(lookup(1, 1, 1).propose(&t, 5), &[8]);
        // With min 3 nothing matches: no draft.
        assert_eq!(lookup(4, 3, 3).propose(&t, 5), &[] as &[u32]);
    }

    #[test]
    fn a_match_near_the_end_gives_a_short_draft_and_short_inputs_give_none() {
        let l = lookup(4, 2, 2);
        // The tail "3 3" also occurs at 0, followed by one token (the tail's own last) before the end.
        assert_eq!(l.propose(&[3, 3, 3], 4), &[3]);
        assert_eq!(l.propose(&[3, 3], 4), &[] as &[u32]);
        assert_eq!(l.propose(&[], 4), &[] as &[u32]);
    }
}
