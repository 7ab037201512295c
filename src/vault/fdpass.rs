//! File descriptors over the Unix socket (SCM_RIGHTS).
//!
//! Design decision: `guard exec` and `guard vault print` hand the daemon their stdin, stdout and
//! stderr instead of receiving a value: the daemon launches the child on the caller's stdio (its
//! output through the masker) or writes a printed value straight to the caller's stdout. The
//! descriptors travel with the first byte of the request frame in one `sendmsg`; the daemon
//! receives every read with `recvmsg` (MSG_CMSG_CLOEXEC) and queues what arrived, so a frame and
//! its descriptors are matched without a second round trip. At most [`MAX_FDS`] per message.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const MAX_FDS: usize = 4;

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Write all of `bytes` to `sock`, attaching `fds` to the first byte.
pub fn send_with_fds(
    sock: &std::os::unix::net::UnixStream,
    bytes: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    use std::io::Write;
    assert!(fds.len() <= MAX_FDS, "at most MAX_FDS descriptors");
    if fds.is_empty() || bytes.is_empty() {
        return (&*sock).write_all(bytes);
    }
    let mut cbuf = vec![0u8; cmsg_space()];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer below refers to live buffers for the call.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    };
    (&*sock).write_all(&bytes[sent..])
}

/// One `recvmsg` on a non-blocking socket: bytes into `buf`, received descriptors appended to
/// `fds`. `WouldBlock` when nothing is ready; an error if descriptors were truncated.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
    let mut cbuf = vec![0u8; cmsg_space()];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in send_with_fds; the kernel writes at most msg_controllen bytes of control data
    // and every descriptor it reports is new and owned by us (wrapped at once in OwnedFd).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len() as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::other(
                "too many file descriptors in one message",
            ));
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_travel_with_the_frame() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut pr, pw) = std::os::unix::net::UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello\n", &[pw.as_raw_fd()]).unwrap();
        drop(pw);
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 1);
        let mut w = std::fs::File::from(fds.pop().unwrap());
        w.write_all(b"through the passed fd").unwrap();
        drop(w);
        let mut s = String::new();
        pr.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through the passed fd");
    }
}
