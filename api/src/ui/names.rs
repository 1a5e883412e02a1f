//! Names on the office screen (issue 21): the insured person's name and
//! kana are sealed personal fields (like the address), opened with the
//! person's key for an office that may see the person, and shown as
//! 忘却済み once the person was forgotten (docs/ui.md, "Names").
//!
//! - **Search** ([`normalise`]): sealed values cannot be indexed in clear,
//!   so a name search opens the names of the office's caseload page in
//!   memory and compares them normalised (NFKC, hiragana as katakana, no
//!   spaces or middle dots); nothing derived from a name is stored.
//! - **The access log** ([`NameReads`]): a name shown is a logged read of
//!   the person (`insured.record_viewed`, the same decision as the person
//!   page), once per person per staff session: the first caseload page of
//!   a session that shows a person's name logs it; later pages and the
//!   live refreshes of the same session do not log it again.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use super::staff::SESSION_LIFETIME;

/// Staff sessions whose logged names a process remembers; past this, the
/// oldest are forgotten (their next page logs its names again: more
/// logging, never less).
const NAME_SESSIONS_MAX: usize = 10_000;

/// The text as a name search compares it: NFKC (half-width katakana and
/// full-width Latin become their usual forms), hiragana as katakana, Latin
/// lower-case, without spaces (ASCII and 全角) or middle dots (・).
pub fn normalise(text: &str) -> String {
    text.nfkc()
        .filter(|c| !c.is_whitespace() && *c != '・' && *c != '･')
        .map(|c| match c {
            // ぁ..ゖ and ゝゞ: the katakana is 0x60 above.
            '\u{3041}'..='\u{3096}' | '\u{309D}' | '\u{309E}' => {
                char::from_u32(c as u32 + 0x60).unwrap_or(c)
            }
            _ => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether `needle` (already [`normalise`]d, not empty) is part of any of
/// `texts`, normalised.
pub fn matches<'a>(needle: &str, texts: impl IntoIterator<Item = &'a str>) -> bool {
    texts
        .into_iter()
        .any(|text| normalise(text).contains(needle))
}

/// Per staff session (the SHA-256 of its CSRF token, which is unique to
/// the session), the persons whose name reads this process has logged.
/// A process-wide memory, not the database: losing it (a restart, another
/// API process) only logs a read again.
pub struct NameReads {
    sessions: Mutex<HashMap<[u8; 32], SessionReads>>,
}

/// When a session first logged a name, and whose names it logged.
type SessionReads = (DateTime<Utc>, HashSet<String>);

/// The process's [`NameReads`]. Sessions are random 32-byte secrets, so
/// servers sharing the process (tests) never share an entry.
pub static NAME_READS: LazyLock<NameReads> = LazyLock::new(|| NameReads {
    sessions: Mutex::new(HashMap::new()),
});

impl NameReads {
    fn session(csrf: &str) -> [u8; 32] {
        Sha256::digest(csrf.as_bytes()).into()
    }

    /// Whether the read of `person`'s name in the session of `csrf` was
    /// logged already.
    pub fn logged(&self, csrf: &str, person: &str) -> bool {
        // A std mutex: held for a lookup, never across an await.
        let sessions = self.sessions.lock().expect("name reads lock");
        sessions
            .get(&Self::session(csrf))
            .is_some_and(|(_, persons)| persons.contains(person))
    }

    /// Remembers that the read of `person`'s name was logged in the session
    /// of `csrf` at `now`; sessions older than a session's lifetime go.
    pub fn remember(&self, csrf: &str, person: &str, now: DateTime<Utc>) {
        let lifetime = chrono::Duration::from_std(SESSION_LIFETIME).expect("a short duration");
        let mut sessions = self.sessions.lock().expect("name reads lock");
        sessions.retain(|_, (since, _)| *since + lifetime > now);
        if sessions.len() >= NAME_SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, (since, _))| *since)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions
            .entry(Self::session(csrf))
            .or_insert_with(|| (now, HashSet::new()))
            .1
            .insert(person.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hiragana_half_width_and_spaces_match_the_katakana_name() {
        let kana = "ヤマダ　タロウ";
        for query in ["やまだ", "ﾔﾏﾀﾞ", "ヤマダタロウ", "やまだ たろう", "たろう"]
        {
            assert!(matches(&normalise(query), [kana]), "{query}");
        }
        assert!(!matches(&normalise("すずき"), [kana]));
        assert!(matches(&normalise("山田"), ["山田 太郎"]));
        assert!(matches(&normalise("ＹＡＭＡ"), ["Yamada"]));
    }

    #[test]
    fn a_session_remembers_its_logged_names_until_its_lifetime_ends() {
        let reads = NameReads {
            sessions: Mutex::new(HashMap::new()),
        };
        let now = Utc::now();
        assert!(!reads.logged("csrf-a", "131016-0000012345"));
        reads.remember("csrf-a", "131016-0000012345", now);
        assert!(reads.logged("csrf-a", "131016-0000012345"));
        assert!(!reads.logged("csrf-b", "131016-0000012345"));
        let later = now + chrono::Duration::from_std(SESSION_LIFETIME).unwrap();
        reads.remember("csrf-b", "131016-0000012345", later);
        assert!(!reads.logged("csrf-a", "131016-0000012345"));
    }
}
