//! How an email leaves: SMTP (our own connections for plain `smtp://`, a pooled lettre
//! transport otherwise) or a file in the outbox directory.

use std::path::PathBuf;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Mailer, SendError, direct};

pub(super) enum Transport {
    /// A plain `smtp://host:port`: our own `TCP_NODELAY` connections (see [`direct`]).
    Direct(direct::Direct),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file (the full RFC 5322 message) per email.
    Outbox(PathBuf),
    /// The same files in distributed mode (`MAIL_TRANSPORT=outbox`): they sit on one
    /// worker's disk and reach nobody, so each is recorded as failed, never as sent.
    UndeliveredOutbox(PathBuf),
}

impl Mailer {
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

/// lettre's pool size: at least one connection, at most what its `u32` holds.
pub(super) fn pool_size(connections: usize) -> u32 {
    u32::try_from(connections.max(1)).unwrap_or(u32::MAX)
}
