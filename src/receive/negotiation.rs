//! Association negotiation for the SCP (PS3.8 §7.1, PS3.7 Annex D): access control on
//! the called and calling AE titles (and the peer's address), and presentation context
//! acceptance with the node's transfer syntax preference. Pure: no I/O.

use std::collections::HashMap;
use std::net::IpAddr;

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PresentationContextResult, PresentationContextResultReason,
    UserVariableItem,
};

use rustls_pki_types::CertificateDer;

use crate::config::DicomConfig;
use crate::dicom::AeTitle;
use crate::dicom::uid::{
    APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION,
    is_storage_sop_class, ts,
};

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedContext {
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub calling_ae: AeTitle,
    pub contexts: HashMap<u8, AcceptedContext>,
    pub peer_max_pdu: u32,
    pub response: AssociationAC,
}

/// A refused association: the A-ASSOCIATE-RJ to send and a reason for people.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub calling_ae: String,
    pub called_ae: String,
    pub reason: String,
    pub response: AssociationRJ,
}

impl Rejected {
    /// A request that found every association slot taken: a transient rejection
    /// ("local limit exceeded", PS3.8 9.3.4), so that the peer tries again later.
    pub fn local_limit(rq: &AssociationRQ, limit: usize) -> Self {
        Rejected {
            calling_ae: rq.calling_ae_title.trim().to_string(),
            called_ae: rq.called_ae_title.trim().to_string(),
            reason: format!("all {limit} association slots are busy"),
            response: AssociationRJ {
                result: AssociationRJResult::Transient,
                source: AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            },
        }
    }
}

/// Decides on an A-ASSOCIATE-RQ from `peer`, which presented the verified TLS client
/// certificate `certificate` (if any).
pub fn negotiate(
    node_ae: &AeTitle,
    cfg: &DicomConfig,
    rq: &AssociationRQ,
    peer: IpAddr,
    certificate: Option<&CertificateDer<'_>>,
) -> Result<Accepted, Rejected> {
    let calling_raw = rq.calling_ae_title.trim().to_string();
    let called_raw = rq.called_ae_title.trim().to_string();
    let reject = |reason: AssociationRJServiceUserReason, text: String| Rejected {
        calling_ae: calling_raw.clone(),
        called_ae: called_raw.clone(),
        reason: text,
        response: AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(reason),
        },
    };
    // PS3.8 9.3.2: bit 0 of the protocol version is version 1, the only one there is.
    if rq.protocol_version & 1 == 0 {
        return Err(Rejected {
            calling_ae: calling_raw.clone(),
            called_ae: called_raw.clone(),
            reason: format!("protocol version {} is not supported", rq.protocol_version),
            response: AssociationRJ {
                result: AssociationRJResult::Permanent,
                source: AssociationRJSource::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                ),
            },
        });
    }
    let peer_max_pdu = crate::ul::announced_max_pdu(&rq.user_variables);
    if !crate::ul::max_pdu_is_usable(peer_max_pdu) {
        return Err(reject(
            AssociationRJServiceUserReason::NoReasonGiven,
            format!("maximum PDU length {peer_max_pdu} cannot carry a presentation data value"),
        ));
    }
    if rq.application_context_name.trim_end_matches('\0') != APPLICATION_CONTEXT {
        return Err(reject(
            AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            format!(
                "application context {:?} is not DICOM's",
                rq.application_context_name
            ),
        ));
    }
    if called_raw != node_ae.as_str() {
        return Err(reject(
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            format!("called AE title {called_raw:?} is not this node's ({node_ae})"),
        ));
    }
    let calling = match AeTitle::parse(&calling_raw) {
        Ok(ae) if cfg.allows(&ae, peer, certificate) => ae,
        _ => {
            return Err(reject(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                format!(
                    "calling AE title {calling_raw:?} from {peer}{} is not on the allow-list",
                    if certificate.is_some() {
                        " (with its certificate)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    };

    let mut contexts = HashMap::new();
    let results = rq
        .presentation_contexts
        .iter()
        .map(|pc| {
            let abstract_syntax = pc.abstract_syntax.trim_end_matches('\0').to_string();
            let supported =
                abstract_syntax == VERIFICATION || is_storage_sop_class(&abstract_syntax);
            let chosen = supported
                .then(|| choose_transfer_syntax(pc.transfer_syntaxes.iter().map(String::as_str)))
                .flatten();
            let reason = match (supported, chosen) {
                (false, _) => PresentationContextResultReason::AbstractSyntaxNotSupported,
                (true, None) => PresentationContextResultReason::TransferSyntaxesNotSupported,
                (true, Some(ts)) => {
                    contexts.insert(
                        pc.id,
                        AcceptedContext {
                            abstract_syntax,
                            transfer_syntax: ts.to_string(),
                        },
                    );
                    PresentationContextResultReason::Acceptance
                }
            };
            PresentationContextResult {
                id: pc.id,
                reason,
                transfer_syntax: chosen.unwrap_or(ts::IMPLICIT_VR_LE).to_string(),
            }
        })
        .collect();

    Ok(Accepted {
        response: AssociationAC {
            protocol_version: 1,
            calling_ae_title: rq.calling_ae_title.clone(),
            called_ae_title: rq.called_ae_title.clone(),
            application_context_name: APPLICATION_CONTEXT.to_string(),
            presentation_contexts: results,
            user_variables: vec![
                UserVariableItem::MaxLength(cfg.max_pdu_length),
                UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(
                    IMPLEMENTATION_VERSION_NAME.to_string(),
                ),
            ],
        },
        calling_ae: calling,
        contexts,
        peer_max_pdu,
    })
}

/// The most preferred of the proposed transfer syntaxes, in the node's order.
pub fn choose_transfer_syntax<'a>(
    proposed: impl Iterator<Item = &'a str> + Clone,
) -> Option<&'static str> {
    ts::ACCEPTED.iter().copied().find(|ours| {
        proposed
            .clone()
            .any(|p| p.trim_end_matches(['\0', ' ']) == *ours)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::uid::CT_IMAGE_STORAGE;
    use dicom_ul::pdu::PresentationContextProposed;
    use std::collections::BTreeMap;

    fn cfg() -> DicomConfig {
        let text = "[node]\nae_title='SEGNODE'\ndata_dir='/tmp'\n[dicom]\nlisten='127.0.0.1:1'\n\
                    [[dicom.allowed_peers]]\nae_title='PACS'\nhost='127.0.0.1'\n";
        crate::config::Config::from_toml(text, &BTreeMap::new())
            .unwrap()
            .dicom
    }

    fn rq(calling: &str, called: &str, contexts: Vec<(&str, Vec<&str>)>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts
                .into_iter()
                .enumerate()
                .map(|(i, (a, t))| PresentationContextProposed {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: a.into(),
                    transfer_syntaxes: t.into_iter().map(String::from).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }
    }

    fn node() -> AeTitle {
        AeTitle::parse("SEGNODE").unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn prefers_uncompressed_and_refuses_unknown_syntaxes() {
        let req = rq(
            "PACS",
            "SEGNODE",
            vec![
                (
                    CT_IMAGE_STORAGE,
                    vec![
                        ts::JPEG_2000_LOSSLESS,
                        ts::IMPLICIT_VR_LE,
                        ts::EXPLICIT_VR_LE,
                    ],
                ),
                (CT_IMAGE_STORAGE, vec!["1.2.840.10008.1.2.4.51"]),
                ("1.2.840.10008.5.1.4.1.2.2.1", vec![ts::IMPLICIT_VR_LE]),
                (VERIFICATION, vec![ts::IMPLICIT_VR_LE]),
            ],
        );
        let acc = negotiate(&node(), &cfg(), &req, LOCAL, None).unwrap();
        let reasons: Vec<_> = acc
            .response
            .presentation_contexts
            .iter()
            .map(|r| r.reason.clone())
            .collect();
        assert_eq!(
            reasons,
            vec![
                PresentationContextResultReason::Acceptance,
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                PresentationContextResultReason::Acceptance,
            ]
        );
        assert_eq!(acc.contexts[&1].transfer_syntax, ts::EXPLICIT_VR_LE);
        assert_eq!(acc.contexts.len(), 2);
        assert_eq!(acc.peer_max_pdu, 16384);
    }

    #[test]
    fn jpeg2000_only_is_kept_as_is() {
        let req = rq(
            "PACS",
            "SEGNODE",
            vec![(CT_IMAGE_STORAGE, vec![ts::JPEG_2000_LOSSLESS])],
        );
        let acc = negotiate(&node(), &cfg(), &req, LOCAL, None).unwrap();
        assert_eq!(acc.contexts[&1].transfer_syntax, ts::JPEG_2000_LOSSLESS);
    }

    #[test]
    fn wrong_called_or_calling_ae_or_host_is_rejected() {
        let contexts = || vec![(VERIFICATION, vec![ts::IMPLICIT_VR_LE])];
        let wrong_called = negotiate(
            &node(),
            &cfg(),
            &rq("PACS", "OTHER", contexts()),
            LOCAL,
            None,
        )
        .unwrap_err();
        assert_eq!(
            wrong_called.response.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        );
        let unknown = negotiate(
            &node(),
            &cfg(),
            &rq("NOPE", "SEGNODE", contexts()),
            LOCAL,
            None,
        )
        .unwrap_err();
        assert_eq!(
            unknown.response.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        assert!(unknown.reason.contains("NOPE"));
        let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(
            negotiate(
                &node(),
                &cfg(),
                &rq("PACS", "SEGNODE", contexts()),
                elsewhere,
                None,
            )
            .is_err()
        );
    }
}
