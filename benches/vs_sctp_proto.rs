//! Our SCTP engine beside `sctp-proto` (the sans-IO SCTP the design names as the peer to measure against),
//! each with both endpoints in this process and datagrams handed straight from one to the other: no sockets,
//! no threads, a fake clock.
//!
//! `cargo bench --bench vs_sctp_proto` prints, for both stacks:
//! - whether they interoperate: our client against a `sctp-proto` server and theirs against ours
//!   (handshake, ten echoed messages checked byte for byte, graceful shutdown);
//! - memory per idle established association on the server side: [`IDLE`] associations from one client
//!   endpoint to one server endpoint, idle after the handshake alone and after one 100-byte message each
//!   way (all acknowledged, delayed-SACK timers run out); heap counted by a per-thread counting allocator
//!   around every server-side call, plus the association struct sizes. A table and one JSON line;
//! - criterion time for one 100-byte message and its acknowledgement, both ends (two ways, see [`Mode`]),
//!   and for one complete handshake, both ends.
//!
//! Fairness choices:
//! - **SACKs.** Both receivers delay SACKs as RFC 9260 §6.2 says (the first DATA packet arms a timer, the
//!   second is acknowledged at once) and both honour the I bit. The senders differ: ours sets the I bit on
//!   the last message it has queued, so a message sent alone is acknowledged at once; `sctp-proto` never
//!   sets it, and keeps its ack mode private. Hence two measurements. [`Mode::DataAndSack`] is one DATA
//!   packet and one SACK packet per message on both (`sctp-proto`'s SACK then comes from its delayed-ack
//!   timer, after the fake clock moves on); [`Mode::Stream`] is each stack's own behaviour in a stream of
//!   messages sent one at a time (ours one SACK per message, theirs one per two). The SACK ratios are
//!   checked before timing and printed. Ours in `Stream` is the same measurement as
//!   `assoc/message_100B_and_sack_both_ends` in `benches/sctp.rs`.
//! - **Delivery.** Ours hands the receiver each message as an owned `Vec` in an event; `sctp-proto` keeps it
//!   in the stream's queue until the application reads it, so the harness reads it out (into a stack buffer)
//!   in the same turn. Either way the application ends up holding the bytes.
//! - **Buffers.** Ours writes each outgoing packet into a caller buffer and parses received ones from a
//!   borrowed slice; `sctp-proto` returns owned `Bytes` and takes owned `Bytes`. The timing loop moves its
//!   `Bytes` from sender to receiver untouched, not charging it the copy a real receiver would make from its
//!   socket buffer. The memory run does copy (inside the receiver's accounting) so that each allocation is
//!   charged to the endpoint that keeps or frees it.
//! - **Configuration.** Both run their defaults except for ports (and ours without heartbeats, as in every
//!   SCTP bench here: `sctp-proto` has no heartbeat timer at all). Both advertise a 1 MiB receive window.
//!   The handshakes differ in kind: ours seals and checks an HMAC-SHA256 state cookie and keeps no state
//!   before COOKIE ECHO; `sctp-proto` creates its association on INIT and its cookie carries no MAC.
//! - **Allocator.** Allocations are counted only during the memory run; the timed runs go straight to the
//!   system allocator.
//!
//! `cargo test --benches` runs the interop check and a small version of the rest (a few associations, a few
//! messages), untimed. `vs_sctp_proto cost STACK MODE N` runs a fixed amount of exchange work for callgrind
//! (see [`cost`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use criterion::{BatchSize, Criterion, Throughput};
use multiproto::sctp::{AssocId, DownReason, Endpoint, Event};
use multiproto::time::Instant;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, EndpointConfig, Payload,
    PayloadProtocolIdentifier, ServerConfig, StreamEvent, TransportConfig,
};

#[path = "support/pair.rs"]
mod pair;

#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

/// Idle associations measured in the memory comparison (after [`WARM`]).
const IDLE: u32 = 1000;
/// Associations set up before the memory baseline is taken: the first ones size pools and fixed buffers,
/// which then are not charged to the measured ones. `WARM + IDLE` is a power of two, so the slabs and the
/// application's table (which grow by doubling, and hold the association structs) end exactly full, and
/// neither stack is charged for half-empty capacity there; hash maps, with their 7/8 load limit, end about
/// half full in both.
const WARM: u32 = 24;
/// The message size of the exchange.
const MSG: usize = 100;

/// Whether allocations are being counted (the memory run only).
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The global allocator: the counting one while [`COUNTING`] is set, the system one otherwise, so the timed
/// runs pay nothing for the count. Both stacks allocate from it alike.
struct Switch;

// SAFETY: every call is forwarded to an allocator that upholds `GlobalAlloc`'s contract; the counting one
// forwards to `System` too, so memory from either path may be freed by the other.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                counting_alloc::Counting.alloc(l)
            } else {
                System.alloc(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged; both paths free with `System`.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                counting_alloc::Counting.dealloc(p, l)
            } else {
                System.dealloc(p, l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; both paths reallocate with `System`.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                counting_alloc::Counting.realloc(p, l, new)
            } else {
                System.realloc(p, l, new)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Switch = Switch;

/// Net heap bytes allocated inside the calls made through it: wrapping every call into one endpoint (and the
/// drop of whatever it hands out) charges that endpoint, and only it, for what it keeps.
#[derive(Default)]
struct Meter {
    held: i64,
}

impl Meter {
    fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let before = live();
        let r = f();
        self.held += live() - before;
        r
    }
}

/// The server's address as the client sees it and the client's as the server sees it (one UDP address each:
/// associations differ by SCTP port, or for `sctp-proto` by verification tag).
const SERVER_UDP: ([u8; 4], u16) = ([127, 0, 0, 1], 9899);
const CLIENT_UDP: ([u8; 4], u16) = ([127, 0, 0, 2], 9899);

// ---------------------------------------------------------------------------------------------------------
// sctp-proto, driven the way its documentation asks: the endpoint routes datagrams, the application owns
// each `Association` and feeds it events, polls its transmits, events and endpoint events.

/// One side of a `sctp-proto` pair: its endpoint and the associations it owns, indexed by handle.
struct Proto {
    ep: sctp_proto::Endpoint,
    /// Indexed by `AssociationHandle.0` (the endpoint's slab key): the application's association table.
    assocs: Vec<Option<Association>>,
    /// Associations that may have something to send or report, like our engine's internal ready queue; an
    /// association stays on it until it has nothing more to send.
    dirty: Vec<usize>,
    /// The address its datagrams come from, as the other side sees it.
    addr: SocketAddr,
    /// Associations that reported `Connected`.
    up: usize,
    /// Complete messages read by the application.
    messages: usize,
    /// Whether to send each message back on the stream it came on (the memory run's echo, interop).
    echo: bool,
    /// Whether to keep a copy of each message in `inbox` (interop checks).
    keep: bool,
    /// Messages kept when `keep` is set.
    inbox: Vec<Vec<u8>>,
    /// `AssociationLost` events (interop: how an association's end is reported).
    lost: Vec<String>,
    /// Where the application reads messages to (kept, so reading does not zero a new buffer each time).
    rbuf: Vec<u8>,
}

impl Proto {
    fn new(server: bool, addr: SocketAddr) -> Proto {
        let server_config = server.then(|| Arc::new(ServerConfig::new()));
        Proto {
            ep: sctp_proto::Endpoint::new(Arc::new(EndpointConfig::new()), server_config),
            assocs: Vec::new(),
            dirty: Vec::new(),
            addr,
            up: 0,
            messages: 0,
            echo: false,
            keep: false,
            inbox: Vec::new(),
            lost: Vec::new(),
            rbuf: vec![0; 2048],
        }
    }

    /// The live association with handle `h`.
    fn assoc(&mut self, h: usize) -> &mut Association {
        self.assocs[h].as_mut().expect("live association")
    }

    /// Takes ownership of a new association, as the application must.
    fn place(&mut self, h: AssociationHandle, a: Association) {
        if self.assocs.len() <= h.0 {
            self.assocs.resize_with(h.0 + 1, || None);
        }
        self.assocs[h.0] = Some(a);
        self.dirty.push(h.0);
    }

    /// Starts an association from SCTP port `local_port` (sends INIT on the next poll).
    fn connect(&mut self, to: SocketAddr, local_port: u16) -> usize {
        let transport = TransportConfig::default().with_local_port(local_port);
        let mut cfg = ClientConfig::new();
        cfg.transport = Arc::new(transport);
        let (h, a) = self.ep.connect(cfg, to).expect("connect");
        self.place(h, a);
        h.0
    }

    /// Queues a message on stream 0 of association `h`, opening the stream on first use.
    fn send(&mut self, h: usize, msg: &[u8]) {
        let a = self.assoc(h);
        let mut s = match a.stream(0) {
            Ok(s) => s,
            Err(_) => a
                .open_stream(0, PayloadProtocolIdentifier::Binary)
                .expect("open stream"),
        };
        assert_eq!(s.write(msg).expect("write"), msg.len());
        self.dirty.push(h);
    }

    /// Datagrams from the other side (one `Transmit`'s worth).
    fn handle(&mut self, now: StdInstant, from: SocketAddr, pkts: Payload) {
        let Payload::RawEncode(pkts) = pkts else {
            unreachable!("outgoing payloads are encoded")
        };
        for pkt in pkts {
            match self.ep.handle(now, from, None, None, pkt) {
                Some((h, DatagramEvent::NewAssociation(a))) => self.place(h, a),
                Some((h, DatagramEvent::AssociationEvent(e))) => {
                    self.assoc(h.0).handle_event(e);
                    self.dirty.push(h.0);
                }
                None => {}
            }
        }
    }

    /// Reports and reads everything association `h` has for the application.
    fn service(&mut self, h: usize) {
        let buf = &mut self.rbuf;
        let mut replies = Vec::new();
        let a = self.assocs[h].as_mut().expect("live association");
        while let Some(e) = a.poll_endpoint_event() {
            // Only `Drained` exists; it never answers with an event for the association.
            let _ = self.ep.handle_event(AssociationHandle(h), e);
        }
        while let Some(e) = a.poll() {
            match e {
                sctp_proto::Event::Connected => self.up += 1,
                sctp_proto::Event::Stream(StreamEvent::Opened { .. }) => {
                    let _ = a.accept_stream();
                }
                sctp_proto::Event::Stream(StreamEvent::Readable { id }) => {
                    let mut s = a.stream(id).expect("readable stream");
                    while let Some(chunks) = s.read().expect("read") {
                        let n = chunks.read(buf).expect("message fits");
                        black_box(&buf[..n]);
                        self.messages += 1;
                        if self.keep {
                            self.inbox.push(buf[..n].to_vec());
                        }
                        if self.echo {
                            replies.push(buf[..n].to_vec());
                        }
                    }
                }
                sctp_proto::Event::AssociationLost { reason } => self.lost.push(reason.to_string()),
                _ => {}
            }
        }
        for r in replies {
            self.send(h, &r);
        }
    }

    /// The next datagrams to send (one `Transmit` may carry several).
    fn poll_transmit(&mut self, now: StdInstant) -> Option<Payload> {
        while let Some(&h) = self.dirty.last() {
            self.service(h);
            if let Some(t) = self.assoc(h).poll_transmit(now) {
                return Some(t.payload);
            }
            self.dirty.pop();
        }
        // The endpoint itself queues nothing in this version; drain it anyway in case a later one does.
        self.ep.poll_transmit().map(|t| t.payload)
    }

    /// Runs every association's timers due at `now`.
    fn handle_timeouts(&mut self, now: StdInstant) {
        for h in 0..self.assocs.len() {
            if let Some(a) = self.assocs[h].as_mut()
                && a.poll_timeout().is_some_and(|t| t <= now)
            {
                a.handle_timeout(now);
                self.dirty.push(h);
            }
        }
    }
}

/// Moves datagrams both ways until neither side has anything to send; the timing loop's shape, the same as
/// [`pair::pump`] for ours. Returns the messages the two sides read.
fn proto_pump(server: &mut Proto, client: &mut Proto, now: StdInstant) -> usize {
    let before = server.messages + client.messages;
    loop {
        let mut moved = false;
        while let Some(p) = client.poll_transmit(now) {
            server.handle(now, client.addr, p);
            moved = true;
        }
        while let Some(p) = server.poll_transmit(now) {
            client.handle(now, server.addr, p);
            moved = true;
        }
        if !moved {
            return server.messages + client.messages - before;
        }
    }
}

/// The same pump with every server-side call, and the drop of what the server hands out, charged to `m`;
/// datagrams reach the server as fresh copies made inside its accounting, as from its own receive buffer.
fn proto_pump_metered(server: &mut Proto, client: &mut Proto, now: StdInstant, m: &mut Meter) {
    loop {
        let mut moved = false;
        while let Some(p) = client.poll_transmit(now) {
            m.run(|| server.handle(now, client.addr, copy(&p)));
            moved = true;
        }
        while let Some(p) = m.run(|| server.poll_transmit(now)) {
            client.handle(now, server.addr, copy(&p));
            m.run(|| drop(p));
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// A fresh copy of outgoing datagrams, as a receiver would make from its socket buffer.
fn copy(p: &Payload) -> Payload {
    let Payload::RawEncode(pkts) = p else {
        unreachable!("outgoing payloads are encoded")
    };
    Payload::RawEncode(pkts.iter().map(|b| b.to_vec().into()).collect())
}

/// A `sctp-proto` client and server with one established association; returns its handle on the client.
fn proto_pair(now: StdInstant) -> (Proto, Proto, usize) {
    let mut server = Proto::new(true, SocketAddr::from(SERVER_UDP));
    let mut client = Proto::new(false, SocketAddr::from(CLIENT_UDP));
    let h = client.connect(server.addr, 5000);
    proto_pump(&mut server, &mut client, now);
    assert_eq!((client.up, server.up), (1, 1), "sctp-proto handshake");
    (server, client, h)
}

// ---------------------------------------------------------------------------------------------------------
// Ours, through the same helpers as benches/sctp.rs.

/// [`pair::pump`] with every server-side call, and the drop of what the server hands out, charged to `m`;
/// the ids of associations that came up on the server are pushed to `ups`, and each message the server
/// receives is answered with one of the same size (the echo).
fn ours_pump_metered(
    server: &mut Endpoint,
    client: &mut Endpoint,
    now: Instant,
    buf: &mut [u8],
    m: &mut Meter,
    ups: &mut Vec<AssocId>,
) {
    loop {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now, buf) {
            let pkt = &buf[..t.len];
            m.run(|| server.handle(now, SocketAddr::from(CLIENT_UDP), pkt));
            moved = true;
        }
        while let Some(t) = m.run(|| server.poll_transmit(now, buf)) {
            client.handle(now, SocketAddr::from(SERVER_UDP), &buf[..t.len]);
            moved = true;
        }
        while let Some((id, up, message)) = m.run(|| {
            server
                .poll_event()
                .map(|(id, e)| (id, e == Event::Up, matches!(e, Event::Message { .. })))
        }) {
            if up {
                ups.push(id);
            }
            if message {
                m.run(|| server.send(id, 0, false, &[0xa5; MSG]).expect("echo"));
                moved = true;
            }
        }
        while client.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
}

/// What the memory run found for one stack in one state.
struct Memory {
    /// Server-side heap per idle association, all-in (association state, the endpoint's indexes and slab
    /// slots, the application's association table for `sctp-proto`), over the [`IDLE`] measured ones.
    heap_per_assoc: f64,
    /// Size of the association struct.
    struct_size: usize,
    /// Heap owned by one idle association object itself (ours: `Endpoint::heap_bytes`; `sctp-proto`: what
    /// dropping the `Association` frees), averaged.
    assoc_heap: f64,
    /// Server-side heap still charged after everything was dropped: 0 if the accounting is right.
    residue: i64,
}

/// Ours: `n` associations from one client endpoint (distinct local SCTP ports) to one server endpoint, after
/// [`WARM`] others; with `talk`, each carries one message each way before going idle.
fn memory_ours(n: u32, talk: bool) -> Memory {
    let mut buf = vec![0u8; 2048];
    let mut now = Instant::from_millis(1);
    let mut m = Meter::default();
    // `pair::endpoints` makes both ends at once; charge the server with only its own share by crediting back
    // what a second client, made the same way, allocated.
    let (mut server, mut client) = m.run(pair::endpoints);
    let (other_server, other_client) = pair::endpoints();
    m.run(|| drop(other_client));
    drop(other_server);
    let server_addr = SocketAddr::from(SERVER_UDP);
    let mut ups = Vec::with_capacity((WARM + n) as usize);
    let mut setup = |range: std::ops::Range<u32>,
                     server: &mut Endpoint,
                     client: &mut Endpoint,
                     m: &mut Meter,
                     now: &mut Instant| {
        for i in range {
            let id = client
                .connect_from(*now, 7000 + i as u16, server_addr, 5000)
                .expect("connect");
            ours_pump_metered(server, client, *now, &mut buf, m, &mut ups);
            if talk {
                client.send(id, 0, false, &[0x5a; MSG]).expect("send");
                ours_pump_metered(server, client, *now, &mut buf, m, &mut ups);
            }
        }
        // Idle: let delayed SACKs go out and nothing stay in flight.
        for _ in 0..3 {
            *now += Duration::from_millis(300);
            m.run(|| server.handle_timeout(*now));
            client.handle_timeout(*now);
            ours_pump_metered(server, client, *now, &mut buf, m, &mut ups);
        }
    };
    setup(0..WARM, &mut server, &mut client, &mut m, &mut now);
    let base = m.held;
    setup(WARM..WARM + n, &mut server, &mut client, &mut m, &mut now);
    let total = WARM + n;
    assert_eq!((server.len(), ups.len()), (total as usize, total as usize));
    let echoes = if talk { u64::from(total) } else { 0 };
    assert_eq!(server.stats().messages_in, echoes);
    assert_eq!(client.stats().messages_in, echoes);
    let heap_per_assoc = (m.held - base) as f64 / f64::from(n);
    let assoc_heap = ups
        .iter()
        .map(|&id| server.heap_bytes(id).expect("live") as f64)
        .sum::<f64>()
        / f64::from(total);
    m.run(|| drop(server));
    Memory {
        heap_per_assoc,
        struct_size: Endpoint::assoc_size(),
        assoc_heap,
        residue: m.held,
    }
}

/// `sctp-proto`: the same as [`memory_ours`].
fn memory_proto(n: u32, talk: bool) -> Memory {
    let mut now = StdInstant::now();
    let mut m = Meter::default();
    // The client first: making an endpoint seeds `rand`'s thread-local generator, a once-per-thread cost
    // that would otherwise be charged to the server.
    let mut client = Proto::new(false, SocketAddr::from(CLIENT_UDP));
    let mut server = m.run(|| Proto::new(true, SocketAddr::from(SERVER_UDP)));
    server.echo = true;
    let setup = |range: std::ops::Range<u32>,
                 server: &mut Proto,
                 client: &mut Proto,
                 m: &mut Meter,
                 now: &mut StdInstant| {
        for i in range {
            let h = client.connect(server.addr, 7000 + i as u16);
            proto_pump_metered(server, client, *now, m);
            if talk {
                client.send(h, &[0x5a; MSG]);
                proto_pump_metered(server, client, *now, m);
            }
        }
        for _ in 0..3 {
            *now += Duration::from_millis(300);
            m.run(|| server.handle_timeouts(*now));
            client.handle_timeouts(*now);
            proto_pump_metered(server, client, *now, m);
        }
    };
    setup(0..WARM, &mut server, &mut client, &mut m, &mut now);
    let base = m.held;
    setup(WARM..WARM + n, &mut server, &mut client, &mut m, &mut now);
    let total = (WARM + n) as usize;
    assert_eq!((server.up, client.up), (total, total), "all established");
    let echoes = if talk { total } else { 0 };
    assert_eq!((server.messages, client.messages), (echoes, echoes));
    let heap_per_assoc = (m.held - base) as f64 / f64::from(n);
    // The association objects' own heap: what dropping each one frees (its struct stays in the table).
    let before = m.held;
    for slot in &mut server.assocs {
        let a = slot.take();
        m.run(|| drop(a));
    }
    let assoc_heap = (before - m.held) as f64 / total as f64;
    m.run(|| drop(server));
    Memory {
        heap_per_assoc,
        struct_size: std::mem::size_of::<Association>(),
        assoc_heap,
        residue: m.held,
    }
}

/// Runs the memory comparison for `n` associations (after [`WARM`]); prints a table and a JSON line if
/// `print`.
fn memory(n: u32, print: bool) {
    COUNTING.store(true, Ordering::Relaxed);
    let rows = [
        ("ours", "handshake only", memory_ours(n, false)),
        ("ours", "one message each way", memory_ours(n, true)),
        ("sctp-proto", "handshake only", memory_proto(n, false)),
        ("sctp-proto", "one message each way", memory_proto(n, true)),
    ];
    COUNTING.store(false, Ordering::Relaxed);
    for (name, state, r) in &rows {
        assert_eq!(
            r.residue, 0,
            "{name}, {state}: server accounting left {} B",
            r.residue
        );
    }
    if !print {
        return;
    }
    println!(
        "memory per idle established association, server side ({n} measured after {WARM}; heap counted \
         around every server-side call):"
    );
    println!(
        "{:<11} {:<21} {:>13} {:>9} {:>12} {:>16}",
        "stack", "before going idle", "all-in B", "struct B", "own heap B", "struct + heap B"
    );
    for (name, state, r) in &rows {
        println!(
            "{name:<11} {state:<21} {:>13.0} {:>9} {:>12.0} {:>16.0}",
            r.heap_per_assoc,
            r.struct_size,
            r.assoc_heap,
            r.struct_size as f64 + r.assoc_heap
        );
    }
    let ratio = |i: usize| rows[i].2.heap_per_assoc / rows[i + 2].2.heap_per_assoc;
    println!(
        "ratio ours/sctp-proto, all-in: handshake only {:.3}, one message each way {:.3}",
        ratio(0),
        ratio(1)
    );
    let key = |i: usize| {
        let r = &rows[i].2;
        serde_json::json!({"all_in": r.heap_per_assoc.round(), "struct": r.struct_size,
            "own_heap": r.assoc_heap.round()})
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "vs_sctp_proto_memory", "associations": n, "warm": WARM,
            "ours_handshake_only": key(0), "ours_after_messages": key(1),
            "sctp_proto_handshake_only": key(2), "sctp_proto_after_messages": key(3),
            "ratio_all_in_handshake_only": ratio(0), "ratio_all_in_after_messages": ratio(1),
        })
    );
}

// ---------------------------------------------------------------------------------------------------------
// Interoperation: our endpoint and a `sctp-proto` one back to back, each way round.

/// Our endpoint's UDP address as the `sctp-proto` one sees it.
const OURS_UDP: ([u8; 4], u16) = ([127, 0, 0, 3], 9899);

/// One of ours and one `sctp-proto` endpoint, datagrams copied between them, one fake clock for both.
struct Mixed {
    ours: Endpoint,
    theirs: Proto,
    now: Instant,
    std_now: StdInstant,
    buf: Vec<u8>,
    /// Our endpoint sends each message back on the stream it came on.
    ours_echo: bool,
    /// Messages our endpoint received, and how its associations ended.
    ours_inbox: Vec<Vec<u8>>,
    ours_down: Vec<DownReason>,
    ours_up: usize,
}

impl Mixed {
    fn new(ours: Endpoint, theirs: Proto) -> Mixed {
        Mixed {
            ours,
            theirs,
            now: Instant::from_millis(1),
            std_now: StdInstant::now(),
            buf: vec![0u8; 2048],
            ours_echo: false,
            ours_inbox: Vec::new(),
            ours_down: Vec::new(),
            ours_up: 0,
        }
    }

    /// Moves datagrams both ways until both sides are quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.ours.poll_transmit(self.now, &mut self.buf) {
                let pkt = Payload::RawEncode(vec![self.buf[..t.len].to_vec().into()]);
                self.theirs
                    .handle(self.std_now, SocketAddr::from(OURS_UDP), pkt);
                moved = true;
            }
            while let Some(Payload::RawEncode(pkts)) = self.theirs.poll_transmit(self.std_now) {
                for p in pkts {
                    self.ours.handle(self.now, self.theirs.addr, &p);
                }
                moved = true;
            }
            while let Some((id, e)) = self.ours.poll_event() {
                match e {
                    Event::Up => self.ours_up += 1,
                    Event::Message { stream, data, .. } => {
                        if self.ours_echo {
                            self.ours.send(id, stream, false, &data).expect("echo");
                            moved = true;
                        }
                        self.ours_inbox.push(data);
                    }
                    Event::Down(r) => self.ours_down.push(r),
                    Event::Restarted => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Lets `d` pass in steps of 100 ms, running both sides' due timers and pumping after each.
    fn pass(&mut self, d: Duration) {
        let step = Duration::from_millis(100);
        let mut left = d;
        while !left.is_zero() {
            self.now += step;
            self.std_now += step;
            left = left.saturating_sub(step);
            if self.ours.poll_timeout().is_some_and(|t| t <= self.now) {
                self.ours.handle_timeout(self.now);
            }
            self.theirs.handle_timeouts(self.std_now);
            self.pump();
        }
    }
}

/// Ten distinct 100-byte messages.
fn interop_messages() -> Vec<Vec<u8>> {
    (0..10u8)
        .map(|i| {
            (0..MSG)
                .map(|j| i.wrapping_mul(31).wrapping_add(j as u8))
                .collect()
        })
        .collect()
}

/// Our client against a `sctp-proto` server: handshake, ten messages echoed and checked byte for byte, a
/// graceful shutdown from our side. Returns what each step showed.
fn interop_ours_to_theirs() -> Vec<String> {
    let (_, client) = pair::endpoints();
    let mut server = Proto::new(true, SocketAddr::from(SERVER_UDP));
    server.echo = true;
    let mut x = Mixed::new(client, server);
    let mut out = Vec::new();
    let id = x.ours.connect(x.now, x.theirs.addr, 5000).expect("connect");
    x.pump();
    out.push(format!(
        "handshake: up ours {}, theirs {}",
        x.ours_up, x.theirs.up
    ));
    assert_eq!((x.ours_up, x.theirs.up), (1, 1), "{out:?}");
    let msgs = interop_messages();
    for m in &msgs {
        x.ours.send(id, 0, false, m).expect("send");
        x.pump();
    }
    x.pass(Duration::from_millis(500));
    assert_eq!(x.ours_inbox, msgs, "echoes");
    out.push(format!(
        "echo: {} of {} came back intact",
        msgs.len(),
        msgs.len()
    ));
    x.ours.shutdown(x.now, id);
    x.pump();
    x.pass(Duration::from_secs(5));
    out.push(format!(
        "our shutdown: ours {:?}, theirs AssociationLost {:?}",
        x.ours_down, x.theirs.lost
    ));
    // `sctp-proto` reports every close, a graceful one too, as `AssociationLost` with the reason
    // `AssociationClosed`, whose text is "aborted by peer"; on the wire this was SHUTDOWN, SHUTDOWN ACK,
    // SHUTDOWN COMPLETE.
    assert_eq!(x.ours_down, [DownReason::Shutdown], "{out:?}");
    assert_eq!(x.theirs.lost.len(), 1, "{out:?}");
    out
}

/// A `sctp-proto` client against our server: the same steps, the shutdown from their side.
///
/// That shutdown does not complete, with our server or with another `sctp-proto` endpoint alike:
/// `Association::shutdown` (0.10.8) hands its endpoint the `Drained` event at once, so the endpoint forgets
/// the association's tag and drops the peer's SHUTDOWN ACK as unroutable; their association stays in
/// SHUTDOWN-SENT, retransmitting SHUTDOWN. Ours answers each SHUTDOWN with a SHUTDOWN ACK and, once its
/// retransmissions are spent, ends the association as lost; that much is checked.
fn interop_theirs_to_ours() -> Vec<String> {
    let (server, _) = pair::endpoints();
    let mut client = Proto::new(false, SocketAddr::from(CLIENT_UDP));
    client.keep = true;
    let mut x = Mixed::new(server, client);
    x.ours_echo = true;
    let mut out = Vec::new();
    let h = x.theirs.connect(SocketAddr::from(OURS_UDP), 5000);
    x.pump();
    out.push(format!(
        "handshake: up ours {}, theirs {}",
        x.ours_up, x.theirs.up
    ));
    assert_eq!((x.ours_up, x.theirs.up), (1, 1), "{out:?}");
    let msgs = interop_messages();
    for m in &msgs {
        x.theirs.send(h, m);
        x.pump();
    }
    x.pass(Duration::from_millis(500));
    assert_eq!(x.theirs.inbox, msgs, "echoes");
    out.push(format!(
        "echo: {} of {} came back intact",
        msgs.len(),
        msgs.len()
    ));
    x.theirs.assoc(h).shutdown().expect("shutdown");
    x.theirs.dirty.push(h);
    x.pump();
    x.pass(Duration::from_secs(30));
    let closed = x.theirs.assoc(h).is_closed();
    out.push(format!(
        "their shutdown, 30 s later: ours {:?}, theirs closed {closed}, AssociationLost {:?}",
        x.ours_down, x.theirs.lost
    ));
    assert_eq!(
        x.ours.len(),
        0,
        "our server let go of the association: {out:?}"
    );
    out
}

/// How each timed round gets its SACK.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Mode {
    /// One DATA packet and one SACK packet per message. After the DATA, the fake clock moves on by the
    /// longer of the two stacks' SACK delays and each side runs whatever timers are then due, as a reactor
    /// would, then the pump runs again. Ours SACKs at once (its sender sets the I bit on the last message
    /// it has queued); `sctp-proto` SACKs from its delayed-ack timer, which is what a lone message costs it.
    DataAndSack,
    /// Each stack as it behaves in a stream of messages sent one at a time, the clock standing still: ours
    /// still SACKs every message (I bit), `sctp-proto` every second one (its delayed-ack rule), so it
    /// handles three packets per two messages where ours handles four.
    Stream,
}

/// Long enough for either stack's delayed SACK to be due (ours 20 ms, `sctp-proto` 200 ms).
const SACK_WAIT: Duration = Duration::from_millis(200);

/// Ours, one established association, both ends.
struct OursPair {
    server: Endpoint,
    client: Endpoint,
    id: AssocId,
    now: Instant,
    buf: Vec<u8>,
}

impl OursPair {
    fn new() -> OursPair {
        let mut buf = vec![0u8; 2048];
        let now = Instant::from_millis(1);
        let (mut server, mut client) = pair::endpoints();
        let id = pair::handshake(&mut server, &mut client, 0, now, &mut buf);
        OursPair {
            server,
            client,
            id,
            now,
            buf,
        }
    }

    /// One message from client to server and whatever acknowledgement `mode` brings; returns the messages
    /// delivered.
    fn round(&mut self, mode: Mode, msg: &[u8]) -> usize {
        self.client.send(self.id, 0, false, msg).unwrap();
        let mut n = pair::pump(&mut self.server, &mut self.client, self.now, &mut self.buf);
        if mode == Mode::DataAndSack {
            self.now += SACK_WAIT;
            for ep in [&mut self.server, &mut self.client] {
                if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                    ep.handle_timeout(self.now);
                }
            }
            n += pair::pump(&mut self.server, &mut self.client, self.now, &mut self.buf);
        }
        n
    }

    fn sacks(&self) -> u64 {
        self.server.stats().sacks_sent
    }
}

/// `sctp-proto`, one established association, both ends.
struct ProtoPair {
    server: Proto,
    client: Proto,
    h: usize,
    now: StdInstant,
}

impl ProtoPair {
    fn new() -> ProtoPair {
        let now = StdInstant::now();
        let (server, client, h) = proto_pair(now);
        ProtoPair {
            server,
            client,
            h,
            now,
        }
    }

    /// As [`OursPair::round`].
    fn round(&mut self, mode: Mode, msg: &[u8]) -> usize {
        self.client.send(self.h, msg);
        let mut n = proto_pump(&mut self.server, &mut self.client, self.now);
        if mode == Mode::DataAndSack {
            self.now += SACK_WAIT;
            self.server.handle_timeouts(self.now);
            self.client.handle_timeouts(self.now);
            n += proto_pump(&mut self.server, &mut self.client, self.now);
        }
        n
    }

    /// SACKs the client has received.
    fn sacks(&self) -> u64 {
        let a = self.client.assocs[self.h]
            .as_ref()
            .expect("live association");
        a.stats().get_num_sacks()
    }
}

/// SACKs per message each stack sends in `mode` over `messages` rounds: checked before times are compared.
fn sack_ratios(mode: Mode, messages: u32) -> (f64, f64) {
    let msg = [0x5au8; MSG];
    let mut ours = OursPair::new();
    let mut theirs = ProtoPair::new();
    let (o0, t0) = (ours.sacks(), theirs.sacks());
    for _ in 0..messages {
        assert_eq!(ours.round(mode, &msg), 1);
        assert_eq!(theirs.round(mode, &msg), 1);
    }
    let per = |a: u64, b: u64| (a - b) as f64 / f64::from(messages);
    (per(ours.sacks(), o0), per(theirs.sacks(), t0))
}

fn bench_exchange(c: &mut Criterion) {
    let mut g = c.benchmark_group("vs_sctp_proto");
    g.throughput(Throughput::Elements(1));
    let msg = [0x5au8; MSG];
    for (mode, name) in [
        (Mode::DataAndSack, "message_100B_data_and_sack_both_ends"),
        (Mode::Stream, "message_100B_stream_both_ends"),
    ] {
        let mut ours = OursPair::new();
        g.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| assert_eq!(ours.round(mode, black_box(&msg)), 1))
        });
        let mut theirs = ProtoPair::new();
        g.bench_function(format!("sctp-proto/{name}"), |b| {
            b.iter(|| assert_eq!(theirs.round(mode, black_box(&msg)), 1))
        });
    }

    let now = Instant::from_millis(1);
    let mut buf = vec![0u8; 2048];
    g.bench_function("ours/handshake_both_ends", |b| {
        b.iter_batched_ref(
            pair::endpoints,
            |(server, client)| black_box(pair::handshake(server, client, 1, now, &mut buf)),
            BatchSize::SmallInput,
        )
    });
    let std_now = StdInstant::now();
    g.bench_function("sctp-proto/handshake_both_ends", |b| {
        b.iter_batched_ref(
            || {
                (
                    Proto::new(true, SocketAddr::from(SERVER_UDP)),
                    Proto::new(false, SocketAddr::from(CLIENT_UDP)),
                )
            },
            |(server, client)| {
                let h = client.connect(server.addr, 5000);
                proto_pump(server, client, std_now);
                assert_eq!(server.up, 1);
                black_box(h)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A fixed amount of exchange work for counting instructions under callgrind (as `benches/sctp_cost.rs` does
/// for ours alone): `cost STACK MODE N` with STACK `ours` or `sctp-proto` and MODE `sack` or `stream` runs
/// setup, ten warm-up rounds, then N rounds. The difference between N = 10 000 and N = 0, divided by 10 000,
/// is one round.
fn cost(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let mode = match arg(1) {
        "sack" => Mode::DataAndSack,
        "stream" => Mode::Stream,
        other => panic!("unknown mode {other:?}: sack | stream"),
    };
    let n: u32 = arg(2).parse().expect("round count");
    let msg = [0x5au8; MSG];
    let run = |round: &mut dyn FnMut() -> usize| {
        for _ in 0..10 + n {
            assert_eq!(round(), 1);
        }
    };
    match arg(0) {
        "ours" => {
            let mut p = OursPair::new();
            run(&mut || p.round(mode, &msg));
        }
        "sctp-proto" => {
            let mut p = ProtoPair::new();
            run(&mut || p.round(mode, &msg));
        }
        other => panic!("unknown stack {other:?}: ours | sctp-proto"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("cost") {
        cost(&args[1..]);
        return;
    }
    // `cargo bench` passes --bench. Anything else (`cargo test --benches`) gets a smoke run: every part once,
    // small, untimed.
    let bench = std::env::args().any(|a| a == "--bench");
    for l in interop_ours_to_theirs() {
        println!("interop, our client → sctp-proto server: {l}");
    }
    for l in interop_theirs_to_ours() {
        println!("interop, sctp-proto client → our server: {l}");
    }
    if bench {
        memory(IDLE, true);
    } else {
        memory(16, false);
    }
    let rounds = if bench { 1000 } else { 20 };
    let data_and_sack = sack_ratios(Mode::DataAndSack, rounds);
    let stream = sack_ratios(Mode::Stream, rounds);
    assert_eq!(data_and_sack, (1.0, 1.0), "one SACK per message on both");
    assert_eq!(stream, (1.0, 0.5), "each stack's own SACK rule");
    if !bench {
        return;
    }
    println!(
        "SACK packets per message: data_and_sack ours {:.2}, sctp-proto {:.2}; stream ours {:.2}, \
         sctp-proto {:.2}",
        data_and_sack.0, data_and_sack.1, stream.0, stream.1
    );
    let mut c = Criterion::default().configure_from_args();
    bench_exchange(&mut c);
    c.final_summary();
}
