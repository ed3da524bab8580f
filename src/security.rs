//! What in a configuration a hospital's security review would flag: traffic with
//! patient data unencrypted off this machine, peers not authenticated, secrets readable
//! by other users. `segnode check` prints each finding; none stops the node.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::config::{Config, Transport};

/// Each insecure setting, as a sentence for the operator.
pub fn insecure_settings(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    let dicom = &config.dicom;
    if !dicom.listen.ip().is_loopback() {
        found.push(format!(
            "plain DICOM listens on {} (off loopback): images travel unencrypted; use [dicom.tls] and listen on loopback only",
            dicom.listen
        ));
    }
    if dicom.allow_any_calling_ae {
        found.push(
            "dicom.allow_any_calling_ae = true: any peer that knows the AE title can send".into(),
        );
    }
    match &dicom.tls {
        Some(tls) if !tls.require_client_cert => found.push(format!(
            "the DICOM TLS listener {} does not require client certificates: peers are known by AE title and address only",
            tls.listen
        )),
        _ => {}
    }
    if !config.http.listen.ip().is_loopback() && config.http.tls.is_none() {
        found.push(format!(
            "the HTTP API listens on {} (off loopback) without TLS: tokens and patient IDs travel unencrypted",
            config.http.listen
        ));
    }
    if config.http.allow_unauthenticated_loopback {
        found.push(
            "http.allow_unauthenticated_loopback = true: every local user can read the audit trail"
                .into(),
        );
    }
    let local = |host: &str| {
        host.trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || host == "localhost"
    };
    for d in &config.destinations {
        match &d.transport {
            Transport::Dimse { peer, tls, .. } if tls.is_none() && !local(&peer.host) => {
                found.push(format!(
                    "destination {:?} ({}) is plain DICOM off this machine: results travel unencrypted",
                    d.name, peer.host
                ));
            }
            Transport::Dicomweb(web) => {
                let host = url::Url::parse(&web.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                if web.url.starts_with("http://") && !local(&host) {
                    found.push(format!(
                        "destination {:?} ({}) is plain HTTP off this machine: results and credentials travel unencrypted",
                        d.name, web.url
                    ));
                }
            }
            Transport::Dimse { .. } => {}
        }
    }
    let mut secrets: Vec<&Path> = Vec::new();
    if !config.http.allow_unauthenticated_loopback {
        secrets.push(&config.http.token_file);
    }
    secrets.extend(dicom.tls.as_ref().map(|t| t.key_file.as_path()));
    secrets.extend(
        config
            .destinations
            .iter()
            .filter_map(|d| d.dicom_tls()?.key_file.as_deref()),
    );
    for path in secrets {
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            found.push(format!(
                "{} is readable by other users (mode {:o}): chmod 600",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(listen: &str, dicom: &str, rest: &str, data_dir: &Path) -> Config {
        let text = format!(
            "[node]\nae_title='SEGNODE'\ndata_dir='{}'\n[dicom]\nlisten='{listen}'\n{dicom}\n\
             [[dicom.allowed_peers]]\nae_title='PACS'\n{rest}",
            data_dir.display()
        );
        Config::from_toml(&text, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn the_shipped_defaults_are_quiet_and_each_weakness_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = config("127.0.0.1:11112", "", "", dir.path());
        assert_eq!(insecure_settings(&quiet), Vec::<String>::new());
        let weak = config(
            "0.0.0.0:11112",
            "allow_any_calling_ae = true",
            "[http]\nlisten='0.0.0.0:8080'\n\
             [[destinations]]\nname='pacs'\nae_title='PACS'\nhost='10.1.2.3'\nport=104\n\
             [[destinations]]\nname='archive'\nkind='dicomweb'\nurl='http://10.1.2.4/dicom-web'\n\
             [[destinations]]\nname='local'\nkind='dicomweb'\nurl='http://127.0.0.1:8042/dicom-web'\n",
            dir.path(),
        );
        std::fs::write(dir.path().join("api-token"), "t").unwrap();
        std::fs::set_permissions(
            dir.path().join("api-token"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let found = insecure_settings(&weak).join("\n");
        for needle in [
            "plain DICOM listens on 0.0.0.0",
            "allow_any_calling_ae",
            "HTTP API listens on 0.0.0.0",
            "\"pacs\" (10.1.2.3)",
            "\"archive\" (http://10.1.2.4/dicom-web) is plain HTTP",
            "api-token is readable by other users",
        ] {
            assert!(found.contains(needle), "{needle} not in:\n{found}");
        }
        assert!(!found.contains("\"local\""), "{found}");
    }
}
