// SPDX-License-Identifier: MPL-2.0
//! Random numbers from the operating system (`getrandom(2)`), for everything that must not
//! be guessed or repeat: SSRCs, session resource ids.

/// 64 random bits from the kernel's generator. It blocks only before the kernel's pool is
/// first seeded, early at boot; should the call fail anyway, the bits come from the hash
/// seed and the time, which still differ between calls and processes.
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most `len` bytes into the buffer it is given, which
        // is the unfilled rest of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n <= 0 {
            return fallback();
        }
        filled += n as usize;
    }
    u64::from_ne_bytes(bytes)
}

fn fallback() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A random RTP SSRC (never 0).
pub fn ssrc() -> u32 {
    (u64() as u32).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        let draws: std::collections::HashSet<u64> = (0..1000).map(|_| super::u64()).collect();
        assert_eq!(draws.len(), 1000);
        assert!((0..1000).all(|_| super::ssrc() != 0));
    }
}
