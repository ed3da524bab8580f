//! A DICOM peer's address as operators write it, `AE@HOST:PORT`: the AE title it
//! answers to and where it listens. Destinations, `segnode echo` and `segnode send`
//! name peers this way.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::AeTitle;

/// A peer as `AE@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerAddress {
    pub ae_title: AeTitle,
    pub host: String,
    pub port: u16,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ae, rest) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not AE@HOST:PORT"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no :PORT"))?;
        Ok(Self {
            ae_title: AeTitle::parse(ae).map_err(|e| e.to_string())?,
            host: host.trim_matches(['[', ']']).to_string(),
            port: port
                .parse()
                .map_err(|_| format!("{port:?} is not a port number"))?,
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reads_and_prints_as_ae_at_host_colon_port() {
        let p: PeerAddress = "PACS@[::1]:104".parse().unwrap();
        assert_eq!(
            (p.ae_title.as_str(), p.host.as_str(), p.port),
            ("PACS", "::1", 104)
        );
        assert_eq!(p.to_string(), "PACS@::1:104");
        assert!("PACS:104".parse::<PeerAddress>().is_err());
        assert!("PACS@host:x".parse::<PeerAddress>().is_err());
    }
}
