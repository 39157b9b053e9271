//! The certificate a TLS server presents for a host name: a handshake with the name asked for
//! by SNI (nothing is trusted or sent: the certificate is only read), then its issuer, expiry
//! and names. This is how a domain's certificate state is known — Caddy's admin API does not
//! list the certificates it manages.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::web::CertificateSeen;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use x509_cert::der::Decode;
use x509_cert::der::oid::AssociatedOid;

/// Accepts whatever is presented: the certificate is looked at, not relied on.
#[derive(Debug)]
struct ReadOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake with `address` asking for `host`: what it presented, as of `now`.
pub(crate) async fn presented(address: &str, host: &str, now: DateTime<Utc>) -> CertificateSeen {
    match handshake(address, host).await {
        Ok(der) => describe(&der, host, now),
        Err(error) => CertificateSeen {
            state: "missing".to_owned(),
            issuer: None,
            not_after: None,
            names: Vec::new(),
            error: Some(error),
        },
    }
}

async fn handshake(address: &str, host: &str) -> Result<Vec<u8>, String> {
    let provider = Arc::new(ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("no TLS client: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|err| format!("{host} is not a server name: {err}"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|err| format!("cannot reach {address}: {err}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|err| format!("the TLS handshake with {address} for {host} failed: {err}"))?;
        let (_, session) = tls.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref().to_vec())
            .ok_or_else(|| format!("{address} presented no certificate for {host}"))
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("{address} did not finish a TLS handshake within 10 s"))?
}

/// A DER certificate described for `host` as of `now`.
pub(crate) fn describe(der: &[u8], host: &str, now: DateTime<Utc>) -> CertificateSeen {
    let cert = match x509_cert::Certificate::from_der(der) {
        Ok(cert) => cert,
        Err(err) => {
            return CertificateSeen {
                state: "missing".to_owned(),
                issuer: None,
                not_after: None,
                names: Vec::new(),
                error: Some(format!("the certificate presented does not read: {err}")),
            };
        }
    };
    let tbs = &cert.tbs_certificate;
    let not_after = DateTime::<Utc>::from_timestamp(
        i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX),
        0,
    );
    let names: Vec<String> = tbs
        .extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == x509_cert::ext::pkix::SubjectAltName::OID)
        .filter_map(|ext| {
            x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes()).ok()
        })
        .flat_map(|san| san.0)
        .filter_map(|name| match name {
            x509_cert::ext::pkix::name::GeneralName::DnsName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect();
    let state = if !names.iter().any(|name| covers(name, host)) {
        "wrong_name"
    } else if not_after.is_some_and(|end| end <= now) {
        "expired"
    } else {
        "valid"
    };
    CertificateSeen {
        state: state.to_owned(),
        issuer: Some(tbs.issuer.to_string()),
        not_after,
        names,
        error: None,
    }
}

/// Whether a certificate name (`shop.example.com`, `*.example.com`) covers `host`.
fn covers(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
        None => name == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_covers_its_host_and_a_wildcard_one_label() {
        assert!(covers("shop.example.com", "SHOP.example.com"));
        assert!(covers("*.example.com", "shop.example.com"));
        assert!(!covers("*.example.com", "a.shop.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("shop.example.com", "blog.example.com"));
    }

    #[test]
    fn what_does_not_read_is_missing_and_says_so() {
        let seen = describe(b"not a certificate", "x.test", Utc::now());
        assert_eq!(seen.state, "missing");
        assert!(seen.error.unwrap().contains("does not read"));
    }
}
