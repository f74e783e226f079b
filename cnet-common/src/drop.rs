//! Named counters: every verdict the datapath takes is counted under one of these.

/// Why a packet was dropped. `#[repr(u32)]` values index the `STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    // Slot 0 held a source deny list that nothing wrote; filters do that job.
    /// An IPv4 header shorter than 20 bytes, or an IHL that runs past the packet.
    MalformedIp = 1,
    /// A TCP/UDP/ICMP header that does not fit in the packet.
    MalformedL4 = 2,
    /// No free source port for masquerade after the bounded number of tries.
    NatExhausted = 3,
    /// A checksum or packet store helper failed.
    RewriteFailed = 4,
    /// A redirect or FIB lookup failed.
    NoRoute = 5,
    /// Between two containers of a network with icc=false and no link.
    IccDenied = 6,
    /// A filter rule with action drop (counted per rule too).
    Filtered = 7,
    /// Leaving (or entering) an `--internal` network.
    Internal = 8,
    /// From a container, a source IPv4 address, MAC or ARP sender that is not
    /// the container's own on that interface.
    Spoofed = 9,
    /// IPv6 from a container (cnet networks are IPv4 only; IPv6 is off in containers).
    Ipv6 = 10,
    /// A frame from a container that is neither IPv4 nor ARP.
    NonIp = 11,
    /// From outside to a container address that is neither a published-port
    /// DNAT nor the reply of a tracked flow (the network is not `routed`).
    NotPublished = 12,
    /// A later IP fragment of a datagram whose first fragment was not seen
    /// (or not translated) that would otherwise leave untranslated.
    Fragment = 13,
    /// A new flow whose reply tuple belongs to another live flow.
    ConntrackConflict = 14,
    /// An ICMP error from a container about a flow it is not the receiver
    /// of, or about nothing cnet translated while leaving the host.
    IcmpForeign = 15,
    /// Larger than the device it would leave by, without DF (DF packets are
    /// answered with ICMP fragmentation needed, counted as `frag_needed_sent`).
    TooBig = 22,
    /// Not a drop: the packet is to be answered with "fragmentation needed"
    /// by the tail-called program (the entry function does the tail call,
    /// the only place the verifier allows it). Never counted under this slot.
    AnswerFragNeeded = 24,
    /// Not a drop: a packet no flow knows, which the hook's second stage
    /// (tail-called, slot `JUMP_VETH_NEW` or `JUMP_UPLINK_NEW`) handles.
    /// Never counted here.
    NewFlow = 28,
    /// Not a drop: a new flow from a container to be masqueraded, which the
    /// veth's third stage (slot `JUMP_VETH_MASQ`) handles. Never counted here.
    Masquerade = 30,
    /// A tail-call target was missing from `JUMPS` (only possible while its
    /// programs are being replaced): dropped rather than passed untranslated.
    NoProgram = 29,
}

/// Non-drop events that are counted as well.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Dnat = 16,
    ReverseDnat = 17,
    Snat = 18,
    ReverseSnat = 19,
    /// A later IP fragment: passed untouched, never translated.
    Fragment = 20,
    /// IPv4 options present (IHL > 5): handled with the real header length.
    IpOptions = 21,
    /// ICMP "fragmentation needed" sent back for a DF packet too big for its way out.
    FragNeeded = 23,
    /// Events written to the ring buffer for `cnet monitor`.
    EventsSent = 25,
    /// Events not written because the per-CPU rate limit was reached.
    EventsSuppressed = 26,
    /// Events lost because the ring buffer was full (the monitor fell behind).
    EventsLost = 27,
}

/// Number of slots in the `STATS` array.
pub const STATS_SLOTS: u32 = 32;

/// Names of every counter slot that is in use, for the CLI and metrics.
pub const COUNTER_NAMES: &[(u32, &str)] = &[
    (DropReason::MalformedIp as u32, "drop_malformed_ip"),
    (DropReason::MalformedL4 as u32, "drop_malformed_l4"),
    (DropReason::NatExhausted as u32, "drop_nat_exhausted"),
    (DropReason::RewriteFailed as u32, "drop_rewrite_failed"),
    (DropReason::NoRoute as u32, "drop_no_route"),
    (DropReason::IccDenied as u32, "drop_icc"),
    (DropReason::Filtered as u32, "drop_filter"),
    (DropReason::Internal as u32, "drop_internal"),
    (DropReason::Spoofed as u32, "drop_spoofed"),
    (DropReason::Ipv6 as u32, "drop_ipv6"),
    (DropReason::NonIp as u32, "drop_non_ip"),
    (DropReason::NotPublished as u32, "drop_not_published"),
    (DropReason::Fragment as u32, "drop_frag"),
    (DropReason::ConntrackConflict as u32, "drop_ct_conflict"),
    (DropReason::IcmpForeign as u32, "drop_icmp_foreign"),
    (DropReason::TooBig as u32, "drop_too_big"),
    (DropReason::NoProgram as u32, "drop_no_program"),
    (Counter::Dnat as u32, "dnat"),
    (Counter::ReverseDnat as u32, "reverse_dnat"),
    (Counter::Snat as u32, "snat"),
    (Counter::ReverseSnat as u32, "reverse_snat"),
    (Counter::Fragment as u32, "fragment_passed"),
    (Counter::IpOptions as u32, "ip_options"),
    (Counter::FragNeeded as u32, "frag_needed_sent"),
    (Counter::EventsSent as u32, "events_sent"),
    (Counter::EventsSuppressed as u32, "events_suppressed"),
    (Counter::EventsLost as u32, "events_lost"),
];

/// The name of a counter slot (`drop_icc`, `dnat`, ...), if it is in use.
pub fn counter_name(slot: u32) -> Option<&'static str> {
    COUNTER_NAMES
        .iter()
        .find(|(s, _)| *s == slot)
        .map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_unique_and_in_range() {
        for (i, (slot, name)) in COUNTER_NAMES.iter().enumerate() {
            assert!(*slot < STATS_SLOTS, "{name} slot {slot} out of range");
            for (other, other_name) in &COUNTER_NAMES[i + 1..] {
                assert_ne!(slot, other, "{name} and {other_name} share a slot");
            }
        }
    }
}
