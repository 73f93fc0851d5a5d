//! Writing and sending email: templates rendered with minijinja into multipart text + HTML,
//! sent over SMTP (a pooled lettre transport) or written to an outbox directory, under a
//! process-wide send-rate cap.

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use entity::mail::{Content, MessageKind, OfferPayload, Outgoing, Payload, WaitlistedPayload};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MessageBuilder, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::PoolConfig,
};
use minijinja::{Environment, Value, context};

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
mod verification;

enum Transport {
    /// A plain `smtp://host:port`: our own `TCP_NODELAY` connections (see [`direct`]).
    Direct(direct::Direct),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file (the full RFC 5322 message) per email.
    Outbox(PathBuf),
    /// The same files in distributed mode (`MAIL_TRANSPORT=outbox`): they sit on one
    /// worker's disk and reach nobody, so each is recorded as failed, never as sent.
    UndeliveredOutbox(PathBuf),
}

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

const TEMPLATES: [(&str, &str); 10] = [
    (
        "verify_email.txt",
        include_str!("../../templates/verify_email.txt"),
    ),
    (
        "verify_email.html",
        include_str!("../../templates/verify_email.html"),
    ),
    (
        "confirmation.txt",
        include_str!("../../templates/confirmation.txt"),
    ),
    (
        "confirmation.html",
        include_str!("../../templates/confirmation.html"),
    ),
    (
        "restock_alert.txt",
        include_str!("../../templates/restock_alert.txt"),
    ),
    (
        "restock_alert.html",
        include_str!("../../templates/restock_alert.html"),
    ),
    (
        "hold_offer.txt",
        include_str!("../../templates/hold_offer.txt"),
    ),
    (
        "hold_offer.html",
        include_str!("../../templates/hold_offer.html"),
    ),
    (
        "draw_waitlisted.txt",
        include_str!("../../templates/draw_waitlisted.txt"),
    ),
    (
        "draw_waitlisted.html",
        include_str!("../../templates/draw_waitlisted.html"),
    ),
];

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

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
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates.add_template(name, source)?;
        }
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

    /// Renders a claimed ledger row into a complete message.
    ///
    /// # Errors
    /// `Permanent`: the address or a template is unusable, so retrying cannot help.
    pub fn compose(&self, outgoing: &Outgoing) -> Result<Message, SendError> {
        let permanent = |e: &dyn std::fmt::Display| SendError::Permanent(e.to_string());
        let to: Mailbox = outgoing.recipient.parse().map_err(|e| permanent(&e))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(None);
        let (builder, template, ctx) = match &outgoing.payload {
            Content::Product(product) => self.about_product(builder, outgoing, product)?,
            Content::Offer(offer) => self.offer(builder, offer),
            Content::Waitlisted(place) => self.waitlisted(builder, place),
            Content::Verification(account) => {
                self.verification(builder, &outgoing.recipient, account)
            }
        };
        let render = |suffix: &str| {
            self.templates
                .get_template(&format!("{template}.{suffix}"))
                .and_then(|t| t.render(&ctx))
                .map_err(|e| permanent(&e))
        };
        builder
            .multipart(MultiPart::alternative_plain_html(
                render("txt")?,
                render("html")?,
            ))
            .map_err(|e| permanent(&e))
    }

    /// A confirmation or a restock alert: links to the product and to unsubscribe.
    fn about_product(
        &self,
        builder: MessageBuilder,
        outgoing: &Outgoing,
        product: &Payload,
    ) -> Result<(MessageBuilder, &'static str, Value), SendError> {
        let base = &self.base_url;
        // Links are built from the configured base URL, a slug ([a-z0-9-]) and a URL-safe
        // token: nothing to escape, and escaping `/` would only make them unreadable.
        let link = Value::from_safe_string;
        let Some(unsubscribe_token) = &outgoing.unsubscribe_token else {
            return Err(SendError::Permanent(
                "a product email without an unsubscribe token".into(),
            ));
        };
        let product_url = link(format!("{base}/api/products/{}", product.product_slug));
        let unsubscribe_url =
            format!("{base}/api/subscriptions/unsubscribe?token={unsubscribe_token}");
        Ok(match outgoing.kind {
            MessageKind::SubscriptionConfirmation => {
                let Some(token) = &outgoing.confirm_token else {
                    return Err(SendError::Permanent(
                        "a confirmation without a token".into(),
                    ));
                };
                let confirm_url = format!("{base}/api/subscriptions/confirm?token={token}");
                (
                    builder.subject(format!(
                        "Confirm: tell me when {} is back",
                        product.product_name
                    )),
                    "confirmation",
                    context! {
                        product_name => product.product_name,
                        product_url => product_url,
                        confirm_url => link(confirm_url),
                        unsubscribe_url => link(unsubscribe_url),
                    },
                )
            }
            MessageKind::HoldOffer
            | MessageKind::DrawWaitlisted
            | MessageKind::AccountVerification => {
                return Err(SendError::Permanent(
                    "a drop's email written with a product's content".into(),
                ));
            }
            MessageKind::RestockAlert => (
                builder
                    .subject(format!("{} is back in stock", product.product_name))
                    // RFC 8058 one-click unsubscribe: mail clients POST to this URL.
                    .raw_header(HeaderValue::new(
                        LIST_UNSUBSCRIBE,
                        format!("<{unsubscribe_url}>"),
                    ))
                    .raw_header(HeaderValue::new(
                        LIST_UNSUBSCRIBE_POST,
                        "List-Unsubscribe=One-Click".to_owned(),
                    )),
                "restock_alert",
                context! {
                    product_name => product.product_name,
                    product_url => product_url,
                    unsubscribe_url => link(unsubscribe_url),
                },
            ),
        })
    }

    /// A waitlist offer: the drop, the deadline, and a link to the storefront.
    fn offer(
        &self,
        builder: MessageBuilder,
        offer: &OfferPayload,
    ) -> (MessageBuilder, &'static str, Value) {
        let storefront_url =
            Value::from_safe_string(format!("{}/#drop-{}", self.base_url, offer.drop_id));
        (
            builder.subject(format!("{} is held for you", offer.drop_name)),
            "hold_offer",
            context! {
                drop_name => offer.drop_name,
                expires_at => offer.expires_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                storefront_url => storefront_url,
                won_draw => offer.won_draw,
            },
        )
    }

    /// A draw not won: the entrant's place on the waitlist, and a link to the storefront.
    fn waitlisted(
        &self,
        builder: MessageBuilder,
        place: &WaitlistedPayload,
    ) -> (MessageBuilder, &'static str, Value) {
        let storefront_url =
            Value::from_safe_string(format!("{}/#drop-{}", self.base_url, place.drop_id));
        (
            builder.subject(format!(
                "The {} draw: you are number {} on the waitlist",
                place.drop_name, place.position
            )),
            "draw_waitlisted",
            context! {
                drop_name => place.drop_name,
                position => place.position,
                storefront_url => storefront_url,
            },
        )
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

    /// Sends one message, giving up after the send timeout (half the claim's lease).
    ///
    /// # Errors
    /// `Transient` for what may work later (4xx, network, no answer in time), `Permanent`
    /// for a 5xx rejection.
    pub async fn send(&self, message_id: i64, message: Message) -> Result<(), SendError> {
        let sending = async {
            match &self.transport {
                Transport::Smtp(smtp) => match smtp.send(message).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                    Err(e) => Err(SendError::Transient(e.to_string())),
                },
                Transport::Direct(direct) => direct.send(&message).await,
                Transport::Outbox(dir) => write_outbox(dir, message_id, &message.formatted())
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError::Transient(format!("cannot write the outbox: {e}"))),
                Transport::UndeliveredOutbox(dir) => {
                    let path = write_outbox(dir, message_id, &message.formatted())
                        .await
                        .map_err(|e| {
                            SendError::Transient(format!("cannot write the outbox: {e}"))
                        })?;
                    Err(SendError::Permanent(format!(
                        "not delivered: written to {} on this worker's disk (MAIL_TRANSPORT=outbox)",
                        path.display()
                    )))
                }
            }
        };
        tokio::time::timeout(self.send_timeout, sending)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "no answer within {} ms",
                    self.send_timeout.as_millis()
                )))
            })
    }
}

/// Writes `message-<id>.eml` atomically (temp file, then rename), so a reader never sees half
/// a message; owner-only (0600, in a 0700 directory): the links in it are credentials.
async fn write_outbox(
    dir: &std::path::Path,
    message_id: i64,
    raw: &[u8],
) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt;
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await?;
    let path = dir.join(format!("message-{message_id:08}.eml"));
    let tmp = dir.join(format!(".message-{message_id:08}.eml.tmp"));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).await?;
    file.write_all(raw).await?;
    file.flush().await?;
    drop(file);
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

/// A token bucket shared by every send of the process: at most `rate` a second, with bursts
/// of up to one second's worth.
struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for at least one token, then takes up to `wanted` of those there are.
    async fn acquire_up_to(&self, wanted: usize) -> usize {
        let wanted = wanted.max(1);
        loop {
            let wait = {
                let mut state = self.state();
                let (tokens, last) = *state;
                let now = Instant::now();
                let tokens =
                    (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
                if tokens >= 1.0 {
                    // Whole tokens (at most `rate`), never more than wanted.
                    let taken = (tokens.floor() as usize).min(wanted);
                    let left = tokens - taken as f64;
                    *state = (left, now);
                    return taken;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn give_back(&self, unused: usize) {
        let mut state = self.state();
        let tokens = (state.0 + unused as f64).min(self.rate);
        state.0 = tokens;
    }
}

/// lettre's pool size: at least one connection, at most what its `u32` holds.
fn pool_size(connections: usize) -> u32 {
    u32::try_from(connections.max(1)).unwrap_or(u32::MAX)
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
