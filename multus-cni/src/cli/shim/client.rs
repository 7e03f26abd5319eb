//! A small synchronous HTTP/1.1 client over a unix socket: one request, `Connection: close`,
//! the answer read to the end. Enough for the thick protocol (see [`crate::thick`]), and
//! no async runtime in the CNI binary.
use std::{
    io::{self, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use crate::thick::{CNI_ENDPOINT, EXIT_CODE_HEADER};

/// Largest answer read from the agent (a CNI result is a few KiB).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why no usable answer came back.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The socket could not be connected: nothing was sent, the agent saw nothing.
    Unreachable(io::Error),
    /// The connection broke after the request went out, without an answer (the agent died).
    Dropped(String),
    /// The agent did not answer in time; it may still be working on the request.
    TimedOut(Duration),
    /// Something answered, but not in the protocol's shape.
    BadAnswer(String),
}

/// What the agent answered.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `CNI-Exit-Code` header, when present.
    pub exit_code: Option<i32>,
    /// The body: what to print on stdout.
    pub body: String,
}

/// Sends `POST /cni` with `headers` and `body` to the socket and reads the answer.
pub(crate) fn send(
    socket: &Path,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, SendError> {
    let mut stream = UnixStream::connect(socket).map_err(SendError::Unreachable)?;
    let timed = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => SendError::TimedOut(timeout),
        _ => SendError::Dropped(e.to_string()),
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| SendError::Dropped(e.to_string()))?;
    let mut head = format!(
        "POST {CNI_ENDPOINT} HTTP/1.1\r\nHost: multus-agent\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    // A write error may mean the agent refused early and already answered: read that answer.
    let written = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush());
    let mut buf = Vec::new();
    let read = (&mut stream).take(MAX_ANSWER).read_to_end(&mut buf);
    match (written, read) {
        (_, Ok(_)) if !buf.is_empty() => parse(&buf),
        (Err(e), _) => Err(timed(e)),
        (Ok(()), Err(e)) => Err(timed(e)),
        (Ok(()), Ok(_)) => Err(SendError::Dropped(
            "the agent closed the connection without answering".to_owned(),
        )),
    }
}

/// Parses a complete HTTP/1.1 answer (status line, headers, a body of Content-Length bytes or
/// up to the end of the stream).
fn parse(buf: &[u8]) -> Result<Answer, SendError> {
    let bad = |what: &str| SendError::BadAnswer(what.to_owned());
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| SendError::Dropped("the answer ended inside its headers".to_owned()))?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad(&format!("not an HTTP answer: {status_line:?}")));
    }
    let status = code
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("no status code in {status_line:?}")))?;
    let mut content_length = None;
    let mut exit_code = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(&format!("malformed header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad(&format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case(EXIT_CODE_HEADER) {
            exit_code = Some(
                value
                    .parse::<i32>()
                    .map_err(|_| bad(&format!("bad {EXIT_CODE_HEADER} {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked answers are not part of the protocol"));
        }
    }
    let rest = &buf[split + 4..];
    let body = match content_length {
        Some(n) if rest.len() < n => {
            return Err(SendError::Dropped(format!(
                "the answer was cut off after {} of {n} body bytes",
                rest.len()
            )));
        }
        Some(n) => &rest[..n],
        None => rest,
    };
    let body = String::from_utf8(body.to_vec()).map_err(|_| bad("the body is not UTF-8"))?;
    Ok(Answer {
        status,
        exit_code,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncni-exit-code: 1\r\n\r\nhello!")
            .unwrap();
        assert_eq!(
            (a.status, a.exit_code, a.body.as_str()),
            (200, Some(1), "hello")
        );
        let a = parse(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!(
            (a.status, a.exit_code, a.body.as_str()),
            (404, None, "nope")
        );
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort"),
            Err(SendError::Dropped(_))
        ));
        assert!(matches!(
            parse(b"SSH-2.0\r\n\r\n"),
            Err(SendError::BadAnswer(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Err(SendError::Dropped(_))
        ));
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let err = send(
            &dir.path().join("none.sock"),
            &[],
            b"{}",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, SendError::Unreachable(_)), "{err:?}");
    }
}
