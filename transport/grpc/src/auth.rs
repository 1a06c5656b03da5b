//! The cluster token: [`AuthToken`], the server's [`Guard`] in front of both services,
//! and the clients' [`Credentials`] that present the token.
//!
//! # Protocol
//! A server started with a token (`GrpcOptions::auth_token`, `magpie server
//! --auth-token-file`) takes a call of either service only when its metadata carries
//! `authorization: Bearer <token>` with the cluster's token; a missing or different one
//! is `UNAUTHENTICATED`. The comparison takes the same time whatever the bytes presented
//! (`subtle`); only the length of a wrong token can show in its timing. Tasks present
//! the token to each other with their own requests, so one file configures a cluster.
//!
//! With mutual TLS the guard also refuses (`UNAUTHENTICATED`) a worker-service call from
//! a peer that presented no certificate; a certificate the cluster CA did not sign never
//! gets that far, the TLS handshake refuses it.
//!
//! The token is never logged: [`AuthToken`]'s `Debug` prints no byte of it, errors about
//! a token file name the file and never its content, and the metadata value is marked
//! sensitive (HTTP/2 never indexes it in HPACK tables).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::GrpcError;

/// The metadata key of the token.
const AUTHORIZATION: &str = "authorization";
/// The scheme before the token in the metadata value.
const BEARER: &str = "Bearer ";
/// Shortest token accepted: shorter ones are too easy to guess.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted (it travels in every request's headers).
pub const MAX_TOKEN_LEN: usize = 1024;

/// A cluster's shared secret: every task requires it of every call, and presents it in
/// its own calls. Printable ASCII, [`MIN_TOKEN_LEN`]..=[`MAX_TOKEN_LEN`] bytes.
///
/// ```
/// use magpie_grpc::AuthToken;
///
/// let token = AuthToken::new("correct-horse-battery-staple").unwrap();
/// assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
/// assert!(AuthToken::new("short").is_err());
/// ```
#[derive(Clone)]
pub struct AuthToken {
    secret: Arc<[u8]>,
    /// `Bearer <token>`, marked sensitive.
    header: MetadataValue<Ascii>,
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    /// The token `token`, without surrounding whitespace.
    ///
    /// # Errors
    ///
    /// [`GrpcError::Auth`] when it is shorter than [`MIN_TOKEN_LEN`], longer than
    /// [`MAX_TOKEN_LEN`], or holds a byte that is not printable ASCII (the message never
    /// quotes the token).
    pub fn new(token: impl AsRef<str>) -> Result<AuthToken, GrpcError> {
        AuthToken::parse(token.as_ref().as_bytes(), "the auth token")
    }

    /// The token in the file at `path` (surrounding whitespace, such as a final newline,
    /// is not part of it).
    ///
    /// # Errors
    ///
    /// [`GrpcError::Auth`] naming the file when it cannot be read or its content is not a
    /// valid token (see [`AuthToken::new`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<AuthToken, GrpcError> {
        let path = path.as_ref();
        let what = format!("auth token file {}", path.display());
        let bytes = std::fs::read(path).map_err(|e| GrpcError::Auth {
            what: what.clone(),
            detail: e.to_string(),
        })?;
        warn_if_readable_by_others(path);
        AuthToken::parse(&bytes, &what)
    }

    fn parse(bytes: &[u8], what: &str) -> Result<AuthToken, GrpcError> {
        let bad = |detail: String| GrpcError::Auth {
            what: what.to_string(),
            detail,
        };
        let token = bytes.trim_ascii();
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "a token needs at least {MIN_TOKEN_LEN} characters, this one has {}",
                token.len()
            )));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad(format!(
                "a token has at most {MAX_TOKEN_LEN} characters, this one has {}",
                token.len()
            )));
        }
        if let Some(at) = token.iter().position(|b| !(0x21..=0x7e).contains(b)) {
            return Err(bad(format!(
                "character {} is not printable ASCII (a token is printable ASCII without \
                 spaces)",
                at + 1
            )));
        }
        let mut header = format!("{BEARER}{}", String::from_utf8_lossy(token))
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| bad("not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok(AuthToken {
            secret: token.into(),
            header,
        })
    }

    /// Whether `presented` is this token, in time independent of its bytes.
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.secret.as_ref().ct_eq(presented))
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the auth token file can be read by other users (chmod 600 it)"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The server's check in front of a service: the token, and for the worker service under
/// mutual TLS, a verified client certificate.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    token: Option<AuthToken>,
    require_client_cert: bool,
    service: &'static str,
}

impl Guard {
    /// A guard of `service` (named in its errors).
    pub(crate) fn new(
        service: &'static str,
        token: Option<AuthToken>,
        require_client_cert: bool,
    ) -> Guard {
        Guard {
            token,
            require_client_cert,
            service,
        }
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.require_client_cert && request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated(format!(
                "{} calls need a client certificate signed by the cluster CA (this server \
                 runs mutual TLS)",
                self.service
            )));
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        let Some(value) = request.metadata().get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "{} calls need the cluster token (metadata \"authorization: Bearer <token>\"; \
                 clients: GrpcOptions::auth_token or MAGPIE_AUTH_TOKEN_FILE)",
                self.service
            )));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(BEARER.as_bytes())
            .unwrap_or_default();
        if !token.matches(presented) {
            return Err(Status::unauthenticated(format!(
                "{} refused the call: wrong cluster token",
                self.service
            )));
        }
        Ok(())
    }
}

impl Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// A client's side: adds the token, if any, to every request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials(Option<AuthToken>);

impl Credentials {
    /// Presents `token` (nothing when `None`).
    pub(crate) fn new(token: Option<AuthToken>) -> Credentials {
        Credentials(token)
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, t.header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert(AUTHORIZATION, a.parse().unwrap());
        }
        r
    }

    #[test]
    fn the_guard_takes_only_the_right_token() {
        let token = AuthToken::new("0123456789abcdef-secret").unwrap();
        let mut g = Guard::new("MasterService", Some(token.clone()), false);
        assert!(g
            .call(request(Some("Bearer 0123456789abcdef-secret")))
            .is_ok());
        for bad in [
            None,
            Some("Bearer 0123456789abcdef-secreT"),
            Some("Bearer 0123456789abcdef-secret2"),
            Some("0123456789abcdef-secret"),
            Some("Bearer "),
        ] {
            let e = g.call(request(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!e.message().contains("secret"), "{}", e.message());
        }
        // What the client side sends is what the server takes.
        let sent = Credentials::new(Some(token))
            .call(Request::new(()))
            .unwrap();
        assert!(g.call(sent).is_ok());
    }

    #[test]
    fn without_a_token_the_guard_takes_everything_but_certless_worker_calls_under_mtls() {
        assert!(Guard::new("MasterService", None, false)
            .call(request(None))
            .is_ok());
        let e = Guard::new("WorkerService", None, true)
            .call(request(None))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(
            e.message().contains("client certificate"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn bad_tokens_are_refused_without_quoting_them() {
        for (t, why) in [
            ("short", "at least"),
            ("has a space in the middle", "printable"),
            ("tab\there-and-more-bytes", "printable"),
        ] {
            let e = AuthToken::new(t).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains(t), "{e}");
        }
        let e = AuthToken::new("x".repeat(MAX_TOKEN_LEN + 1)).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        // Surrounding whitespace (a file's final newline) is not part of the token.
        let t = AuthToken::new("  0123456789abcdef\n").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert_eq!(format!("{t:?}"), "AuthToken(<redacted>)");
    }
}
