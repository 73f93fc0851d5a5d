//! Helpers for the catalog tests: a real SMTP server process (Python's aiosmtpd, see
//! `tests/smtp/smtp_server.py`) and a store wired to it, with a signed Contentful client.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    dead_code
)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use tests::{Answer, Backend, TestApp, eventually, spawn_app_with};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Runs the test SMTP server on `port` (0: a free one) and waits for its `READY <port>`.
async fn spawn_smtp(out: &std::path::Path, mode: Smtp, port: u16) -> (Child, u16) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smtp/smtp_server.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg("--out")
        .arg(out)
        .arg("--port")
        .arg(port.to_string())
        .arg("--stop-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    match mode {
        Smtp::Accepting => {}
        Smtp::FailingTimes(n) => {
            command.arg("--transient").arg(n.to_string());
        }
        Smtp::Rejecting => {
            command.arg("--permanent");
        }
    }
    let how = "the catalog tests need Python 3 with aiosmtpd as their SMTP server: \
               run `bash scripts/services.sh` or `python3 -m pip install aiosmtpd`";
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {how}"));
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await;
    let port = match ready {
        Ok(Ok(Some(line))) if line.starts_with("READY ") => {
            line["READY ".len()..].trim().parse().expect("port")
        }
        other => panic!("the test SMTP server did not start ({other:?}); {how}"),
    };
    (child, port)
}

/// The webhook secret the test store is configured with (Contentful issues 64 characters).
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// How the SMTP server answers each message.
#[derive(Clone, Copy, Debug)]
pub enum Smtp {
    Accepting,
    /// 451 for the first N messages, then 250.
    FailingTimes(u32),
    /// 550 for every message.
    Rejecting,
}

pub struct SmtpServer {
    pub port: u16,
    mode: Smtp,
    out: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SmtpServer {
    pub async fn start(mode: Smtp) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("messages.jsonl");
        let (child, port) = spawn_smtp(&out, mode, 0).await;
        Self {
            port,
            mode,
            out,
            _dir: dir,
            child: Some(child),
        }
    }

    /// Kills the server (SIGKILL, as a crash would); what it accepted stays recorded.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, recording into the same file.
    pub async fn restart(&mut self) {
        self.kill().await;
        let (child, _) = spawn_smtp(&self.out, self.mode, self.port).await;
        self.child = Some(child);
    }

    /// Starts it again on the same port answering as `mode` now (an operator fixed it).
    pub async fn restart_as(&mut self, mode: Smtp) {
        self.mode = mode;
        self.restart().await;
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, decoded.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn messages_to(&self, email: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(email)))
            })
            .collect()
    }

    /// Waits until `count` messages have reached `email`, and returns them.
    pub async fn wait_for(&self, email: &str, count: usize) -> Vec<Value> {
        eventually(Duration::from_secs(20), || async {
            let got = self.messages_to(email);
            (got.len() >= count).then_some(got)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{email} did not receive {count} message(s); it has {:?}",
                self.messages_to(email)
            )
        })
    }
}

/// A store whose mail goes to its own SMTP server, with the webhook secret set.
pub struct Store {
    pub app: TestApp,
    pub smtp: SmtpServer,
}

pub async fn store(backend: Backend, smtp: Smtp) -> Store {
    store_with(backend, smtp, &[]).await
}

pub async fn store_with(backend: Backend, smtp: Smtp, extra: &[(&str, &str)]) -> Store {
    let smtp = SmtpServer::start(smtp).await;
    let url = smtp.url();
    let mut vars = vec![
        ("SMTP_URL", url.as_str()),
        ("CONTENTFUL_WEBHOOK_SECRET", SECRET),
        ("MAIL_RETRY_BASE_MS", "100"),
        ("PUBLIC_BASE_URL", "https://shop.example.com"),
    ];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(backend, &vars).await;
    Store { app, smtp }
}

/// A Contentful entry body for a `product`, fields in `en-US`.
pub fn entry(entry_id: &str, version: i64, fields: Value) -> Value {
    let fields: serde_json::Map<String, Value> = fields
        .as_object()
        .expect("fields object")
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "en-US": v })))
        .collect();
    json!({
        "sys": {
            "id": entry_id,
            "type": "Entry",
            "version": version,
            "contentType": {"sys": {"type": "Link", "linkType": "ContentType", "id": "product"}},
            "space": {"sys": {"id": "space1"}},
        },
        "fields": fields,
    })
}

pub const PUBLISH: &str = "ContentManagement.Entry.publish";
pub const UNPUBLISH: &str = "ContentManagement.Entry.unpublish";

/// A delivery as Contentful sends it.
pub struct Delivery {
    pub topic: String,
    pub body: Vec<u8>,
    pub idempotency_key: String,
    pub timestamp_ms: i64,
    pub secret: String,
}

impl Delivery {
    pub fn new(topic: &str, body: &Value) -> Self {
        Self {
            topic: topic.into(),
            body: serde_json::to_vec(body).expect("json"),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            timestamp_ms: Utc::now().timestamp_millis(),
            secret: SECRET.into(),
        }
    }
}

impl Store {
    /// Sends a delivery signed with its secret and timestamp.
    pub async fn deliver(&self, delivery: &Delivery) -> Answer {
        self.deliver_tampered(delivery, |_| {}).await
    }

    /// Signs a delivery, lets `tamper` change the headers, then sends it.
    pub async fn deliver_tampered(
        &self,
        delivery: &Delivery,
        tamper: impl FnOnce(&mut Vec<(String, String)>),
    ) -> Answer {
        let path = "/api/webhooks/contentful";
        let signed = [
            (
                "Content-Type",
                "application/vnd.contentful.management.v1+json",
            ),
            ("X-Contentful-Topic", delivery.topic.as_str()),
            ("X-Contentful-Webhook-Name", "Honeydrop"),
            (
                "X-Contentful-Idempotency-Key",
                delivery.idempotency_key.as_str(),
            ),
        ];
        let (signature, signed_headers) = api::http::contentful::sign(
            &delivery.secret,
            "POST",
            path,
            &signed,
            &delivery.body,
            delivery.timestamp_ms,
        );
        let mut headers: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        headers.push(("X-Contentful-Signature".into(), signature));
        headers.push(("X-Contentful-Signed-Headers".into(), signed_headers));
        headers.push((
            "X-Contentful-Timestamp".into(),
            delivery.timestamp_ms.to_string(),
        ));
        tamper(&mut headers);
        let mut request = self
            .app
            .client
            .post(format!("{}{path}", self.app.address))
            .body(delivery.body.clone());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        tests::answer(request.send().await.expect("webhook sent")).await
    }

    /// Publishes a product entry (signed) and expects it to be applied.
    pub async fn publish(&self, entry_id: &str, version: i64, fields: Value) -> Answer {
        let answer = self
            .deliver(&Delivery::new(PUBLISH, &entry(entry_id, version, fields)))
            .await;
        assert_eq!(answer.status, 200, "publish failed: {:?}", answer.body);
        answer
    }

    pub async fn product(&self, id_or_slug: &str) -> Value {
        let answer = self
            .app
            .get(&format!("/api/products/{id_or_slug}"), None)
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body
    }

    /// Signs `email` up for a product and presses Confirm on the page the confirmation
    /// email links to (a POST to the link).
    pub async fn confirmed_subscriber(&self, product_id: i64, email: &str) {
        self.notify_me(product_id, email).await;
        let confirmation = self.smtp.wait_for(email, 1).await;
        let token = link_token(&confirmation[0], "/api/subscriptions/confirm?token=");
        let confirmed = self
            .app
            .request(
                reqwest::Method::POST,
                &format!("/api/subscriptions/confirm?token={token}"),
                None,
                None,
            )
            .await;
        assert_eq!(
            confirmed.status, 200,
            "confirm failed: {:?}",
            confirmed.body
        );
    }

    pub async fn notify_me(&self, product_id: i64, email: &str) {
        let answer = self
            .app
            .post(
                &format!("/api/products/{product_id}/notify-me"),
                None,
                json!({ "email": email }),
            )
            .await;
        assert_eq!(answer.status, 202, "notify-me failed: {:?}", answer.body);
    }

    pub async fn subscription_status(&self, product_id: i64, email: &str) -> String {
        use entity::models::subscriptions;
        use sea_orm::ActiveEnum;
        subscriptions::Entity::find()
            .filter(subscriptions::Column::ProductId.eq(product_id))
            .filter(subscriptions::Column::Email.eq(email))
            .one(&self.app.db)
            .await
            .expect("query")
            .expect("subscription exists")
            .status
            .to_value()
    }

    pub async fn ledger(&self) -> Vec<entity::models::email_messages::Model> {
        use entity::models::email_messages;
        email_messages::Entity::find()
            .order_by_asc(email_messages::Column::Id)
            .all(&self.app.db)
            .await
            .expect("query")
    }

    pub async fn deliveries(&self) -> Vec<entity::models::webhook_deliveries::Model> {
        use entity::models::webhook_deliveries;
        webhook_deliveries::Entity::find()
            .order_by_asc(webhook_deliveries::Column::Id)
            .all(&self.app.db)
            .await
            .expect("query")
    }
}

/// The token of the first link in the message's text part that contains `marker`.
pub fn link_token(message: &Value, marker: &str) -> String {
    let text = message["text"].as_str().expect("text part");
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} link in {text}"))
        + marker.len();
    text[start..]
        .split(|c: char| c.is_whitespace())
        .next()
        .expect("token")
        .to_owned()
}
