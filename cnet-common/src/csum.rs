//! Internet checksum math (RFC 1071 / RFC 1624), pure and host-testable.

/// One's-complement sum of `data` folded to 16 bits, not inverted.
pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a 32-bit accumulator into 16 bits. Two fixed steps always suffice
/// (the first leaves at most 0x1fffe), and a loop-free body keeps the BPF
/// verifier happy.
pub fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum of `data` (inverted folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data, 0))
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changes from `old` to `new`.
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// The new checksum after a 32-bit field (an IPv4 address) changes.
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn fold_handles_the_largest_sums() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold(0x0002_0000), 0x0002);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), !0x1200);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        // A 20-byte IPv4 header, checksum field zeroed, then rewritten addresses.
        let mut hdr = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 172, 17, 0, 2,
        ];
        let c0 = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c0.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        let old = u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        let new = u32::from_be_bytes([192, 168, 7, 9]);
        hdr[16..20].copy_from_slice(&new.to_be_bytes());
        let c1 = update32(c0, old, new);
        hdr[10..12].copy_from_slice(&c1.to_be_bytes());
        assert_eq!(checksum(&hdr), 0, "incremental checksum must verify");
    }
}
