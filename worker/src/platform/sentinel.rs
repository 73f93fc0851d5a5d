//! Redis behind Sentinel (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`): a relay inside each
//! process, on a loopback port of its own, through which every Redis connection the process
//! opens — the job storage's, the bus's publisher and subscriber, the limiter's — reaches
//! whichever server the sentinels name master now.
//!
//! Each of those connections already reconnects when its connection breaks (redis-rs's
//! `ConnectionManager`, the bus's resubscribing relay, the supervised apalis workers); the
//! relay only decides where a new connection goes. It asks the sentinels every
//! [`WATCH_INTERVAL`] (redis-rs's `Sentinel` also checks that the server it names answers as
//! master), and when the master changes it cuts the connections still relayed to the old
//! one, so they reconnect to the new one rather than write to a demoted replica. A new
//! connection waits while there is no master (during a failover) up to [`MASTER_WAIT`].

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisError, sentinel::Sentinel};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// How often the sentinels are asked for the master.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long a new connection waits for a master to be named, and the start for the first.
const MASTER_WAIT: Duration = Duration::from_secs(10);

/// Where a master is: host and port as the sentinels name it.
type Master = Option<(String, u16)>;

/// Starts the relay and returns a client whose connections go through it; `url` gives what
/// the master is told on connecting (user, password, database), its host is not used.
///
/// # Errors
/// The URL is malformed, or no sentinel named a reachable master within [`MASTER_WAIT`].
pub async fn client(
    url: &str,
    sentinels: &[String],
    master_name: &str,
) -> Result<redis::Client, RedisError> {
    let nodes: Vec<String> = sentinels.iter().map(|s| format!("redis://{s}")).collect();
    let mut sentinel = Sentinel::build(nodes)?;
    let first = tokio::time::timeout(MASTER_WAIT, async {
        loop {
            match find_master(&mut sentinel, master_name).await {
                Ok(master) => return master,
                Err(error) => {
                    tracing::warn!(%error, master_name, "no Redis master from the sentinels yet");
                    tokio::time::sleep(WATCH_INTERVAL).await;
                }
            }
        }
    })
    .await
    .map_err(|_| {
        RedisError::from((
            redis::ErrorKind::Io,
            "no sentinel of REDIS_SENTINELS named a reachable master for REDIS_MASTER_NAME",
        ))
    })?;
    tracing::info!(master = ?first, master_name, "Redis master found through the sentinels");
    let (current, _) = watch::channel::<Master>(Some(first));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let local = listener.local_addr()?;
    tokio::spawn(watch_master(
        sentinel,
        master_name.to_owned(),
        current.clone(),
    ));
    tokio::spawn(accept(listener, current));
    let info = url
        .into_connection_info()?
        .set_addr(ConnectionAddr::Tcp(local.ip().to_string(), local.port()));
    redis::Client::open(info)
}

async fn find_master(sentinel: &mut Sentinel, name: &str) -> Result<(String, u16), RedisError> {
    let master = sentinel.async_master_for(name, None).await?;
    match master.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
        other => Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "the sentinels named a master this relay cannot reach",
            format!("{other:?}"),
        ))),
    }
}

/// Keeps `current` on the master the sentinels name; `None` while none answers as master.
async fn watch_master(mut sentinel: Sentinel, name: String, current: watch::Sender<Master>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let found = find_master(&mut sentinel, &name).await.ok();
        current.send_if_modified(|master| {
            if *master == found {
                return false;
            }
            match &found {
                Some(new) => tracing::warn!(master = ?new, "Redis master changed; following it"),
                None => tracing::warn!("no Redis master answers; waiting for the sentinels"),
            }
            *master = found.clone();
            true
        });
    }
}

async fn accept(listener: TcpListener, current: watch::Sender<Master>) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay(inbound, current.subscribe()));
            }
            Err(error) => {
                tracing::warn!(%error, "the Redis relay cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Relays one connection to the master named now, until either side closes it or another
/// server becomes master.
async fn relay(mut inbound: TcpStream, mut master: watch::Receiver<Master>) {
    let target = match tokio::time::timeout(MASTER_WAIT, master.wait_for(Option::is_some)).await {
        Ok(Ok(named)) => named.clone(),
        _ => None,
    };
    let Some((host, port)) = target else {
        return;
    };
    let mut upstream = match TcpStream::connect((host.as_str(), port)).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(%error, %host, port, "cannot reach the Redis master");
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let moved = async {
        let _ = master
            .wait_for(|now| now.as_ref().is_some_and(|(h, p)| (h, *p) != (&host, port)))
            .await;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => {}
        () = moved => {}
    }
}
