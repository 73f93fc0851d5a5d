//! `GET /api/admin/outbox`: the emails an embedded store wrote instead of sending, so the
//! notify-me → confirm → restock → alert loop can be followed in a browser.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use worker::{
    Settings,
    settings::{MailTransport, Mode},
};

use super::ApiTags;
use crate::{
    auth::AdminAuth,
    dev::outbox::{self, OutboxMessage},
    http::error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

pub struct DevOutboxApi {
    pub state: AppState,
}

const DEFAULT_LIMIT: u32 = 20;

/// One email from `DATA_DIR/outbox`.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct OutboxEmail {
    /// The ledger id (`message-<id>.eml`); newer emails have larger ids.
    id: i64,
    /// The `Date` header.
    date: Option<DateTime<Utc>>,
    from: String,
    to: String,
    subject: String,
    /// The plain-text part.
    text: String,
    /// The `http(s)` links of the text, in order (confirm, product, unsubscribe, ...).
    links: Vec<String>,
}

impl From<OutboxMessage> for OutboxEmail {
    fn from(m: OutboxMessage) -> Self {
        Self {
            id: m.id,
            date: m.date,
            from: m.from,
            to: m.to,
            subject: m.subject,
            text: m.text,
            links: m.links,
        }
    }
}

/// The directory this process's own worker writes mail to, or why there is none to show.
fn outbox_dir(settings: &Settings) -> Result<PathBuf, &'static str> {
    match settings.mail.transport {
        MailTransport::Outbox if settings.worker.embed => Ok(settings.mail.outbox_dir.clone()),
        MailTransport::Outbox => Err(
            "there is no outbox here: MAIL_TRANSPORT=outbox has each worker process write mail to DATA_DIR/outbox/ on its own disk, and this api runs no worker",
        ),
        MailTransport::Smtp | MailTransport::Missing if settings.mode() == Mode::Embedded => {
            Err("there is no outbox: mail goes out over SMTP_URL")
        }
        MailTransport::Smtp | MailTransport::Missing => Err(
            "there is no outbox: in distributed mode mail goes out over SMTP_URL from the worker processes",
        ),
    }
}

#[OpenApi(prefix_path = "/api/admin/outbox", tag = "ApiTags::Admin")]
impl DevOutboxApi {
    /// Latest emails of the development outbox
    ///
    /// For development and demos: in embedded mode without `SMTP_URL`, every email is
    /// written to `DATA_DIR/outbox/` instead of being sent; this lists the newest ones
    /// (20 unless `limit` says otherwise), newest first, with their plain-text body and
    /// links. With `MAIL_TRANSPORT=outbox` in distributed mode each worker writes to its own
    /// disk, so only an api that runs a worker (`EMBED_WORKER`) lists that worker's files.
    /// Otherwise 404 `outbox_disabled`, saying where mail goes.
    #[oai(path = "/", method = "get", operation_id = "listOutboxEmails")]
    async fn list(
        &self,
        _admin: AdminAuth,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u32>>,
    ) -> ApiResult<Json<Vec<OutboxEmail>>> {
        let dir = outbox_dir(&self.state.settings)
            .map_err(|why| ApiError::new(StatusCode::NOT_FOUND, ErrorCode::OutboxDisabled, why))?;
        let limit = usize::try_from(limit.0.unwrap_or(DEFAULT_LIMIT)).unwrap_or(usize::MAX);
        let messages = tokio::task::spawn_blocking(move || outbox::latest(&dir, limit)).await??;
        Ok(Json(messages.into_iter().map(OutboxEmail::from).collect()))
    }
}
