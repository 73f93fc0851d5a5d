//! Writing and sending email, one concern per file: [`templates`] (what an email says:
//! minijinja text + HTML), [`transport`] (how it leaves: SMTP or the outbox), [`rate`] (the
//! process-wide send-rate cap), and here the [`Mailer`] that holds them and the retry
//! backoff.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, Tokio1Executor, message::Mailbox, transport::smtp::PoolConfig};
use minijinja::Environment;

use crate::platform::settings::{Mode, Settings};

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("MAIL_FROM is invalid: {0}")]
    From(String),
    #[error("SMTP_URL is invalid: {0}")]
    SmtpUrl(String),
    #[error("{0}")]
    NoTransport(#[from] crate::platform::settings::SettingsError),
    #[error("cannot load email templates: {0}")]
    Templates(#[from] minijinja::Error),
}

/// Why a send did not go through, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A 4xx answer, a timeout, a refused connection, anything but a 5xx: try again later
    /// (at most `MAIL_MAX_ATTEMPTS` times in all).
    #[error("transient: {0}")]
    Transient(String),
    /// A 5xx answer or a message that cannot be built: trying again cannot help.
    #[error("permanent: {0}")]
    Permanent(String),
}

mod direct;
mod rate;
mod templates;
mod transport;
mod verification;

use rate::RateLimiter;
use transport::{Transport, pool_size};

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    base_url: String,
    templates: Environment<'static>,
    limiter: RateLimiter,
    send_timeout: Duration,
    verification_key: crate::platform::settings::Secret,
    verification_ttl: chrono::Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.transport {
            Transport::Direct(_) | Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Outbox(dir) | Transport::UndeliveredOutbox(dir) => {
                format!("outbox {}", dir.display())
            }
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// SMTP when `SMTP_URL` is set (must run inside a Tokio runtime: the pool starts there),
    /// otherwise files under `DATA_DIR/outbox/`.
    ///
    /// # Errors
    /// `MAIL_FROM` or `SMTP_URL` is malformed, or distributed mode has no way to send.
    pub fn from_settings(settings: &Settings) -> Result<Self, MailerError> {
        settings.require_mail_transport()?;
        let mail = &settings.mail;
        let from: Mailbox = mail
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailerError::From(e.to_string()))?;
        let transport = match &mail.smtp_url {
            Some(url) => match direct::Direct::for_url(url.expose(), mail.send_timeout) {
                Some(direct) => Transport::Direct(direct),
                None => Transport::Smtp(
                    AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                        .map_err(|e| MailerError::SmtpUrl(e.to_string()))?
                        .timeout(Some(mail.send_timeout))
                        .pool_config(PoolConfig::new().max_size(pool_size(mail.connections)))
                        .build(),
                ),
            },
            None if settings.mode() == Mode::Distributed => {
                Transport::UndeliveredOutbox(mail.outbox_dir.clone())
            }
            None => Transport::Outbox(mail.outbox_dir.clone()),
        };
        let templates = templates::load()?;
        Ok(Self {
            transport,
            from,
            base_url: settings.http.public_base_url.clone(),
            templates,
            limiter: RateLimiter::new(mail.rate_per_sec),
            send_timeout: mail.send_timeout,
            verification_key: settings.abuse.verification_key.clone(),
            verification_ttl: chrono::Duration::from_std(settings.abuse.verification_ttl)
                .unwrap_or(chrono::Duration::days(7)),
        })
    }
    /// Waits until the send-rate cap allows at least one more send, and takes up to `wanted`
    /// turns; returns how many it took. Called before rows are claimed, so a claim's lease
    /// covers the send alone, whatever the rate.
    pub async fn take_turns(&self, wanted: usize) -> usize {
        self.limiter.acquire_up_to(wanted).await
    }

    /// Returns turns taken but not used (fewer rows were due than turns taken).
    pub fn give_back_turns(&self, unused: usize) {
        self.limiter.give_back(unused);
    }
}

/// Exponential backoff: `base`, `2·base`, `4·base`, ... capped at one hour.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    base.saturating_mul(1 << exponent)
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use entity::mail::{Content, MessageKind, OfferPayload, Outgoing, Payload, WaitlistedPayload};

    use super::{Mailer, RateLimiter, backoff};
    use crate::platform::settings::Settings;

    /// A mailer writing to an outbox under `dir`, with links to `https://shop.example.com`.
    fn shop_mailer(dir: &tempfile::TempDir) -> (Mailer, Settings) {
        let vars = [
            ("DATA_DIR", dir.path().display().to_string()),
            ("PUBLIC_BASE_URL", "https://shop.example.com".to_owned()),
        ];
        let settings =
            Settings::from_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                .expect("settings");
        (Mailer::from_settings(&settings).expect("mailer"), settings)
    }

    #[tokio::test]
    async fn without_smtp_an_alert_is_written_to_the_outbox_in_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mailer, settings) = shop_mailer(&dir);
        let alert = Outgoing {
            id: 7,
            kind: MessageKind::RestockAlert,
            recipient: "ann@example.com".into(),
            payload: Content::Product(Payload {
                product_id: 1,
                product_name: "Heather <Honey>".into(),
                product_slug: "heather-honey".into(),
                restock_event_id: Some(3),
            }),
            attempt: 1,
            confirm_token: None,
            unsubscribe_token: Some("tok".into()),
        };

        let message = mailer.compose(&alert).expect("composed");
        mailer.send(alert.id, message).await.expect("written");

        let eml = std::fs::read_to_string(settings.mail.outbox_dir.join("message-00000007.eml"))
            .expect("outbox file");
        assert!(eml.contains(
            "List-Unsubscribe: <https://shop.example.com/api/subscriptions/unsubscribe?token=tok>"
        ));
        assert!(eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(eml.contains("Content-Type: multipart/alternative"));
        assert!(eml.contains("Content-Type: text/plain"));
        assert!(eml.contains("Content-Type: text/html"));
        assert!(
            eml.contains("Heather &lt;Honey&gt;"),
            "the name is escaped in HTML"
        );
    }

    #[test]
    fn an_offer_names_the_drop_its_deadline_and_links_to_the_storefront() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mailer, _) = shop_mailer(&dir);
        let expires_at = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:30Z")
            .expect("instant")
            .to_utc();
        let offer = Outgoing {
            id: 8,
            kind: MessageKind::HoldOffer,
            recipient: "ann@example.com".into(),
            payload: Content::Offer(OfferPayload {
                drop_id: 4,
                drop_name: "Golden <Jar>".into(),
                reservation_id: 17,
                expires_at,
                won_draw: false,
            }),
            attempt: 1,
            confirm_token: None,
            unsubscribe_token: None,
        };

        let message = mailer.compose(&offer).expect("composed");
        let eml = String::from_utf8_lossy(&message.formatted()).into_owned();

        assert!(
            eml.contains("Subject: Golden <Jar> is held for you"),
            "{eml}"
        );
        assert!(eml.contains("https://shop.example.com/#drop-4"));
        assert!(eml.contains("2026-11-26 10:00:30"));
        assert!(
            eml.contains("Golden &lt;Jar&gt;"),
            "the name is escaped in HTML"
        );
        assert!(
            !eml.contains("List-Unsubscribe"),
            "an offer is no list mail"
        );
        assert!(eml.contains("next on the waitlist"), "{eml}");
    }

    #[test]
    fn a_draw_tells_a_winner_they_won_and_the_rest_their_place_in_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mailer, _) = shop_mailer(&dir);
        let compose = |kind, payload| {
            let outgoing = Outgoing {
                id: 9,
                kind,
                recipient: "ann@example.com".into(),
                payload,
                attempt: 1,
                confirm_token: None,
                unsubscribe_token: None,
            };
            let message = mailer.compose(&outgoing).expect("composed");
            String::from_utf8_lossy(&message.formatted()).into_owned()
        };
        let won = compose(
            MessageKind::HoldOffer,
            Content::Offer(OfferPayload {
                drop_id: 4,
                drop_name: "Golden Jar".into(),
                reservation_id: 17,
                expires_at: chrono::Utc::now(),
                won_draw: true,
            }),
        );
        let lost = compose(
            MessageKind::DrawWaitlisted,
            Content::Waitlisted(WaitlistedPayload {
                drop_id: 4,
                drop_name: "Golden Jar".into(),
                position: 12,
            }),
        );

        assert!(won.contains("You won the draw"), "{won}");
        assert!(!won.contains("next on the waitlist"), "{won}");
        assert!(
            lost.contains("Subject: The Golden Jar draw: you are number 12 on the waitlist"),
            "{lost}"
        );
        assert!(lost.contains("https://shop.example.com/#drop-4"), "{lost}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 3), Duration::from_millis(400));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn the_rate_cap_spreads_sends_out() {
        let limiter = RateLimiter::new(20);
        let started = Instant::now();
        let mut taken = 0;
        while taken < 30 {
            taken += limiter.acquire_up_to(30 - taken).await;
        }
        // 20 from the initial burst, 10 more at 20 a second.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
}
