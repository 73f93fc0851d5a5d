//! Reads back the development outbox: without `SMTP_URL`, the worker writes every email as
//! `DATA_DIR/outbox/message-<id>.eml` (a complete RFC 5322 message). This turns the latest
//! ones into what a person wants to see: date, recipient, subject, the plain-text body and
//! its links. It understands the MIME our mailer writes (multipart, quoted-printable,
//! base64, RFC 2047 headers), not every message in the world.

use std::{
    io,
    path::{Path, PathBuf},
};

use base64::Engine;
use chrono::{DateTime, Utc};

/// One email as the outbox holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The ledger id in the file name (`email_messages.id`).
    pub id: i64,
    pub date: Option<DateTime<Utc>>,
    pub from: String,
    pub to: String,
    pub subject: String,
    /// The `text/plain` part, decoded.
    pub text: String,
    /// Every `http(s)://` link in the text, in order.
    pub links: Vec<String>,
}

/// The newest `limit` messages, newest first. A missing directory is an empty outbox; a file
/// that cannot be read is skipped (a message is written atomically, so this is rare).
///
/// # Errors
/// The directory exists but cannot be listed.
pub fn latest(dir: &Path, limit: usize) -> io::Result<Vec<OutboxMessage>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<(i64, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if let Some(id) = message_id(&path) {
            files.push((id, path));
        }
    }
    files.sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
    Ok(files
        .into_iter()
        .take(limit)
        .filter_map(|(id, path)| match std::fs::read(&path) {
            Ok(raw) => Some(parse(id, &raw)),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "outbox message unreadable");
                None
            }
        })
        .collect())
}

/// `message-00000042.eml` → 42; temporary and other files → `None`.
fn message_id(path: &Path) -> Option<i64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("message-")?
        .strip_suffix(".eml")?
        .parse()
        .ok()
}

/// Parses one message; what cannot be understood is left empty rather than refused.
pub fn parse(id: i64, raw: &[u8]) -> OutboxMessage {
    let text = String::from_utf8_lossy(raw);
    let entity = Entity::parse(&text);
    let header = |name: &str| entity.header(name).map(decode_words).unwrap_or_default();
    let date = entity
        .header("date")
        .and_then(|d| DateTime::parse_from_rfc2822(d.trim()).ok())
        .map(|d| d.with_timezone(&Utc));
    let text = entity.plain_text(0).unwrap_or_default();
    OutboxMessage {
        id,
        date,
        from: header("from"),
        to: header("to"),
        subject: header("subject"),
        links: links(&text),
        text,
    }
}

/// A MIME entity: unfolded headers and the raw body.
struct Entity<'a> {
    headers: Vec<(String, String)>,
    body: &'a str,
}

impl<'a> Entity<'a> {
    fn parse(raw: &'a str) -> Self {
        let (head, body) = split_head(raw);
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        Self { headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased, and the value of its `boundary` parameter.
    fn content_type(&self) -> (String, Option<String>) {
        let value = self.header("content-type").unwrap_or("text/plain");
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let boundary = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_owned())
        });
        (media, boundary)
    }

    /// The first `text/plain` body, decoded, searching nested multiparts.
    fn plain_text(&self, depth: u8) -> Option<String> {
        let (media, boundary) = self.content_type();
        if media.starts_with("multipart/") {
            let boundary = boundary?;
            if depth > 4 {
                return None;
            }
            return parts(self.body, &boundary)
                .into_iter()
                .find_map(|part| Entity::parse(part).plain_text(depth + 1));
        }
        (media == "text/plain").then(|| self.decoded_body())
    }

    fn decoded_body(&self) -> String {
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => quoted_printable(self.body),
            "base64" => {
                let compact: String = self.body.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap_or_default()
            }
            _ => self.body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes)
            .replace("\r\n", "\n")
            .trim_end()
            .to_owned()
    }
}

/// Header block and body, split at the first empty line.
fn split_head(raw: &str) -> (&str, &str) {
    let crlf = raw.find("\r\n\r\n").map(|i| (i, 4));
    let lf = raw.find("\n\n").map(|i| (i, 2));
    let split = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match split {
        Some((at, len)) => (&raw[..at], &raw[at + len..]),
        None => (raw, ""),
    }
}

/// The parts of a multipart body, between its `--boundary` delimiter lines.
fn parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut found = Vec::new();
    let mut sections = body.split(delimiter.as_str());
    // Before the first delimiter is the preamble.
    sections.next();
    for section in sections {
        if section.starts_with("--") {
            break;
        }
        let section = section
            .strip_prefix("\r\n")
            .or_else(|| section.strip_prefix('\n'))
            .unwrap_or(section);
        let section = section
            .strip_suffix("\r\n")
            .or_else(|| section.strip_suffix('\n'))
            .unwrap_or(section);
        found.push(section);
    }
    found
}

/// RFC 2045 quoted-printable: `=XX` bytes and `=` soft line breaks.
fn quoted_printable(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') => i += 3,
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`); whitespace between
/// two encoded words is dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        let word = encoded_word(from);
        match word {
            Some((decoded, len)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &from[len..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &from[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `text`: its decoded text and its length.
fn encoded_word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let payload = &inner[..end];
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .ok()?,
        "q" | "Q" => quoted_printable(&payload.replace('_', " ")),
        _ => return None,
    };
    let len = text.len() - inner.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

/// `http://` and `https://` links in plain text.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(tail.len());
        found.push(tail[..end].trim_end_matches(['.', ',', ')']).to_owned());
        rest = &tail[end..];
    }
    found
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use entity::mail::{Content, MessageKind, Outgoing, Payload};
    use worker::{Settings, mailer::Mailer};

    use super::*;

    fn mailer(dir: &Path) -> (Mailer, PathBuf) {
        let vars = [
            ("DATA_DIR", dir.display().to_string()),
            ("PUBLIC_BASE_URL", "http://127.0.0.1:3000".to_owned()),
        ];
        let settings =
            Settings::from_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                .expect("settings");
        let mailer = Mailer::from_settings(&settings).expect("mailer");
        (mailer, settings.mail.outbox_dir.clone())
    }

    fn confirmation(id: i64, name: &str) -> Outgoing {
        Outgoing {
            id,
            kind: MessageKind::SubscriptionConfirmation,
            recipient: "ann@example.com".into(),
            payload: Content::Product(Payload {
                product_id: 1,
                product_name: name.into(),
                product_slug: "heather-honey".into(),
                restock_event_id: None,
            }),
            attempt: 1,
            confirm_token: Some("c0nfirm-t0ken_with-a-long-tail-0123456789abcdefghij".into()),
            unsubscribe_token: Some("unsub".into()),
        }
    }

    #[tokio::test]
    async fn what_the_mailer_writes_reads_back_with_its_links_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mailer, outbox) = mailer(dir.path());
        for (id, name) in [(1, "Heather Honey"), (2, "Miel de Bruyère — été")] {
            let outgoing = confirmation(id, name);
            let message = mailer.compose(&outgoing).expect("composed");
            mailer.send(id, message).await.expect("written");
        }

        let messages = latest(&outbox, 10).expect("outbox read");

        assert_eq!(messages.len(), 2);
        let newest = &messages[0];
        assert_eq!(newest.id, 2);
        assert_eq!(
            newest.subject,
            "Confirm: tell me when Miel de Bruyère — été is back"
        );
        assert!(newest.to.contains("ann@example.com"), "{}", newest.to);
        assert!(newest.date.is_some());
        assert!(
            newest.text.contains("Miel de Bruyère — été"),
            "{}",
            newest.text
        );
        assert_eq!(
            newest.links.first().map(String::as_str),
            Some(
                "http://127.0.0.1:3000/api/subscriptions/confirm?token=c0nfirm-t0ken_with-a-long-tail-0123456789abcdefghij"
            ),
            "{:?}",
            newest.links
        );
        assert_eq!(
            messages[1].subject,
            "Confirm: tell me when Heather Honey is back"
        );
        assert_eq!(latest(&outbox, 1).expect("read").len(), 1);
    }

    #[test]
    fn a_missing_outbox_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(
            latest(&dir.path().join("outbox"), 5)
                .expect("read")
                .is_empty()
        );
    }

    #[test]
    fn quoted_printable_soft_breaks_join_a_long_link() {
        let body = "Open https://shop.example.com/api/subscriptions/confirm?token=3D=\r\nabc=\r\ndef now=\r\n";
        assert_eq!(
            String::from_utf8_lossy(&quoted_printable(body)),
            "Open https://shop.example.com/api/subscriptions/confirm?token=abcdef now"
        );
    }

    #[test]
    fn encoded_words_decode_and_plain_text_is_kept() {
        assert_eq!(
            decode_words("=?utf-8?b?SG9uZXk=?= =?utf-8?q?_is_back?= today"),
            "Honey is back today"
        );
        assert_eq!(decode_words("plain =? text"), "plain =? text");
    }
}
