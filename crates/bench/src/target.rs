//! Where a load run connects: `unix:/path`, `[ipv6]:port` or `ipv4:port`.
//!
//! Only explicit addresses are accepted (no host names), so a benchmark never
//! resolves or reaches anything it was not told to.

pub use switchyard_engine::Target;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(Target::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "[::1]:51000".parse(),
            Ok(Target::Tcp("[::1]:51000".parse().unwrap()))
        );
        assert_eq!(
            "127.0.0.1:80".parse(),
            Ok(Target::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        for bad in ["unix:", "localhost:80", "[::1]", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(
            "[::1]:7".parse::<Target>().unwrap().authority().as_str(),
            "[::1]:7"
        );
    }
}
