//! One exchange with the server under test: a request described exactly
//! (method, path, `Authorization`, `Content-Type`, raw body bytes) and the
//! answer kept whole (status, headers, body). A `429` or `503` is waited
//! out as the server's hint says and the request sent again: a rate limit
//! is the server's right (docs/protocol.md §2.5, nothing was applied), not
//! a verdict on the check.

use std::time::{Duration, SystemTime};

use cpc_protocol::{parse_retry_after, RETRY_AFTER_MS_HEADER};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, Method};

use crate::error::{chain, Error};

/// The longest wait for one hint: a server announcing an hour is not
/// going to be checked today.
const MAX_HINT: Duration = Duration::from_secs(10);
/// The longest total wait for one request.
const MAX_BUSY: Duration = Duration::from_secs(120);
/// The most answer bytes read: every answer of v1 is far smaller.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The `Authorization` header of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// None at all.
    None,
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// This exact value (malformed schemes).
    Raw(&'a str),
}

/// A request, byte for byte what the check wants sent.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub auth: Auth<'a>,
    pub content_type: Option<&'a str>,
    pub headers: Vec<(&'static str, &'a str)>,
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    /// `GET path`, no token.
    pub(crate) fn get(path: &'a str) -> Request<'a> {
        Request {
            method: Method::GET,
            path,
            auth: Auth::None,
            content_type: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// `POST path` with `body` as `application/json`.
    pub(crate) fn post_json(path: &'a str, auth: Auth<'a>, body: Vec<u8>) -> Request<'a> {
        Request {
            method: Method::POST,
            path,
            auth,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: Some(body),
        }
    }

    /// The same request with another method.
    pub(crate) fn method(mut self, method: Method) -> Request<'a> {
        self.method = method;
        self
    }

    /// The same request with another `Content-Type` (`None`: no header).
    pub(crate) fn content_type(mut self, content_type: Option<&'a str>) -> Request<'a> {
        self.content_type = content_type;
        self
    }

    /// The same request with one more header.
    pub(crate) fn header(mut self, name: &'static str, value: &'a str) -> Request<'a> {
        self.headers.push((name, value));
        self
    }

    fn what(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An answer, whole.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`, if it is text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name` that is text.
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The media type of `Content-Type`, lowercase, without parameters.
    pub(crate) fn media_type(&self) -> String {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Status and the start of the body, for a failure's detail.
    pub(crate) fn describe(&self) -> String {
        const SHOWN: usize = 300;
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            return format!("status {} with an empty body", self.status);
        }
        let mut cut = text.len().min(SHOWN);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = if cut < text.len() { "…" } else { "" };
        format!("status {}: {}{more}", self.status, &text[..cut])
    }
}

/// The server's address and a pooled client.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: Client,
    base: String,
}

impl Http {
    /// A client for the server at `base_url` (`http://` or `https://`).
    pub(crate) fn new(base_url: &str) -> Result<Http, Error> {
        let bad = |reason: &str| Error::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let url = reqwest::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment"));
        }
        let client = Client::builder()
            .use_rustls_tls()
            // A conforming server answers itself; a redirect is checked as
            // the answer it is, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Client(chain(&e)))?;
        Ok(Http {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `request`, waiting out `429` and `503` answers as their hints
    /// say (each wait at most 10 s, 2 minutes in all).
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<Answer, Error> {
        let mut waited = Duration::ZERO;
        loop {
            let answer = self.send_once(request).await?;
            if !matches!(answer.status, 429 | 503) {
                return Ok(answer);
            }
            let hint = parse_retry_after(
                answer.header("retry-after"),
                answer.header(RETRY_AFTER_MS_HEADER),
                SystemTime::now(),
            )
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), MAX_HINT);
            if waited + hint > MAX_BUSY {
                return Err(Error::Busy {
                    what: request.what(),
                    status: answer.status,
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                });
            }
            tokio::time::sleep(hint).await;
            waited += hint;
        }
    }

    async fn send_once(&self, request: &Request<'_>) -> Result<Answer, Error> {
        let failed = |e: reqwest::Error| Error::Request {
            what: request.what(),
            detail: chain(&e),
        };
        let mut builder = self.client.request(
            request.method.clone(),
            format!("{}{}", self.base, request.path),
        );
        builder = match request.auth {
            Auth::None => builder,
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::Raw(value) => builder.header(AUTHORIZATION, value),
        };
        if let Some(content_type) = request.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        for (name, value) in &request.headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = &request.body {
            // Cloned: a request waited out after a 429 goes again.
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Error::Request {
                    what: request.what(),
                    detail: format!("the answer exceeds {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}
