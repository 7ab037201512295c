//! Random bytes from the kernel (`getrandom(2)`): no device file to depend on — some sandboxes
//! put a regular file at `/dev/null`, and `/dev/urandom` could be one too.

/// Fill a buffer from the kernel CSPRNG (getrandom(2)); never fails silently.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of a live mutable slice.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                buf.len() - filled,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}
