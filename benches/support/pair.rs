//! Two endpoints wired back to back in one process, with no network in between: what the SCTP benches
//! measure is the engine alone, both ends.

use std::net::SocketAddr;

use multiproto::sctp::{AssocId, Config, Endpoint, Event};
use multiproto::time::Instant;

/// The server's address as the client sees it, for association `i` (each handshake in a batch uses its own).
pub fn server_addr(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + (i % 40_000) as u16))
}

/// The client's address as the server sees it, for association `i`.
pub fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::from((
        [127, 1, (i >> 16) as u8, (i >> 8) as u8],
        1024 + (i & 0xff) as u16,
    ))
}

/// A server and a client endpoint with benchmark-friendly settings: no heartbeats, so nothing but the
/// measured traffic flows.
pub fn endpoints() -> (Endpoint, Endpoint) {
    let base = Config {
        heartbeat_interval: None,
        max_associations: 1 << 20,
        ..Config::default()
    };
    let server = Endpoint::new(
        Config {
            port: 5000,
            ..base.clone()
        },
        [1; 32],
    );
    let client = Endpoint::new(
        Config {
            port: 6000,
            accept: false,
            ..base
        },
        [2; 32],
    );
    (server, client)
}

/// Which association index a client address stands for (the inverse of [`client_addr`]).
pub fn client_index(a: SocketAddr) -> u32 {
    match a {
        SocketAddr::V4(v) => {
            let o = v.ip().octets();
            (u32::from(o[2]) << 16) | (u32::from(o[3]) << 8) | u32::from(v.port() - 1024)
        }
        SocketAddr::V6(_) => 0,
    }
}

/// Which association index a server address stands for (the inverse of [`server_addr`], below 40 000).
pub fn server_index(a: SocketAddr) -> u32 {
    u32::from(a.port() - 20_000)
}

/// Moves datagrams both ways until neither endpoint has anything to send, each delivered as coming from the
/// address its destination association expects; drops events (counting messages).
pub fn pump(server: &mut Endpoint, client: &mut Endpoint, now: Instant, buf: &mut [u8]) -> usize {
    let mut messages = 0;
    loop {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now, buf) {
            server.handle(now, client_addr(server_index(t.dst)), &buf[..t.len]);
            moved = true;
        }
        while let Some(t) = server.poll_transmit(now, buf) {
            client.handle(now, server_addr(client_index(t.dst)), &buf[..t.len]);
            moved = true;
        }
        for ep in [&mut *server, &mut *client] {
            while let Some((_, e)) = ep.poll_event() {
                if matches!(e, Event::Message { .. }) {
                    messages += 1;
                }
            }
        }
        if !moved {
            return messages;
        }
    }
}

/// Runs one handshake (INIT, INIT ACK, COOKIE ECHO, COOKIE ACK) for address pair `i`; returns the client's id.
pub fn handshake(
    server: &mut Endpoint,
    client: &mut Endpoint,
    i: u32,
    now: Instant,
    buf: &mut [u8],
) -> AssocId {
    let id = client.connect(now, server_addr(i), 5000).expect("connect");
    pump(server, client, now, buf);
    id
}
