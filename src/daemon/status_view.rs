//! `mpd status` for people: the daemon's status JSON (what the control socket answers, and what
//! `mpd status --json` prints as is) rendered as a few aligned lines.
//!
//! The renderer reads the JSON rather than the daemon's types, so it shows what a running daemon reports even
//! when that daemon is of another version: a key it does not know is left out, a key that is missing reads as
//! `?` (text) or 0 (counts). Only nonzero drop counters are listed, and the "problems" line appears only when
//! there is one. Nothing here panics.

use std::fmt::Write as _;

use serde_json::Value;

/// An uptime in seconds, to the second, largest unit first: `3d 04h 05m 06s`, `5m 00s`, `42s`.
pub fn uptime(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The human form of the daemon's status JSON `v`: one line saying it runs, then indented detail lines, each
/// ending in a newline.
pub fn render(v: &Value) -> String {
    let text = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    };
    let num = |x: &Value| x.as_u64().unwrap_or(0);
    let none_or = |items: Vec<String>| {
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mpd is running (pid {}), up {}, version {}, instance {}",
        text("pid"),
        uptime(num(&v["uptime_s"])),
        text("version"),
        text("instance")
    );
    let _ = writeln!(out, "  directory:  {}", text("dir"));
    let _ = writeln!(out, "  key:        {}", text("key"));
    let _ = writeln!(
        out,
        "  discovery:  group {} on interface {}",
        text("group"),
        text("iface")
    );
    let _ = writeln!(
        out,
        "  SCTP:       udp {} (SCTP port {}), heartbeat every {} ms, silent clients detected within {} ms",
        text("sctp_udp"),
        text("sctp_port"),
        text("heartbeat_ms"),
        text("detection_bound_ms")
    );
    let c = &v["clients"];
    let _ = writeln!(
        out,
        "  clients:    {} online, {} offline ({} associations, roster version {})",
        num(&c["online"]),
        num(&c["offline"]),
        num(&v["associations"]),
        num(&v["roster_version"])
    );
    let flapping: Vec<String> = v["flapping"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{} ({} flaps)",
                        f["nick"].as_str().unwrap_or("?"),
                        num(&f["flaps"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(out, "  flapping:   {}", none_or(flapping));
    // Only a daemon with the per-host limits reports them.
    let l = &v["limits"];
    if l.is_object() {
        let cap = |k: &str, unit: &str, none: &str| match num(&l[k]) {
            0 => none.to_string(),
            n => format!("{n} {unit}"),
        };
        let busiest = match &l["busiest_host"] {
            Value::String(h) => format!("busiest {h} with {}, ", num(&l["busiest_host_entries"])),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  limits:     {} ({busiest}{} refused), {} ({} evicted), {} ({} HELLOs unanswered)",
            cap(
                "max_clients_per_host",
                "nicknames per host",
                "nicknames per host not capped"
            ),
            num(&l["host_refusals"]),
            cap(
                "max_offline_per_host",
                "offline kept per host",
                "offline per host not capped"
            ),
            num(&l["host_evictions"]),
            cap(
                "welcome_rate",
                "WELCOMEs/s per source",
                "WELCOMEs not rate-limited"
            ),
            num(&l["hellos_rate_limited"]),
        );
    }
    let drops: Vec<String> = v["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| num(n) > 0)
                .map(|(k, n)| format!("{k} {}", num(n)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(out, "  drops:      {}", none_or(drops));
    let d = &v["daemon"];
    let _ = writeln!(
        out,
        "  sessions:   {} opened ({} resumed with a ticket), {} handshakes failed, {} refused, {} tickets not taken",
        num(&d["handshakes"]),
        num(&d["resumptions"]),
        num(&d["handshakes_failed"]),
        num(&d["handshakes_refused"]),
        num(&d["tickets_refused"])
    );
    let _ = writeln!(
        out,
        "  stalls:     {} (longest {} ms)",
        num(&d["stalls"]),
        num(&d["longest_stall_ms"])
    );
    // Channels, presence and renames: only once a client made any (issue 15).
    let r = &v["registry"];
    let changes = [
        "channel_changes",
        "presence_changes",
        "renames",
        "requests_refused",
    ];
    if changes.iter().any(|k| num(&r[*k]) > 0) {
        let _ = writeln!(
            out,
            "  changes:    {} channel joins and parts, {} away or back, {} renames, {} refused ({} for coming too fast)",
            num(&r["channel_changes"]),
            num(&r["presence_changes"]),
            num(&r["renames"]),
            num(&r["requests_refused"]),
            num(&r["requests_limited"])
        );
    }
    let overflows = num(&v["registry"]["held_overflows"]);
    if num(&d["save_errors"]) > 0 || overflows > 0 {
        let _ = writeln!(
            out,
            "  problems:   {} roster saves failed, {} times a client fell so far behind that it got the whole roster again",
            num(&d["save_errors"]),
            overflows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uptimes() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(300), "5m 00s");
        assert_eq!(uptime(3 * 3600 + 7), "3h 00m 07s");
        assert_eq!(uptime(90_061), "1d 01h 01m 01s");
    }

    /// The shape `daemon.rs` answers (trimmed to the keys shown, plus one the view ignores).
    fn sample() -> Value {
        json!({
            "running": true, "pid": 4242, "version": "0.1.0", "instance": "00000000deadbeef",
            "uptime_s": 3725, "dir": "/var/lib/multiproto", "group": "239.255.77.77:10001",
            "key": "mpk:honl-d7pi-urbx-fa5h-idbx-uuc7-2ooh-m6n5",
            "iface": "127.0.0.1", "sctp_udp": "0.0.0.0:9899", "sctp_port": 9899, "heartbeat_ms": 1000,
            "detection_bound_ms": 2700,
            "clients": {"online": 3, "offline": 1, "other_connections": 0},
            "associations": 3, "roster_version": 17,
            "flapping": [{"nick": "alice", "flaps": 4}, {"nick": "bob", "flaps": 2}],
            "limits": {"max_clients_per_host": 256, "max_offline_per_host": 64, "welcome_rate": 0,
                       "busiest_host": "10.0.0.5", "busiest_host_entries": 256, "host_refusals": 2744,
                       "host_evictions": 192, "hellos_rate_limited": 0, "hello_sources_evicted": 0},
            "drops": {"discovery_foreign": 0, "sctp_bad_checksum": 2, "udp_truncated": 1},
            "daemon": {"stalls": 1, "longest_stall_ms": 310, "save_errors": 0, "handshakes": 9,
                       "resumptions": 4, "handshakes_failed": 1, "handshakes_refused": 2, "tickets_refused": 0},
            "sctp": {"whatever": 1},
        })
    }

    #[test]
    fn renders_a_running_daemon() {
        assert_eq!(
            render(&sample()),
            "mpd is running (pid 4242), up 1h 02m 05s, version 0.1.0, instance 00000000deadbeef
  directory:  /var/lib/multiproto
  key:        mpk:honl-d7pi-urbx-fa5h-idbx-uuc7-2ooh-m6n5
  discovery:  group 239.255.77.77:10001 on interface 127.0.0.1
  SCTP:       udp 0.0.0.0:9899 (SCTP port 9899), heartbeat every 1000 ms, silent clients detected within 2700 ms
  clients:    3 online, 1 offline (3 associations, roster version 17)
  flapping:   alice (4 flaps), bob (2 flaps)
  limits:     256 nicknames per host (busiest 10.0.0.5 with 256, 2744 refused), 64 offline kept per host (192 evicted), WELCOMEs not rate-limited (0 HELLOs unanswered)
  drops:      sctp_bad_checksum 2, udp_truncated 1
  sessions:   9 opened (4 resumed with a ticket), 1 handshakes failed, 2 refused, 0 tickets not taken
  stalls:     1 (longest 310 ms)
"
        );
    }

    #[test]
    fn problems_appear_only_when_there_are_some() {
        let mut v = sample();
        v["registry"] = json!({"held_overflows": 5});
        let out = render(&v);
        assert!(out.ends_with(
            "  problems:   0 roster saves failed, 5 times a client fell so far behind that it got the whole roster again\n"
        ));
        assert_eq!(out.lines().count(), 12);
    }

    #[test]
    fn roster_changes_appear_once_there_are_some() {
        let mut v = sample();
        v["registry"] = json!({"channel_changes": 7, "presence_changes": 2, "renames": 1,
            "requests_refused": 3, "requests_limited": 1});
        let out = render(&v);
        assert!(out.ends_with(
            "  changes:    7 channel joins and parts, 2 away or back, 1 renames, 3 refused (1 for coming too fast)\n"
        ), "{out}");
    }

    #[test]
    fn missing_keys_read_as_unknown_or_zero() {
        let out = render(&json!({"pid": 7}));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "mpd is running (pid 7), up 0s, version ?, instance ?"
        );
        assert_eq!(lines[2], "  key:        ?");
        assert_eq!(
            lines[5],
            "  clients:    0 online, 0 offline (0 associations, roster version 0)"
        );
        assert_eq!(lines[6], "  flapping:   none");
        assert_eq!(lines[7], "  drops:      none");
        assert_eq!(
            lines[8],
            "  sessions:   0 opened (0 resumed with a ticket), 0 handshakes failed, 0 refused, 0 tickets not taken"
        );
        assert_eq!(lines.len(), 10);
    }
}
