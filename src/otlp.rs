//! OTLP/HTTP collector URLs: taken apart and checked (plain `http://`, a host, a port, no
//! credentials). A leaf, so `config` checks `[telemetry] otlp_endpoint` when the file is read
//! without importing `telemetry`, which posts to the endpoint (and re-exports it).

/// The path OTLP/HTTP collectors take traces on.
const TRACES_PATH: &str = "/v1/traces";

/// Why an endpoint URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "`{0}` is https: ralph posts OTLP over plain http; point it at a local collector (http://127.0.0.1:4318) that forwards over TLS"
    )]
    Https(String),
    #[error("`{0}` is not an http:// URL; write it like \"http://127.0.0.1:4318\"")]
    NotHttp(String),
    #[error("`{0}` names no host")]
    NoHost(String),
    #[error("`{0}` has an invalid port")]
    BadPort(String),
    #[error("`{0}` carries user credentials; ralph sends none, so leave them out")]
    Credentials(String),
}

/// Where traces are posted: an `http://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// A base URL (`[telemetry] otlp_endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT`): `/v1/traces`
    /// is appended to its path, unless it already ends with it.
    pub fn base(url: &str) -> Result<Endpoint, EndpointError> {
        let mut e = Self::parse(url)?;
        if !e.path.trim_end_matches('/').ends_with(TRACES_PATH) {
            e.path = format!("{}{TRACES_PATH}", e.path.trim_end_matches('/'));
        }
        Ok(e)
    }

    /// A traces URL used as it is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn traces(url: &str) -> Result<Endpoint, EndpointError> {
        Self::parse(url)
    }

    fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(EndpointError::Https(url.to_string()));
        }
        if !lower.starts_with("http://") {
            return Err(EndpointError::NotHttp(url.to_string()));
        }
        let rest = &url["http://".len()..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(EndpointError::Credentials(url.to_string()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| EndpointError::NoHost(url.to_string()))?;
            (&v6[..close], v6[close + 1..].strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(EndpointError::NoHost(url.to_string()));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| EndpointError::BadPort(url.to_string()))?,
        };
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(Endpoint { host: host.to_string(), port, path })
    }

    /// The URL, for messages.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path)
    }

    /// `host:port`, for the request's `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_the_standard_forms() {
        let e = Endpoint::base("http://127.0.0.1:4318").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("127.0.0.1", 4318, "/v1/traces"));
        assert_eq!(Endpoint::base("http://collector:4318/otlp/").unwrap().path, "/otlp/v1/traces");
        assert_eq!(Endpoint::base("http://c:4318/v1/traces").unwrap().path, "/v1/traces");
        assert_eq!(Endpoint::base("HTTP://c").unwrap().port, 80);
        let v6 = Endpoint::traces("http://[::1]:9999/custom").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 9999, "/custom"));
        assert_eq!(v6.url(), "http://[::1]:9999/custom");
        assert_eq!(Endpoint::traces("http://c:1").unwrap().path, "/");

        assert!(matches!(Endpoint::base("https://api.example.com"), Err(EndpointError::Https(_))));
        assert!(matches!(Endpoint::base("127.0.0.1:4318"), Err(EndpointError::NotHttp(_))));
        assert!(matches!(Endpoint::base("http://:4318"), Err(EndpointError::NoHost(_))));
        assert!(matches!(Endpoint::base("http://c:port"), Err(EndpointError::BadPort(_))));
        assert!(matches!(Endpoint::base("http://c:0"), Err(EndpointError::BadPort(_))));
        assert!(matches!(Endpoint::base("http://u:pw@c:1"), Err(EndpointError::Credentials(_))));
    }
}
