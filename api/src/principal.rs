//! Who is calling: the client certificate's URI SAN mapped to a
//! [`Principal`].
//!
//! The scheme (one URI SAN per certificate, issued by the platform CA):
//!
//! | URI SAN | principal |
//! | --- | --- |
//! | `kiban:office:<事業所番号 10 digits>:terminal:<terminal id>` | an office terminal |
//! | `kiban:insurer:<保険者番号 6 digits>` | an insurer (municipality) |
//! | `kiban:medical:<医療機関コード 10 digits>` | a medical institution |
//! | `kiban:auditor:<id>` | an auditor |
//! | `kiban:federation` | the national federation (国保中央会) |
//!
//! Each office terminal has its own certificate, so an office principal is
//! always office + terminal; its SHA-256 fingerprint must be the
//! credential registered for that terminal.

use der::Decode;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use kiban_events::domain::TerminalId;
use kiban_events::ids::{InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// The OID of the subjectAltName extension.
const SUBJECT_ALT_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");

/// Who a verified client certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A terminal of a care office.
    Office {
        office: OfficeNumber,
        terminal: TerminalId,
    },
    /// An insurer.
    Insurer(InsurerNumber),
    /// A medical institution.
    MedicalInstitution(MedicalInstitutionCode),
    /// An auditor.
    Auditor(String),
    /// The national federation.
    Federation,
}

impl Principal {
    /// Parses one URI of the scheme above.
    pub fn from_uri(uri: &str) -> Option<Principal> {
        let rest = uri.strip_prefix("kiban:")?;
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            ["office", office, "terminal", terminal] => Some(Principal::Office {
                office: OfficeNumber::parse(office).ok()?,
                terminal: TerminalId::parse(terminal).ok()?,
            }),
            ["insurer", insurer] => Some(Principal::Insurer(InsurerNumber::parse(insurer).ok()?)),
            ["medical", code] => Some(Principal::MedicalInstitution(
                MedicalInstitutionCode::parse(code).ok()?,
            )),
            ["auditor", id]
                if !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                Some(Principal::Auditor((*id).to_owned()))
            }
            ["federation"] => Some(Principal::Federation),
            _ => None,
        }
    }

    /// The URI SAN of this principal.
    pub fn to_uri(&self) -> String {
        match self {
            Principal::Office { office, terminal } => {
                format!("kiban:office:{office}:terminal:{}", terminal.as_str())
            }
            Principal::Insurer(insurer) => format!("kiban:insurer:{insurer}"),
            Principal::MedicalInstitution(code) => format!("kiban:medical:{code}"),
            Principal::Auditor(id) => format!("kiban:auditor:{id}"),
            Principal::Federation => "kiban:federation".to_owned(),
        }
    }

    /// The kind, for metrics and logs (no identifiers).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Office { .. } => "office",
            Principal::Insurer(_) => "insurer",
            Principal::MedicalInstitution(_) => "medical",
            Principal::Auditor(_) => "auditor",
            Principal::Federation => "federation",
        }
    }
}

/// What the TLS layer learnt about the peer of one connection; put into
/// every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// No client certificate was presented.
    Anonymous,
    /// A certificate chained to the platform CA but names no principal.
    Unrecognised,
    /// A verified principal and the SHA-256 fingerprint of its certificate.
    Verified {
        principal: Principal,
        fingerprint: String,
    },
}

impl ClientIdentity {
    /// Maps the peer's end-entity certificate (already verified against the
    /// platform CA by rustls) to an identity.
    pub fn from_certificate(der: Option<&[u8]>) -> ClientIdentity {
        let Some(der) = der else {
            return ClientIdentity::Anonymous;
        };
        match principal_of(der) {
            Some(principal) => ClientIdentity::Verified {
                principal,
                fingerprint: fingerprint(der),
            },
            None => ClientIdentity::Unrecognised,
        }
    }
}

/// SHA-256 of the certificate's DER, as 64 lower-case hex digits: what a
/// terminal's registered credential is.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn principal_of(der: &[u8]) -> Option<Principal> {
    let certificate = Certificate::from_der(der).ok()?;
    let extensions = certificate.tbs_certificate.extensions?;
    let san = extensions
        .iter()
        .find(|extension| extension.extn_id == SUBJECT_ALT_NAME)?;
    let names = SubjectAltName::from_der(san.extn_value.as_bytes()).ok()?;
    let mut principals = names.0.iter().filter_map(|name| match name {
        GeneralName::UniformResourceIdentifier(uri) => Principal::from_uri(uri.as_str()),
        _ => None,
    });
    let principal = principals.next()?;
    // A certificate naming two principals is ambiguous: refuse it.
    principals.next().is_none().then_some(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_principal_round_trips_through_its_uri() {
        for uri in [
            "kiban:office:1312345678:terminal:T-01",
            "kiban:insurer:131016",
            "kiban:medical:1312345678",
            "kiban:auditor:audit-1",
            "kiban:federation",
        ] {
            let principal = Principal::from_uri(uri).expect(uri);
            assert_eq!(principal.to_uri(), uri);
        }
        for bad in [
            "kiban:office:1312345678",
            "kiban:insurer:13",
            "office:1312345678",
            "kiban:auditor:",
        ] {
            assert_eq!(Principal::from_uri(bad), None, "{bad}");
        }
    }
}
