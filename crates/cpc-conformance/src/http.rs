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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Length: 0\r\n\r\n";

    /// A server on 127.0.0.1 that answers every request `503` with a hint
    /// of 10 s, keeping the connection; counts the requests.
    async fn always_busy() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        // GET requests: a head and no body.
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            counted.fetch_add(1, Ordering::SeqCst);
                            if stream.write_all(BUSY).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, requests)
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_still_busy_after_two_minutes_of_hints_is_a_busy_error() {
        let (url, requests) = always_busy().await;
        let http = Http::new(&url).unwrap();
        let mut send = tokio::spawn(async move { http.send(&Request::get("/v1/info")).await });
        // The paused clock is stepped by hand, 100 ms per turn of the
        // runtime: the hints' waits pass in simulated time, and an exchange
        // over loopback takes a few turns (far from the client's 10 s
        // connect and 60 s request timeouts). Bounded: 2 000 simulated s.
        let mut turns = 0;
        let result = loop {
            tokio::select! {
                biased;
                done = &mut send => break done.unwrap(),
                () = tokio::time::advance(Duration::from_millis(100)) => {}
            }
            turns += 1;
            assert!(turns < 20_000, "no verdict after {turns} turns");
        };
        let err = result.unwrap_err();
        assert_eq!(
            err,
            Error::Busy {
                what: "GET /v1/info".into(),
                status: 503,
                waited_ms: 120_000,
            }
        );
        assert_eq!(
            err.to_string(),
            "GET /v1/info: still answered 503 after waiting 120000 ms in total"
        );
        // Twelve waits of 10 s each, then the thirteenth 503 ends it.
        assert_eq!(requests.load(Ordering::SeqCst), 13);
    }
}
