//! Reading the socket-listing iterator: each read of its file runs the
//! program in the kernel, which writes one [`SocketEntry`] per socket.
use std::io::{self, Read};

use probe_common::SocketEntry;

/// Hands each record of one run to `each` as it arrives (nothing is
/// collected here: memory is the caller's, per distinct socket). Returns
/// the number of records read.
pub fn for_each_entry(mut file: impl Read, mut each: impl FnMut(&SocketEntry)) -> io::Result<usize> {
    const SIZE: usize = size_of::<SocketEntry>();
    let mut records = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        filled += n;
        let whole = filled / SIZE * SIZE;
        for chunk in buf[..whole].chunks_exact(SIZE) {
            // SAFETY: exactly SIZE bytes; SocketEntry is plain old data.
            each(&unsafe { std::ptr::read_unaligned(chunk.as_ptr() as *const SocketEntry) });
            records += 1;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records split across reads at any byte still come out whole.
    #[test]
    fn records_across_short_reads() {
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.1).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut bytes = Vec::new();
        for cookie in 1..=5u64 {
            let mut e: SocketEntry = unsafe { std::mem::zeroed() };
            e.cookie = cookie;
            e.sport = cookie as u16;
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(&e as *const SocketEntry as *const u8, size_of::<SocketEntry>())
            });
        }
        let mut entries = Vec::new();
        let records = for_each_entry(Trickle(bytes, 7), |e| entries.push(*e)).unwrap();
        assert_eq!(records, 5);
        assert_eq!(entries.iter().map(|e| e.cookie).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(entries[4].sport, 5);
    }
}
