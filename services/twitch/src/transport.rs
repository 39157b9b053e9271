//! Where twitch-irc connects. Its `MakeConnection` has no arguments, so the configured address
//! lives in a process-wide slot set by [`set_endpoint`] (one Twitch client per process).

use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use twitch_irc::transport::tcp::{MakeConnection, TCPTransport, TCPTransportConnectError};

/// The transport twitch-irc uses: TCP to the configured endpoint, with TLS for `ircs://`.
pub type Transport = TCPTransport<Configured>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("ircs://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("irc://") {
            (false, rest)
        } else {
            return Err("must start with ircs:// or irc://".into());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse().map_err(|_| format!("invalid port {port:?}"))?,
            ),
            None => (rest, if tls { 6697 } else { 6667 }),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

static ENDPOINT: RwLock<Option<Endpoint>> = RwLock::new(None);

/// Sets where every Twitch connection of this process goes (new connections, reconnects).
pub fn set_endpoint(endpoint: Endpoint) {
    let mut slot = ENDPOINT.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(previous) = slot.as_ref().filter(|previous| **previous != endpoint) {
        tracing::warn!(
            previous = %format!("{}:{}", previous.host, previous.port),
            now = %format!("{}:{}", endpoint.host, endpoint.port),
            "twitch endpoint changed: every twitch client in this process now connects to the new one"
        );
    }
    *slot = Some(endpoint);
}

fn endpoint() -> Endpoint {
    ENDPOINT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_else(|| Endpoint {
            host: "irc.chat.twitch.tv".to_owned(),
            port: 6697,
            tls: true,
        })
}

pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// Connects to [`set_endpoint`]'s address.
pub struct Configured;

#[async_trait]
impl MakeConnection for Configured {
    type Socket = Box<dyn Io>;

    async fn new_socket() -> Result<Self::Socket, TCPTransportConnectError> {
        let endpoint = endpoint();
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        if !endpoint.tls {
            return Ok(Box::new(tcp));
        }
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(endpoint.host.clone()).map_err(std::io::Error::other)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Box::new(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            "ircs://irc.chat.twitch.tv:6697"
                .parse::<Endpoint>()
                .unwrap(),
            Endpoint {
                host: "irc.chat.twitch.tv".into(),
                port: 6697,
                tls: true
            }
        );
        assert_eq!("irc://127.0.0.1".parse::<Endpoint>().unwrap().port, 6667);
        assert!("http://x".parse::<Endpoint>().is_err());
        assert!("irc://x:y".parse::<Endpoint>().is_err());
    }
}
