//! The one piece of HTTP the metrics endpoint needs: the request line.

/// The method and target of an HTTP/1.x request head (`GET /metrics HTTP/1.1`), or `None` if
/// the first line is not a request line.
#[must_use]
pub fn request_target(head: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let mut parts = head.get(..end)?.split(|&b| b == b' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty() && m.iter().all(u8::is_ascii_uppercase))?;
    let target = parts.next().filter(|t| t.first() == Some(&b'/'))?;
    let version = parts.next()?;
    (version.starts_with(b"HTTP/1.") && parts.next().is_none()).then_some((method, target))
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some((&b"GET"[..], &b"/metrics"[..]))
        );
        assert_eq!(request_target(b"GET /metrics\r\n"), None);
        assert_eq!(request_target(b"GET metrics HTTP/1.1\r\n"), None);
        assert_eq!(request_target(b"\x00\xff\r\n"), None);
        assert_eq!(request_target(b"GET /metrics HTTP/1.1"), None);
    }
}
