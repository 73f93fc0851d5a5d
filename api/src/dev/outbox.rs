//! Reads back the development outbox: without `SMTP_URL`, the worker writes every email as
//! `DATA_DIR/outbox/message-<id>.eml` (a complete RFC 5322 message). This turns the latest
//! ones into what a person wants to see: date, recipient, subject, the plain-text body and
//! its links.

use std::{
    io,
    path::{Path, PathBuf},
};

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

/// Parses one message (with `mail-parser`: MIME parts, quoted-printable, base64, RFC 2047
/// headers); what cannot be understood is left empty rather than refused.
pub fn parse(id: i64, raw: &[u8]) -> OutboxMessage {
    let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
        return OutboxMessage {
            id,
            date: None,
            from: String::new(),
            to: String::new(),
            subject: String::new(),
            text: String::new(),
            links: Vec::new(),
        };
    };
    let text = message
        .body_text(0)
        .map(|text| text.replace("\r\n", "\n"))
        .unwrap_or_default();
    OutboxMessage {
        id,
        date: message
            .date()
            .and_then(|date| DateTime::from_timestamp(date.to_timestamp(), 0)),
        from: addressee(message.from()),
        to: addressee(message.to()),
        subject: message.subject().unwrap_or_default().to_owned(),
        links: links(&text),
        text,
    }
}

/// `Name <address>` (or the bare address) of a header's first addressee.
fn addressee(header: Option<&mail_parser::Address<'_>>) -> String {
    let Some(first) = header.and_then(mail_parser::Address::first) else {
        return String::new();
    };
    match (first.name(), first.address()) {
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.to_owned(),
        (Some(name), None) => name.to_owned(),
        (None, None) => String::new(),
    }
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
    fn encoded_headers_and_quoted_printable_soft_breaks_decode() {
        let raw = "From: Honeydrop <shop@example.com>\r\n\
                   To: ann@example.com\r\n\
                   Subject: =?utf-8?b?SG9uZXk=?= =?utf-8?q?_is_back?= today\r\n\
                   Date: Mon, 07 Dec 2026 22:00:00 +0000\r\n\
                   MIME-Version: 1.0\r\n\
                   Content-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                   Open https://shop.example.com/api/subscriptions/confirm?token=3D=\r\n\
                   abc=\r\ndef now.\r\n";
        let message = parse(7, raw.as_bytes());
        assert_eq!(message.subject, "Honey is back today");
        assert_eq!(message.from, "Honeydrop <shop@example.com>");
        assert_eq!(message.to, "ann@example.com");
        assert_eq!(
            message.date.map(|d| d.to_rfc3339()),
            Some("2026-12-07T22:00:00+00:00".to_owned())
        );
        assert_eq!(
            message.links,
            ["https://shop.example.com/api/subscriptions/confirm?token=abcdef"]
        );
    }

    #[test]
    fn what_is_not_a_message_is_left_empty() {
        let message = parse(3, b"\xff\xfe not mail");
        assert_eq!(message.id, 3);
        assert!(message.links.is_empty());
    }
}
