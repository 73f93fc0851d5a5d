//! Rules every piece of text and every instant from outside obeys before it reaches the
//! database, so both backends store and serve back the same values.
//!
//! Postgres cannot store NUL in `text`, and SQLite stores it and serves it back truncated; a
//! date-time past year 9999 (or before year 1) cannot be written as RFC 3339 at all. Such
//! values are refused at the edge with a message naming the field.

use chrono::{DateTime, Datelike, Utc};

use crate::error::Violation;

/// The instants a drop (or anything else scheduled) may use.
pub const EARLIEST_YEAR: i32 = 2000;
pub const LATEST_YEAR: i32 = 9999;

/// One line of text: trimmed, not blank, at most `max_chars` characters, and no control
/// characters at all (no NUL, ESC, CR or LF).
///
/// # Errors
/// The rule it broke, naming `field`.
pub fn single_line(field: &'static str, raw: &str, max_chars: usize) -> Result<String, Violation> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Violation::Blank(field));
    }
    if text.chars().count() > max_chars {
        return Err(Violation::TooLong {
            field,
            max: max_chars,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(Violation::ControlCharacters(field));
    }
    Ok(text.to_owned())
}

/// Free text that may span lines: at most `max_chars` characters; tabs and line breaks are
/// the only control characters allowed.
///
/// # Errors
/// The rule it broke, naming `field`.
pub fn multi_line(field: &'static str, raw: &str, max_chars: usize) -> Result<String, Violation> {
    if raw.chars().count() > max_chars {
        return Err(Violation::TooLong {
            field,
            max: max_chars,
        });
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Violation::ControlCharactersBesideLineBreaks(field));
    }
    Ok(raw.to_owned())
}

/// Whether `raw` holds any control character (NUL included).
pub fn has_control(raw: &str) -> bool {
    raw.chars().any(char::is_control)
}

/// An instant between the start of year 2000 and the end of year 9999.
///
/// # Errors
/// [`Violation::YearOutOfRange`], naming `field` and the range.
pub fn instant(field: &'static str, at: DateTime<Utc>) -> Result<DateTime<Utc>, Violation> {
    if (EARLIEST_YEAR..=LATEST_YEAR).contains(&at.year()) {
        Ok(at)
    } else {
        Err(Violation::YearOutOfRange {
            field,
            earliest: EARLIEST_YEAR,
            latest: LATEST_YEAR,
        })
    }
}

/// A link to a web page or image: `https://` and a host name, or `http://` on the local
/// machine (development: `localhost`, `127.0.0.1`, `[::1]`); an optional port; then a path,
/// query or fragment without spaces or control characters. Anything a browser would run or
/// inline (`javascript:`, `data:`) is refused. The same rule as the API's schema pattern
/// `^(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1|\[::1\]))(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f-\x9f]*)?$`.
///
/// # Errors
/// [`Violation::NotAWebUrl`] or [`Violation::TooLong`], naming `field`.
pub fn web_url(field: &'static str, raw: &str) -> Result<String, Violation> {
    let refused = || Violation::NotAWebUrl(field);
    if raw.chars().count() > 2000 {
        return Err(Violation::TooLong { field, max: 2000 });
    }
    let after_host = if let Some(rest) = raw.strip_prefix("https://") {
        let host_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        if host_len == 0 {
            return Err(refused());
        }
        &rest[host_len..]
    } else if let Some(rest) = raw.strip_prefix("http://") {
        ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .find_map(|host| rest.strip_prefix(host))
            .ok_or_else(refused)?
    } else {
        return Err(refused());
    };
    let after_port = match after_host.strip_prefix(':') {
        Some(port) => {
            let digits = port
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(port.len());
            if !(1..=5).contains(&digits) {
                return Err(refused());
            }
            &port[digits..]
        }
        None => after_host,
    };
    let tail_ok = after_port.is_empty()
        || (after_port.starts_with(['/', '?', '#'])
            && !after_port
                .chars()
                .any(|c| c <= ' ' || ('\u{7f}'..='\u{9f}').contains(&c)));
    if tail_ok {
        Ok(raw.to_owned())
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn single_lines_refuse_every_control_character() {
        for bad in ["a\u{0}b", "a\u{1b}[31mb", "a\r\nb", "a\tb", "   "] {
            assert!(
                single_line("name", bad, 100).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(single_line("name", " Acacia ", 100), Ok("Acacia".into()));
        assert!(single_line("name", &"x".repeat(101), 100).is_err());
    }

    #[test]
    fn multi_lines_keep_line_breaks_but_not_nul() {
        assert!(multi_line("description", "one\nline\ttwo\r\n", 100).is_ok());
        assert!(multi_line("description", "a\u{0}b", 100).is_err());
        assert!(multi_line("description", "a\u{7}b", 100).is_err());
    }

    #[test]
    fn instants_stay_within_years_2000_to_9999() {
        let ok = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).single();
        let early = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).single();
        assert!(ok.is_some_and(|at| instant("startsAt", at).is_ok()));
        assert!(early.is_some_and(|at| instant("startsAt", at).is_err()));
        assert!(instant("startsAt", DateTime::<Utc>::MIN_UTC).is_err());
        assert!(instant("startsAt", DateTime::<Utc>::MAX_UTC).is_err());
    }

    #[test]
    fn only_https_and_local_http_urls_are_links() {
        for good in [
            "https://cdn.example.com/a.png",
            "https://cdn.example.com",
            "https://cdn.example.com:8443/a.png?w=2#top",
            "http://localhost:3000/x.png",
            "http://127.0.0.1/x.png",
            "http://[::1]:8080",
        ] {
            assert!(web_url("imageUrl", good).is_ok(), "{good:?} was refused");
        }
        for bad in [
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "http://example.com/a.png",
            "https://",
            "//example.com/a.png",
            "https://exa mple.com",
            "https://example.com/\u{0}",
            "https://example.com/a b",
            "https://example.com:123456",
            "http://localhost.evil.com/",
            "http://127.0.0.1@evil.com/",
            " https://example.com",
        ] {
            assert!(web_url("imageUrl", bad).is_err(), "{bad:?} was accepted");
        }
    }
}
