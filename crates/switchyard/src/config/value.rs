//! Validating types of setting values: each checks a value once, the same
//! way whether it comes from a flag (`FromStr`) or from the file (serde, which
//! goes through the same parser), and names what is wrong with it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_engine::Address;

/// `Deserialize`/`Serialize` of a type whose file form is a string, through
/// its `FromStr` and `Display`, so that flags and file share one parser.
macro_rules! text_setting {
    ($type:ty) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// `Deserialize`/`Serialize`/`FromStr` of a type whose file form is an
/// integer, through its `TryFrom<u64>` and `Into<u64>`.
macro_rules! integer_setting {
    ($type:ty $(, $($generics:tt)*)?) => {
        impl<'de $(, $($generics)*)?> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_from(u64::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl$(<$($generics)*>)? Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u64(u64::from(*self))
            }
        }

        impl$(<$($generics)*>)? FromStr for $type {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                let n: u64 = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a whole number"))?;
                Self::try_from(n)
            }
        }
    };
}

/// Where to listen: `unix:/path`, `[ipv6]:port` or `ipv4:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen(pub Address);

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Self).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_setting!(Listen);

/// Permissions of a Unix socket file, written in octal (`0660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is not an octal mode such as 0660"))
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

text_setting!(SocketMode);

/// A full gRPC method name: `/package.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodName(pub String);

impl FromStr for MethodName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let valid = s
            .strip_prefix('/')
            .and_then(|m| m.split_once('/'))
            .is_some_and(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a full method name such as /pkg.Service/Method"
            ))
        }
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_setting!(MethodName);

/// A duration in whole seconds, at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl TryFrom<u64> for Secs {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        if n == 0 {
            return Err("must be at least 1 second".into());
        }
        Ok(Self(Duration::from_secs(n)))
    }
}

impl From<Secs> for u64 {
    fn from(s: Secs) -> u64 {
        s.0.as_secs()
    }
}

impl From<Secs> for Duration {
    fn from(s: Secs) -> Duration {
        s.0
    }
}

integer_setting!(Secs);

/// A size in bytes that fits a gRPC message length (1 to 2³²−1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSize(pub usize);

impl TryFrom<u64> for MessageSize {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        if n == 0 || n > u64::from(u32::MAX) {
            return Err(format!("{n} is not between 1 and {}", u32::MAX));
        }
        Ok(Self(n as usize))
    }
}

impl From<MessageSize> for u64 {
    fn from(s: MessageSize) -> u64 {
        s.0 as u64
    }
}

integer_setting!(MessageSize);

/// A count between 1 and `MAX`, which catches typos such as
/// `worker_threads = 1000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count<const MAX: usize>(pub usize);

impl<const MAX: usize> TryFrom<u64> for Count<MAX> {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX).contains(n))
            .map(Self)
            .ok_or_else(|| format!("{n} is not between 1 and {MAX}"))
    }
}

impl<const MAX: usize> From<Count<MAX>> for u64 {
    fn from(c: Count<MAX>) -> u64 {
        c.0 as u64
    }
}

integer_setting!(Count<MAX>, const MAX: usize);

/// A machine ID or name: what a value of `machines` metadata may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(pub String);

impl FromStr for Identifier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match switchyard_director::live::identifier_problem(s) {
            Some(reason) => Err(format!("{s:?} cannot name a machine: {reason}")),
            None => Ok(Self(s.to_owned())),
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_setting!(Identifier);

/// An etcd client URL: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint(pub String);

impl FromStr for EtcdEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|_| format!("{s:?} is not a URL such as http://[::1]:2379"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{s:?}: https is not supported yet; reach etcd over http on a trusted network"
                ));
            }
            _ => return Err(format!("{s:?} is not a URL such as http://[::1]:2379")),
        }
        let has_port = uri.authority().is_some_and(|a| a.port_u16().is_some());
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        if !has_port || !bare {
            return Err(format!(
                "{s:?} is not host and port only, such as http://[::1]:2379"
            ));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_setting!(EtcdEndpoint);

/// The key prefix of the registry in etcd: starts and ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPrefix(pub String);

impl FromStr for EtcdPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match switchyard_director::live::prefix_problem(s) {
            Some(reason) => Err(format!("{s:?}: {reason}")),
            None => Ok(Self(s.to_owned())),
        }
    }
}

impl fmt::Display for EtcdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_setting!(EtcdPrefix);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_file_share_one_parser() {
        assert_eq!("0660".parse(), Ok(SocketMode(0o660)));
        assert_eq!("0o600".parse(), Ok(SocketMode(0o600)));
        assert_eq!(SocketMode(0o660).to_string(), "0660");
        for bad in ["999", "rw-rw----", "01000", ""] {
            assert!(bad.parse::<SocketMode>().is_err(), "{bad}");
        }
        assert_eq!("7".parse(), Ok(Secs(Duration::from_secs(7))));
        assert!("0".parse::<Secs>().is_err());
        assert!("-1".parse::<Secs>().is_err());
        assert_eq!("1".parse(), Ok(MessageSize(1)));
        assert!("0".parse::<MessageSize>().is_err());
        assert!("4294967296".parse::<MessageSize>().is_err());
        assert_eq!("256".parse(), Ok(Count::<256>(256)));
        assert!("257".parse::<Count<256>>().is_err());
        assert!("/a.B/C".parse::<MethodName>().is_ok());
        for bad in ["Watch", "/a.B", "/a.B/", "//C", "/a/b/c"] {
            assert!(bad.parse::<MethodName>().is_err(), "{bad}");
        }
        assert!("unix:/run/x.sock".parse::<Listen>().is_ok());
        assert!("localhost:80".parse::<Listen>().is_err());
        for ok in [
            "http://[::1]:2379",
            "http://127.0.0.1:2379/",
            "http://etcd:2379",
        ] {
            assert!(ok.parse::<EtcdEndpoint>().is_ok(), "{ok}");
        }
        for bad in [
            "[::1]:2379",
            "https://[::1]:2379",
            "http://[::1]",
            "http://a:1/x",
            "",
        ] {
            assert!(bad.parse::<EtcdEndpoint>().is_err(), "{bad}");
        }
        assert!("/sy/".parse::<EtcdPrefix>().is_ok());
        assert!("sy/".parse::<EtcdPrefix>().is_err());
        assert!("/sy".parse::<EtcdPrefix>().is_err());
        assert!("alpha".parse::<Identifier>().is_ok());
        for bad in ["", "*", "fd00::1", "a,b", "a/b"] {
            assert!(bad.parse::<Identifier>().is_err(), "{bad}");
        }
    }

    #[test]
    fn file_values_round_trip() {
        #[derive(Debug, PartialEq, Deserialize, Serialize)]
        struct File {
            mode: SocketMode,
            secs: Secs,
            size: MessageSize,
            threads: Count<8>,
            listen: Listen,
            method: MethodName,
        }
        let text = "mode = \"0640\"\nsecs = 3\nsize = 10\nthreads = 2\nlisten = \"unix:/x\"\nmethod = \"/a.B/C\"\n";
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(
            toml::from_str::<File>(&toml::to_string(&file).unwrap()).unwrap(),
            file
        );
        let err = toml::from_str::<File>(&text.replace("secs = 3", "secs = 0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1 second"), "{err}");
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}
