//! The control socket: a Unix stream socket `multiproto.sock` in the daemon's directory, where `mpd status`
//! asks for the daemon's state and `mpd release` frees a nickname. One request per connection: the line
//! `status` or `release NAME`, answered by one line of JSON. Only the daemon's user can reach the socket (it
//! lives in the daemon's directory), and that user is its operator.
//!
//! Requests are bounded (256 bytes); a connection that sends more, or anything else, is answered with an
//! error object and closed.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::reactor::Sources;

/// The control socket's file name in the daemon's directory.
pub const CONTROL_SOCKET: &str = "multiproto.sock";
const MAX_REQUEST: usize = 256;
/// Control connections held at once; more are refused (closed at accept).
const MAX_CONNS: usize = 64;

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
}

/// The listening socket and its connections.
pub(super) struct Control {
    listener: UnixListener,
    conns: Sources<Conn>,
}

impl Control {
    /// Binds `dir/multiproto.sock`, replacing a stale socket file (the caller holds the directory's pidfile
    /// lock, so no live daemon owns it).
    pub fn bind(dir: &Path) -> io::Result<Control> {
        let path = dir.join(CONTROL_SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Control {
            listener: UnixListener::bind(&path)?,
            conns: Sources::new(super::CONTROL_CONNS),
        })
    }

    /// Registers the listener.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    /// Accepts every pending connection.
    pub fn accept(&mut self, registry: &Registry) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        continue;
                    }
                    let token = self.conns.next_token();
                    registry.register(&mut stream, token, Interest::READABLE)?;
                    self.conns.insert(Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket accept failed: {e}");
                    return Ok(());
                }
            }
        }
    }

    /// Handles readiness on a control connection: reads its request and returns it once complete (answer it
    /// with [`Control::reply`]), or goes on writing an answer. A request that is not one is answered with an
    /// error here.
    pub fn serve(&mut self, token: Token, registry: &Registry) -> Option<Request> {
        let c = self.conns.get_mut(token)?;
        if !c.output.is_empty() {
            self.write(token, registry);
            return None;
        }
        let mut buf = [0u8; 128];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if c.input.len() > MAX_REQUEST || c.input.contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token, registry);
                    return None;
                }
            }
        }
        let line = c.input.split(|&b| b == b'\n').next().unwrap_or(&[]);
        match Request::parse(line) {
            Some(r) => Some(r),
            None => {
                self.reply(
                    token,
                    registry,
                    &serde_json::json!({"error": "unknown request; they are: status, release NAME"}),
                );
                None
            }
        }
    }

    /// Answers the request [`Control::serve`] returned for `token`.
    pub fn reply(&mut self, token: Token, registry: &Registry, answer: &serde_json::Value) {
        let Some(c) = self.conns.get_mut(token) else {
            return;
        };
        c.output = answer.to_string().into_bytes();
        c.output.push(b'\n');
        self.write(token, registry);
    }

    fn write(&mut self, token: Token, registry: &Registry) {
        let Some(c) = self.conns.get_mut(token) else {
            return;
        };
        loop {
            match c.stream.write(&c.output[c.written..]) {
                Ok(n) => {
                    c.written += n;
                    if c.written == c.output.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = registry.reregister(&mut c.stream, token, Interest::WRITABLE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(token, registry);
    }

    fn close(&mut self, token: Token, registry: &Registry) {
        if let Some(mut c) = self.conns.remove(token) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

/// A request on the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The daemon's state.
    Status,
    /// Free this nickname from its key.
    Release(String),
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &[u8]) -> Option<Request> {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        match line.split_once(' ') {
            None if line == "status" => Some(Request::Status),
            Some(("release", name)) if !name.is_empty() => Some(Request::Release(name.into())),
            _ => None,
        }
    }
}

/// Asks the daemon running in `dir` for its status (blocking, with a timeout): `Ok(None)` if no daemon
/// answers there.
pub fn query_status(dir: &Path, timeout: Duration) -> io::Result<Option<serde_json::Value>> {
    query(dir, "status", timeout)
}

/// Sends one request line to the daemon in `dir` and reads its JSON answer: `Ok(None)` if no daemon answers
/// there.
pub fn query(
    dir: &Path,
    request: &str,
    timeout: Duration,
) -> io::Result<Option<serde_json::Value>> {
    let path = dir.join(CONTROL_SOCKET);
    let mut s = match StdUnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut out = Vec::new();
    s.take(16 << 20).read_to_end(&mut out)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status answer: {e}"),
        )
    })?;
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(Request::parse(b"status"), Some(Request::Status));
        assert_eq!(Request::parse(b"status\r"), Some(Request::Status));
        assert_eq!(
            Request::parse(b"release alice"),
            Some(Request::Release("alice".into()))
        );
        for bad in [
            &b"release"[..],
            b"release ",
            b"statu",
            b"status x",
            b"\xff",
            b"",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }
}
