//! Type-length-value fields: the parameters of INIT, INIT ACK and HEARTBEAT chunks (RFC 9260 §3.2.1,
//! §3.3.2–§3.3.6) and the error causes of ABORT and ERROR chunks (§3.3.10). Both share one layout, so one
//! [`TlvIter`] reads both.
//!
//! Parsing is allocation-free; a TLV whose length is below 4 or past the end ends iteration with
//! [`WireError::BadParamLength`].

use std::net::{Ipv4Addr, Ipv6Addr};

use super::wire::{WireError, Writer, be16, be32, pad4, split_item};

/// Parameter type codes (RFC 9260 §3.3.2.1, §3.3.3.1, §3.3.5).
pub mod ptype {
    /// Heartbeat info (in HEARTBEAT / HEARTBEAT ACK).
    pub const HEARTBEAT_INFO: u16 = 1;
    /// IPv4 address.
    pub const IPV4: u16 = 5;
    /// IPv6 address.
    pub const IPV6: u16 = 6;
    /// State cookie (INIT ACK).
    pub const STATE_COOKIE: u16 = 7;
    /// Unrecognized parameter (INIT ACK).
    pub const UNRECOGNIZED: u16 = 8;
    /// Cookie preservative (INIT).
    pub const COOKIE_PRESERVATIVE: u16 = 9;
    /// Host name address, deprecated: its receiver aborts.
    pub const HOST_NAME: u16 = 11;
    /// Supported address types (INIT).
    pub const SUPPORTED_ADDR_TYPES: u16 = 12;
}

/// Error cause codes (RFC 9260 §3.3.10).
pub mod cause {
    /// Invalid stream identifier.
    pub const INVALID_STREAM: u16 = 1;
    /// Missing mandatory parameter.
    pub const MISSING_PARAM: u16 = 2;
    /// Stale cookie.
    pub const STALE_COOKIE: u16 = 3;
    /// Out of resource.
    pub const OUT_OF_RESOURCE: u16 = 4;
    /// Unresolvable address.
    pub const UNRESOLVABLE_ADDRESS: u16 = 5;
    /// Unrecognized chunk type.
    pub const UNRECOGNIZED_CHUNK: u16 = 6;
    /// Invalid mandatory parameter.
    pub const INVALID_PARAM: u16 = 7;
    /// Unrecognized parameters.
    pub const UNRECOGNIZED_PARAMS: u16 = 8;
    /// No user data.
    pub const NO_USER_DATA: u16 = 9;
    /// Cookie received while shutting down.
    pub const COOKIE_WHILE_SHUTTING_DOWN: u16 = 10;
    /// Restart of an association with new addresses.
    pub const RESTART_NEW_ADDRESSES: u16 = 11;
    /// User-initiated abort.
    pub const USER_ABORT: u16 = 12;
    /// Protocol violation.
    pub const PROTOCOL_VIOLATION: u16 = 13;
}

/// One TLV: a parameter or an error cause.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Parameter type or cause code.
    pub kind: u16,
    /// The value, without header or padding.
    pub value: &'a [u8],
    /// The whole TLV as received (header and value, without padding), for echoing it back unchanged.
    pub raw: &'a [u8],
}

/// What RFC 9260 §3.2.1 says to do with a parameter of unknown type, from its two high bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnknownParamAction {
    /// 00: stop processing parameters of this chunk.
    Stop,
    /// 01: stop, and report it.
    StopAndReport,
    /// 10: skip it.
    Skip,
    /// 11: skip it, and report it.
    SkipAndReport,
}

impl UnknownParamAction {
    /// The action encoded in the type's upper two bits.
    pub const fn of(kind: u16) -> Self {
        match kind >> 14 {
            0 => UnknownParamAction::Stop,
            1 => UnknownParamAction::StopAndReport,
            2 => UnknownParamAction::Skip,
            _ => UnknownParamAction::SkipAndReport,
        }
    }
    /// Whether processing continues after the parameter.
    pub const fn skips(self) -> bool {
        matches!(
            self,
            UnknownParamAction::Skip | UnknownParamAction::SkipAndReport
        )
    }
    /// Whether the parameter is reported back.
    pub const fn reports(self) -> bool {
        matches!(
            self,
            UnknownParamAction::StopAndReport | UnknownParamAction::SkipAndReport
        )
    }
}

/// Iterates over TLVs. Yields `Err` once for a malformed one and then stops; a final TLV without its padding
/// is accepted.
#[derive(Clone, Debug)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    /// Iterates over the TLVs in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        TlvIter { rest: bytes }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = std::mem::take(&mut self.rest);
        Some(split_item(b, WireError::BadParamLength).map(|(raw, rest)| {
            self.rest = rest;
            Tlv {
                kind: be16(raw, 0),
                value: &raw[4..],
                raw,
            }
        }))
    }
}

/// A parameter of INIT / INIT ACK that this stack understands, parsed from a [`Tlv`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InitParam<'a> {
    /// An IPv4 address of the sender.
    Ipv4(Ipv4Addr),
    /// An IPv6 address of the sender.
    Ipv6(Ipv6Addr),
    /// The state cookie (INIT ACK only).
    StateCookie(&'a [u8]),
    /// A parameter of ours the peer did not recognize (INIT ACK only): the whole TLV it echoed.
    Unrecognized(&'a [u8]),
    /// Suggested cookie life-span increment, in milliseconds.
    CookiePreservative(u32),
    /// A host name address (deprecated; must be answered with ABORT).
    HostName,
    /// Supported address types: a list of u16 parameter types (5 = IPv4, 6 = IPv6, 11 = host name).
    SupportedAddrTypes(&'a [u8]),
    /// Anything else: handled by its two high bits.
    Unknown(Tlv<'a>),
}

impl<'a> InitParam<'a> {
    /// Interprets a TLV found in an INIT or INIT ACK. A known type with an impossible length is an error.
    pub fn parse(t: Tlv<'a>) -> Result<Self, WireError> {
        let v = t.value;
        Ok(match t.kind {
            ptype::IPV4 => {
                let b: [u8; 4] = v.try_into().map_err(|_| WireError::BadParamLength)?;
                InitParam::Ipv4(Ipv4Addr::from(b))
            }
            ptype::IPV6 => {
                let b: [u8; 16] = v.try_into().map_err(|_| WireError::BadParamLength)?;
                InitParam::Ipv6(Ipv6Addr::from(b))
            }
            ptype::STATE_COOKIE => InitParam::StateCookie(v),
            ptype::UNRECOGNIZED => InitParam::Unrecognized(v),
            ptype::COOKIE_PRESERVATIVE => {
                if v.len() != 4 {
                    return Err(WireError::BadParamLength);
                }
                InitParam::CookiePreservative(be32(v, 0))
            }
            ptype::HOST_NAME => InitParam::HostName,
            ptype::SUPPORTED_ADDR_TYPES => {
                if !v.len().is_multiple_of(2) {
                    return Err(WireError::BadParamLength);
                }
                InitParam::SupportedAddrTypes(v)
            }
            _ => InitParam::Unknown(t),
        })
    }
}

/// Writes one TLV with the given value.
pub fn write_tlv(w: &mut Writer<'_>, kind: u16, value: &[u8]) -> Result<(), WireError> {
    if w.remaining() < pad4(4 + value.len()) {
        return Err(WireError::NoRoom);
    }
    let m = w.begin_tlv(kind)?;
    w.put(value)?;
    w.end_tlv(m)
}

/// Reads the first error cause of an ABORT or ERROR chunk: its code and value, if any is well-formed.
pub fn first_cause(causes: &[u8]) -> Option<(u16, &[u8])> {
    match TlvIter::new(causes).next() {
        Some(Ok(t)) => Some((t.kind, t.value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_stops_on_bad_length() {
        let b = [0, 5, 0, 8, 10, 0, 0, 1, 0xc0, 0, 0, 4, 0, 9, 0, 3];
        let v: Vec<_> = TlvIter::new(&b).collect();
        assert_eq!(v.len(), 3);
        let t0 = v[0].unwrap();
        assert_eq!(
            InitParam::parse(t0).unwrap(),
            InitParam::Ipv4(Ipv4Addr::new(10, 0, 0, 1))
        );
        let t1 = v[1].unwrap();
        assert_eq!((t1.kind, t1.value.len()), (0xc000, 0));
        assert_eq!(
            UnknownParamAction::of(t1.kind),
            UnknownParamAction::SkipAndReport
        );
        assert_eq!(v[2], Err(WireError::BadParamLength));
    }

    #[test]
    fn known_params_with_wrong_length_are_errors() {
        let t = Tlv {
            kind: ptype::IPV4,
            value: &[1, 2, 3],
            raw: &[],
        };
        assert_eq!(InitParam::parse(t), Err(WireError::BadParamLength));
        let t = Tlv {
            kind: ptype::SUPPORTED_ADDR_TYPES,
            value: &[0, 5, 0],
            raw: &[],
        };
        assert_eq!(InitParam::parse(t), Err(WireError::BadParamLength));
    }

    #[test]
    fn unknown_actions() {
        assert_eq!(UnknownParamAction::of(0x0001), UnknownParamAction::Stop);
        assert_eq!(
            UnknownParamAction::of(0x4001),
            UnknownParamAction::StopAndReport
        );
        assert_eq!(UnknownParamAction::of(0x8008), UnknownParamAction::Skip);
        assert!(UnknownParamAction::of(0xc006).reports());
    }
}
