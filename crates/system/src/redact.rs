//! URLs fit for a log line or an error message: no password, no secret in
//! the query string.

use url::Url;

/// What a redacted secret is replaced with.
const REDACTED: &str = "***";

/// Query parameters whose values are secrets (compared case-insensitively):
/// PostgreSQL's `password`, and the tokens and keys other URLs carry.
const SECRET_QUERY_KEYS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "token",
    "secret",
    "key",
    "sslpassword",
];

/// `url` without its password and without the values of secret query
/// parameters. Something that is not a URL with an authority (an SQLite
/// path such as `sqlite:kiban.db`) is returned as it is: it has no
/// credentials.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.cannot_be_a_base() {
        return url.to_owned();
    }
    let secret_query = parsed.query_pairs().any(|(key, _)| is_secret_key(&key));
    if parsed.password().is_none() && !secret_query {
        // Nothing to hide: the URL as given, not as `Url` would normalise it.
        return url.to_owned();
    }
    if parsed.password().is_some() && parsed.set_password(Some(REDACTED)).is_err() {
        return url.to_owned();
    }
    if secret_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_key(&key) {
                    REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // `Url` percent-encodes the asterisks of the replacement; decode them
    // back so the line reads as a human expects.
    parsed.to_string().replace("%2A%2A%2A", REDACTED)
}

fn is_secret_key(key: &str) -> bool {
    SECRET_QUERY_KEYS
        .iter()
        .any(|secret| key.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn the_password_of_user_password_at_host_is_hidden() {
        assert_eq!(
            redact_url("postgres://kiban:s3cret@db.example:5432/kiban"),
            "postgres://kiban:***@db.example:5432/kiban"
        );
    }

    #[test]
    fn a_user_without_a_password_is_kept() {
        assert_eq!(
            redact_url("postgres://kiban@127.0.0.1:5432/kiban"),
            "postgres://kiban@127.0.0.1:5432/kiban"
        );
    }

    #[test]
    fn secrets_in_the_query_string_are_hidden_and_other_parameters_kept() {
        assert_eq!(
            redact_url("postgres://kiban@db/kiban?sslmode=require&password=hunter2"),
            "postgres://kiban@db/kiban?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("nats://127.0.0.1:4222?Token=abc"),
            "nats://127.0.0.1:4222?Token=***"
        );
    }

    #[test]
    fn an_at_sign_in_the_password_does_not_leak_its_start() {
        let redacted = redact_url("postgres://kiban:p%40ss@db/kiban");
        assert_eq!(redacted, "postgres://kiban:***@db/kiban");
    }

    #[test]
    fn sqlite_paths_are_not_changed() {
        assert_eq!(
            redact_url("sqlite://./kiban-data/kiban.db"),
            "sqlite://./kiban-data/kiban.db"
        );
        assert_eq!(redact_url("sqlite:kiban.db"), "sqlite:kiban.db");
    }
}
