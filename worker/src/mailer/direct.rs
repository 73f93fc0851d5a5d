//! Plain SMTP over connections we open ourselves, with `TCP_NODELAY`.
//!
//! lettre 0.11.23 opens its sockets with Nagle's algorithm on and writes a message's body and
//! its closing `\r\n.\r\n` as two writes, so the second waits for the server's delayed ACK:
//! about 40 ms a message on every connection (fixed upstream in lettre pull request 1159,
//! not released yet). For a plain `smtp://host:port` URL the mailer opens the TCP connections
//! itself, with `TCP_NODELAY`, and lets lettre speak SMTP over them; URLs with TLS or
//! credentials keep lettre's own transport.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    Message,
    transport::smtp::{client::AsyncSmtpConnection, extension::ClientId},
};

use super::SendError;

/// A connection used this recently is taken as alive; an older one is asked (`NOOP`) first.
const FRESH_FOR: Duration = Duration::from_secs(5);

pub struct Direct {
    server: String,
    hello: ClientId,
    connect_timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Direct {
    /// `Some` for a plain `smtp://host[:port]` URL (no credentials, no options).
    pub fn for_url(url: &str, connect_timeout: Duration) -> Option<Self> {
        let rest = url.strip_prefix("smtp://")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['@', '/', '?', '#']) {
            return None;
        }
        let server = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:25")
        };
        Some(Self {
            server,
            hello: ClientId::default(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends over an idle connection, or a new one; a connection that failed is dropped.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        let mut connection = match self.take_idle().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        match connection
            .send(message.envelope(), &message.formatted())
            .await
        {
            Ok(_) => {
                self.lock().push((connection, Instant::now()));
                Ok(())
            }
            Err(e) if e.is_permanent() => {
                // The server refused this message, not the connection.
                self.lock().push((connection, Instant::now()));
                Err(SendError::Permanent(e.to_string()))
            }
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, used) = self.lock().pop()?;
            if connection.has_broken() {
                continue;
            }
            if used.elapsed() < FRESH_FOR || connection.test_connected().await {
                return Some(connection);
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |e: &dyn std::fmt::Display| SendError::Transient(e.to_string());
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&self.server),
        )
        .await
        .map_err(|_| SendError::Transient(format!("no connection to {}", self.server)))?
        .map_err(|e| transient(&e))?;
        stream.set_nodelay(true).map_err(|e| transient(&e))?;
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(|e| transient(&e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Direct;

    #[test]
    fn only_plain_urls_are_sent_directly() {
        let server = |url: &str| Direct::for_url(url, Duration::from_secs(1)).map(|d| d.server);
        assert_eq!(
            server("smtp://127.0.0.1:2525").as_deref(),
            Some("127.0.0.1:2525")
        );
        assert_eq!(
            server("smtp://mail.local").as_deref(),
            Some("mail.local:25")
        );
        assert_eq!(
            server("smtp://mail.local/").as_deref(),
            Some("mail.local:25")
        );
        assert_eq!(server("smtps://mail.local:465"), None);
        assert_eq!(server("smtp://user:pw@mail.local:587"), None);
        assert_eq!(server("smtp://mail.local:587?tls=required"), None);
    }
}
