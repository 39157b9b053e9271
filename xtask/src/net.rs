//! Just enough URL parsing and TCP probing for `NATS_URL`, `DATABASE_URL` and `REDIS_URL`.

use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `scheme://[user[:password]@]host[:port][/path][?query]`, the parts xtask needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) scheme: String,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The path without its leading `/` (the database name for Postgres).
    pub(crate) path: String,
}

impl Endpoint {
    /// Parses `url`; for a comma-separated server list (NATS) the first one counts.
    pub(crate) fn parse(url: &str, default_port: u16) -> Result<Self> {
        let first = url.split(',').next().unwrap_or_default().trim();
        let (scheme, rest) = first
            .split_once("://")
            .with_context(|| format!("`{first}` is not a URL (no `scheme://`)"))?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_end);
        let path = after
            .strip_prefix('/')
            .map(|path| path.split(['?', '#']).next().unwrap_or_default())
            .unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|info| info.split_once(':').unwrap_or((info, "")))
        {
            Some((user, password)) => (
                Some(percent_decode(user)).filter(|user| !user.is_empty()),
                Some(percent_decode(password)).filter(|password| !password.is_empty()),
            ),
            None => (None, None),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("unclosed `[` in the host of `{scheme}://…`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("invalid port `{port}` in a `{scheme}://` URL"))?,
            None => default_port,
        };
        if port == 0 {
            bail!("port 0 in a `{scheme}://` URL");
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            user,
            password,
            // libpq reads an empty host as "the local socket"; localhost is the TCP equivalent
            host: if host.is_empty() {
                "localhost".to_owned()
            } else {
                host.to_owned()
            },
            port,
            path: path.to_owned(),
        })
    }

    pub(crate) fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host:port` for messages and for connecting (IPv6 hosts in brackets).
    pub(crate) fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A TCP connection to the endpoint, or `None` when nothing accepts within a second.
    pub(crate) fn connect(&self) -> Option<TcpStream> {
        let addresses = (self.host.as_str(), self.port).to_socket_addrs().ok()?;
        addresses
            .into_iter()
            .find_map(|address| TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok())
    }

    pub(crate) fn accepts(&self) -> bool {
        self.connect().is_some()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok());
        match (
            bytes[index],
            hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_database_url() {
        let endpoint = Endpoint::parse(
            "postgres://nebula:ne%40bula@127.0.0.1:5433/nebula?sslmode=disable",
            5432,
        )
        .unwrap();
        assert_eq!(
            endpoint,
            Endpoint {
                scheme: "postgres".into(),
                user: Some("nebula".into()),
                password: Some("ne@bula".into()),
                host: "127.0.0.1".into(),
                port: 5433,
                path: "nebula".into(),
            }
        );
        assert!(endpoint.is_loopback());
    }

    #[test]
    fn fills_in_the_default_port_and_takes_the_first_nats_server() {
        let endpoint =
            Endpoint::parse("nats://nats-1.internal, nats://nats-2.internal:4222", 4322).unwrap();
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port),
            ("nats-1.internal", 4322)
        );
        assert!(!endpoint.is_loopback());
        assert_eq!((endpoint.user, endpoint.password), (None, None));
    }

    #[test]
    fn understands_ipv6_and_localhost() {
        let endpoint = Endpoint::parse("redis://:secret@[::1]:6380/0", 6379).unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 6380));
        assert_eq!(endpoint.address(), "[::1]:6380");
        assert!(endpoint.is_loopback());
        assert_eq!(
            (endpoint.user, endpoint.password.as_deref()),
            (None, Some("secret"))
        );
        assert!(
            Endpoint::parse("postgres:///nebula", 5432)
                .unwrap()
                .is_loopback()
        );
    }

    #[test]
    fn rejects_what_is_not_a_url() {
        assert!(Endpoint::parse("127.0.0.1:4222", 4222).is_err());
        assert!(Endpoint::parse("nats://127.0.0.1:port", 4222).is_err());
        assert!(Endpoint::parse("nats://127.0.0.1:0", 4222).is_err());
    }
}
