//! A request whose body the server may refuse before reading it, over a
//! plain TCP connection: `Expect: 100-continue` is sent and the answer
//! read while the body goes out, the way curl does it.
//!
//! Why not reqwest: hyper's client writes the whole body before it looks
//! at the answer, so when a server answers `413` from `Content-Length`
//! and closes the connection (hyper's server does, axum's handlers that
//! leave the body unread too), the client gets a broken pipe instead of
//! the `413` (hyperium/hyper#2384). Plain `http://` only.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::http::Answer;

/// How long to wait for `100 Continue` or an early answer before sending
/// the body anyway (RFC 9110 §10.1.1 lets a client go on).
const CONTINUE_WAIT: Duration = Duration::from_secs(3);
/// How long the whole exchange may take.
const EXCHANGE: Duration = Duration::from_secs(60);
/// The most header bytes read.
const MAX_HEAD: usize = 64 << 10;
/// The most answer body bytes read.
const MAX_BODY: usize = 1 << 20;

/// `POST` of `body` to `path` of the `http://` server at `base_url`, with
/// `Authorization: Bearer token` and `Content-Type: application/json`.
pub(crate) async fn post(
    base_url: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> Result<Answer, Error> {
    let what = format!("POST {path}");
    let failed = |detail: String| Error::Request {
        what: what.clone(),
        detail,
    };
    let url = reqwest::Url::parse(base_url).map_err(|e| failed(e.to_string()))?;
    let host = url.host_str().ok_or_else(|| failed("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let full_path = format!("{}{path}", url.path().trim_end_matches('/'));
    let head = format!(
        "POST {full_path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let exchange = async {
        let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(head.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (go_on, continued) = oneshot::channel();
        let mut reader = tokio::spawn(read_answer(BufReader::new(read), go_on));
        tokio::select! {
            answer = &mut reader => {
                return answer.map_err(|e| failed(e.to_string()))?.map_err(failed);
            }
            _ = continued => {}
            _ = tokio::time::sleep(CONTINUE_WAIT) => {}
        }
        // A write error is the server closing after its answer: the reader
        // has it, or says why not.
        let _ = write.write_all(body).await;
        let _ = write.flush().await;
        reader
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)
    };
    tokio::time::timeout(EXCHANGE, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {} s", EXCHANGE.as_secs())))?
}

/// Reads the final answer, telling `go_on` when a `100 Continue` came.
async fn read_answer<R: AsyncReadExt + Unpin>(
    mut read: BufReader<R>,
    go_on: oneshot::Sender<()>,
) -> Result<Answer, String> {
    let mut go_on = Some(go_on);
    loop {
        let (status, headers) = read_head(&mut read).await?;
        if (100..200).contains(&status) {
            if let Some(tx) = go_on.take() {
                let _ = tx.send(());
            }
            continue;
        }
        let body = read_body(&mut read, &headers).await?;
        return Ok(Answer {
            status,
            headers,
            body,
        });
    }
}

/// The status line and headers of one answer.
async fn read_head<R: AsyncReadExt + Unpin>(
    read: &mut BufReader<R>,
) -> Result<(u16, HeaderMap), String> {
    let mut lines = Vec::new();
    let mut size = 0;
    loop {
        let mut line = String::new();
        let n = read
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the connection closed without an answer".into());
        }
        size += n;
        if size > MAX_HEAD {
            return Err("the answer's head is too large".into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let status_line = lines.first().ok_or("an empty answer")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in &lines[1..] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a header: {line:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// The body by `Content-Length`, by chunks, or up to the close.
async fn read_body<R: AsyncReadExt + Unpin>(
    read: &mut BufReader<R>,
    headers: &HeaderMap,
) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("reading the answer's body: {e}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(length) = header("content-length") {
        let n: usize = length.trim().parse().map_err(|_| "a bad Content-Length")?;
        if n > MAX_BODY {
            return Err(format!("an answer body of {n} bytes"));
        }
        let mut body = vec![0; n];
        read.read_exact(&mut body).await.map_err(io)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            read.read_line(&mut size).await.map_err(io)?;
            let size = size.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16).map_err(|_| "a bad chunk size")?;
            if body.len() + n > MAX_BODY {
                return Err("an answer body over 1 MiB".into());
            }
            let mut chunk = vec![0; n + 2];
            read.read_exact(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (&mut *read)
        .take(MAX_BODY as u64)
        .read_to_end(&mut body)
        .await
        .map_err(io)?;
    Ok(body)
}
