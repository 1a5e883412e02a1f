//! The server's check of a signed challenge: is this signature made by the key of a
//! valid, unrevoked user-authentication certificate issued by a CA we trust?
//!
//! [`verify_challenge_signature`] is a pure function: the time, the trusted CA
//! certificates and the revocation data are arguments, nothing is fetched or read
//! from a clock. Only RSA with SHA-256 and PKCS#1 v1.5 is accepted, the algorithm
//! JPKI uses for user-authentication certificates, their CAs and their CRLs.

use std::time::SystemTime;

use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::jpki::{CERTIFICATE_BYTES_MAX, SIGNATURE_BYTES};

/// `sha256WithRSAEncryption` (RFC 4055).
const SHA256_WITH_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// Modulus size of a card's user-authentication key.
pub const CARD_KEY_BITS: usize = 2048;
/// Largest CA key we accept; larger keys only cost verification time.
pub const CA_KEY_BITS_MAX: usize = 4096;
/// Largest CRL we parse. JPKI's user-authentication CRLs are large; the bound keeps a
/// broken download from exhausting memory.
pub const CRL_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most trusted CA certificates considered in one verification.
pub const TRUSTED_CAS_MAX: usize = 64;

/// How to learn whether a certificate was revoked.
#[derive(Debug, Clone, Copy)]
pub enum Revocation<'a> {
    /// A DER CRL (RFC 5280) issued by the CA that issued the certificate. It must be
    /// signed by that CA and current at `now` (`thisUpdate <= now <= nextUpdate`).
    Crl(&'a [u8]),
    /// Revoked serial numbers (the DER INTEGER content bytes of the certificate's
    /// serial number, as [`VerifiedCardHolder::serial_number`] returns them), from a
    /// list the operator keeps, e.g. extracted from a CRL checked
    /// elsewhere. Serials of all trusted CAs share the list, so it should only be used
    /// with a single trusted CA.
    RevokedSerials(&'a [Vec<u8>]),
    /// A CRL parsed and checked once ([`CheckedCrl::parse`]) and kept while its
    /// file is unchanged: only its issuer and currency are checked per
    /// verification (issue 16, Low: the CRL, up to [`CRL_BYTES_MAX`], was parsed
    /// at every consent).
    Checked(&'a CheckedCrl),
}

/// A CRL whose signature was verified with one of the trusted CAs, reduced to
/// what a verification needs: its issuer, the period it is current for, and
/// the revoked serial numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCrl {
    issuer: x509_cert::name::Name,
    this_update: SystemTime,
    next_update: SystemTime,
    revoked: std::collections::HashSet<Vec<u8>>,
}

impl CheckedCrl {
    /// Parses `crl_der` and checks that one of `trusted_ca_certificates_der`
    /// (by name) signed it and may sign CRLs; whether it is current is checked
    /// at each verification. Costs a parse of up to [`CRL_BYTES_MAX`]: run it
    /// off the async runtime and keep the result while the file is unchanged.
    pub fn parse(
        crl_der: &[u8],
        trusted_ca_certificates_der: &[&[u8]],
    ) -> Result<CheckedCrl, VerifyError> {
        if crl_der.len() > CRL_BYTES_MAX {
            return Err(VerifyError::MalformedCrl);
        }
        let crl = CertificateList::from_der(crl_der).map_err(|_| VerifyError::MalformedCrl)?;
        let mut cas = trusted_ca_certificates_der.iter().take(TRUSTED_CAS_MAX);
        let ca = loop {
            let Some(ca_der) = cas.next() else {
                return Err(VerifyError::CrlNotFromIssuer);
            };
            let ca = Certificate::from_der(ca_der).map_err(|_| VerifyError::MalformedTrustedCa)?;
            if ca.tbs_certificate.subject == crl.tbs_cert_list.issuer {
                break ca;
            }
        };
        verify_crl_signature(&crl, &ca)?;
        let next_update = crl
            .tbs_cert_list
            .next_update
            .ok_or(VerifyError::MalformedCrl)?;
        Ok(CheckedCrl {
            this_update: crl.tbs_cert_list.this_update.to_system_time(),
            next_update: next_update.to_system_time(),
            revoked: crl
                .tbs_cert_list
                .revoked_certificates
                .unwrap_or_default()
                .iter()
                .map(|entry| entry.serial_number.as_bytes().to_vec())
                .collect(),
            issuer: crl.tbs_cert_list.issuer,
        })
    }

    /// How many certificates it revokes.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }
}

/// Who signed: the certificate facts the consent record needs. A JPKI
/// user-authentication certificate names no person; an insured person is found
/// through a registered link from (issuer, serial number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCardHolder {
    serial_number: Vec<u8>,
    issuer: String,
    subject: String,
    not_after: SystemTime,
}

impl VerifiedCardHolder {
    /// The certificate's serial number (big-endian bytes).
    pub fn serial_number(&self) -> &[u8] {
        &self.serial_number
    }

    /// The certificate's serial number in upper-case hexadecimal.
    pub fn serial_number_hex(&self) -> String {
        self.serial_number
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect()
    }

    /// The issuer's distinguished name (RFC 4514).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The subject's distinguished name (RFC 4514).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The end of the certificate's validity: consent cannot outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// Why a signed challenge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The challenge is shorter or longer than allowed.
    #[error("the challenge must be {min} to {max} bytes long", min = crate::CHALLENGE_BYTES_MIN, max = crate::CHALLENGE_BYTES_MAX)]
    InvalidChallenge,
    /// The card's certificate cannot be parsed or is too large.
    #[error("the card's certificate is malformed")]
    MalformedCertificate,
    /// A configured trusted CA certificate cannot be parsed (a configuration error).
    #[error("a trusted CA certificate is malformed")]
    MalformedTrustedCa,
    /// A certificate, CRL or key uses another algorithm or key size than JPKI's.
    #[error("unsupported algorithm or key: {0}")]
    Unsupported(&'static str),
    /// No trusted CA has the certificate's issuer name.
    #[error("the certificate was not issued by a trusted CA")]
    UntrustedIssuer,
    /// A trusted CA has the issuer's name but did not sign the certificate.
    #[error("the certificate's signature does not verify with the trusted CA")]
    BadCertificateSignature,
    /// The certificate's key may not be used for signing.
    #[error("the certificate's key is not for digital signatures")]
    WrongKeyUsage,
    /// The certificate or its CA is not valid yet at the given time.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// The certificate or its CA has expired at the given time.
    #[error("the certificate has expired")]
    Expired,
    /// The CRL cannot be parsed, is too large, or lacks a next update.
    #[error("the CRL is malformed")]
    MalformedCrl,
    /// The CRL is not from the certificate's CA, or its signature does not verify.
    #[error("the CRL is not signed by the certificate's CA")]
    CrlNotFromIssuer,
    /// The CRL is not current at the given time.
    #[error("the CRL is out of date")]
    CrlOutOfDate,
    /// The certificate is revoked.
    #[error("the certificate has been revoked")]
    Revoked,
    /// The signature over the challenge does not verify with the certificate's key.
    #[error("the signature over the challenge does not verify")]
    BadChallengeSignature,
    /// The card's certificate is a CA certificate (basicConstraints cA), not an
    /// end entity's (RFC 5280 §4.2.1.9).
    #[error("the card's certificate is a CA certificate")]
    NotAnEndEntity,
    /// A certificate has a critical extension this verifier does not process
    /// (RFC 5280 §4.2: such a certificate must be rejected).
    #[error("a certificate has a critical extension that is not understood")]
    UnknownCriticalExtension,
    /// The trusted CA certificate that issued the card's certificate (or the CRL)
    /// is not a CA for that: no basicConstraints with cA, or a key usage without
    /// keyCertSign (cRLSign for a CRL), or a path length below zero (a
    /// configuration error).
    #[error("the trusted CA certificate is not a certification authority for this")]
    NotACa,
}

impl VerifyError {
    /// The message in Japanese.
    pub fn message_ja(&self) -> String {
        match self {
            VerifyError::InvalidChallenge => "チャレンジの長さが不正です。",
            VerifyError::MalformedCertificate => "カードの電子証明書の形式が不正です。",
            VerifyError::MalformedTrustedCa => {
                "信頼する認証局の証明書の形式が不正です（設定の誤り）。"
            }
            VerifyError::Unsupported(_) => "対応していない署名方式または鍵です。",
            VerifyError::UntrustedIssuer => "信頼する認証局が発行した電子証明書ではありません。",
            VerifyError::BadCertificateSignature => "電子証明書の署名を検証できません。",
            VerifyError::WrongKeyUsage => "電子証明書の鍵は署名に使えません。",
            VerifyError::NotYetValid => "電子証明書の有効期間がまだ始まっていません。",
            VerifyError::Expired => "電子証明書の有効期間が過ぎています。",
            VerifyError::MalformedCrl => "失効リスト（CRL）の形式が不正です。",
            VerifyError::CrlNotFromIssuer => {
                "失効リスト（CRL）が発行元の認証局のものではありません。"
            }
            VerifyError::CrlOutOfDate => "失効リスト（CRL）が最新ではありません。",
            VerifyError::Revoked => "電子証明書は失効しています。",
            VerifyError::BadChallengeSignature => "チャレンジへの署名を検証できません。",
            VerifyError::NotAnEndEntity => "カードの電子証明書が認証局の証明書です。",
            VerifyError::UnknownCriticalExtension => {
                "電子証明書に処理できない重要な拡張があります。"
            }
            VerifyError::NotACa => "信頼する認証局の証明書が認証局として使えません（設定の誤り）。",
        }
        .to_owned()
    }
}

/// Checks that `signature` is the card's RSA PKCS#1 v1.5 SHA-256 signature over
/// `challenge`, made with the key of `certificate_der`, which must be issued (and
/// signed) by one of `trusted_ca_certificates_der`, valid at `now` (as must its CA),
/// allowed to sign, and not revoked according to `revocation`.
pub fn verify_challenge_signature(
    certificate_der: &[u8],
    trusted_ca_certificates_der: &[&[u8]],
    revocation: Revocation<'_>,
    challenge: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedCardHolder, VerifyError> {
    if !(crate::CHALLENGE_BYTES_MIN..=crate::CHALLENGE_BYTES_MAX).contains(&challenge.len()) {
        return Err(VerifyError::InvalidChallenge);
    }
    if certificate_der.len() > CERTIFICATE_BYTES_MAX {
        return Err(VerifyError::MalformedCertificate);
    }
    let certificate =
        Certificate::from_der(certificate_der).map_err(|_| VerifyError::MalformedCertificate)?;
    let ca = find_issuing_ca(&certificate, trusted_ca_certificates_der)?;
    check_validity(&ca, now)?;
    check_validity(&certificate, now)?;
    check_issuing_ca(&ca, KeyUsages::KeyCertSign)?;
    check_end_entity(&certificate)?;
    let card_key = rsa_key(&certificate.tbs_certificate.subject_public_key_info)?;
    if card_key.size() * 8 != CARD_KEY_BITS {
        return Err(VerifyError::Unsupported("the card key is not RSA-2048"));
    }
    if signature.len() != SIGNATURE_BYTES {
        return Err(VerifyError::BadChallengeSignature);
    }
    card_key
        .verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(challenge),
            signature,
        )
        .map_err(|_| VerifyError::BadChallengeSignature)?;
    // The revocation list last: it may be large (up to `CRL_BYTES_MAX`),
    // and a caller without a signature the card made must not make the
    // server parse it.
    check_revocation(&certificate, &ca, revocation, now)?;
    let tbs = &certificate.tbs_certificate;
    Ok(VerifiedCardHolder {
        serial_number: tbs.serial_number.as_bytes().to_vec(),
        issuer: tbs.issuer.to_string(),
        subject: tbs.subject.to_string(),
        not_after: tbs.validity.not_after.to_system_time(),
    })
}

/// The trusted CA whose name is the certificate's issuer and whose key verifies the
/// certificate's signature.
fn find_issuing_ca(
    certificate: &Certificate,
    trusted_ca_certificates_der: &[&[u8]],
) -> Result<Certificate, VerifyError> {
    let mut error = VerifyError::UntrustedIssuer;
    for ca_der in trusted_ca_certificates_der.iter().take(TRUSTED_CAS_MAX) {
        let ca = Certificate::from_der(ca_der).map_err(|_| VerifyError::MalformedTrustedCa)?;
        if ca.tbs_certificate.subject != certificate.tbs_certificate.issuer {
            continue;
        }
        let tbs_der = certificate
            .tbs_certificate
            .to_der()
            .map_err(|_| VerifyError::MalformedCertificate)?;
        let signed = SignedData {
            tbs_der: &tbs_der,
            outer_algorithm: certificate.signature_algorithm.oid,
            inner_algorithm: certificate.tbs_certificate.signature.oid,
            signature: certificate.signature.as_bytes(),
        };
        if verify_signed_by(&signed, &ca)? {
            return Ok(ca);
        }
        error = VerifyError::BadCertificateSignature;
    }
    Err(error)
}

/// A signed structure (certificate or CRL): its to-be-signed bytes, the algorithm
/// named outside and inside the signed part, and the signature.
struct SignedData<'a> {
    tbs_der: &'a [u8],
    outer_algorithm: ObjectIdentifier,
    inner_algorithm: ObjectIdentifier,
    signature: Option<&'a [u8]>,
}

/// Whether the CA's key verifies `signed`; an error when algorithm or key are not
/// the ones we accept.
fn verify_signed_by(signed: &SignedData<'_>, ca: &Certificate) -> Result<bool, VerifyError> {
    if signed.outer_algorithm != SHA256_WITH_RSA_ENCRYPTION
        || signed.inner_algorithm != SHA256_WITH_RSA_ENCRYPTION
    {
        return Err(VerifyError::Unsupported(
            "signature algorithm is not sha256WithRSAEncryption",
        ));
    }
    let ca_key = rsa_key(&ca.tbs_certificate.subject_public_key_info)?;
    if ca_key.size() * 8 > CA_KEY_BITS_MAX {
        return Err(VerifyError::Unsupported(
            "the CA key is larger than 4096 bits",
        ));
    }
    let Some(signature) = signed.signature else {
        return Ok(false);
    };
    Ok(ca_key
        .verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(signed.tbs_der),
            signature,
        )
        .is_ok())
}

fn rsa_key(info: &SubjectPublicKeyInfoOwned) -> Result<RsaPublicKey, VerifyError> {
    let der = info
        .to_der()
        .map_err(|_| VerifyError::MalformedCertificate)?;
    RsaPublicKey::from_public_key_der(&der).map_err(|_| VerifyError::Unsupported("not an RSA key"))
}

fn check_validity(certificate: &Certificate, now: SystemTime) -> Result<(), VerifyError> {
    let validity = &certificate.tbs_certificate.validity;
    if now < validity.not_before.to_system_time() {
        return Err(VerifyError::NotYetValid);
    }
    if now > validity.not_after.to_system_time() {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

/// The extensions this verifier understands (RFC 5280 §4.2): a certificate
/// with any other extension marked critical is refused. Key usage and basic
/// constraints are checked; the certificate policies (JPKI marks them
/// critical) are accepted without a policy constraint (RFC 5280 §6.1: an
/// initial policy set of any-policy); the rest are informational here.
const UNDERSTOOD_EXTENSIONS: [ObjectIdentifier; 9] = [
    KeyUsage::OID,
    BasicConstraints::OID,
    CertificatePolicies::OID,
    ExtendedKeyUsage::OID,
    SubjectAltName::OID,
    SubjectKeyIdentifier::OID,
    AuthorityKeyIdentifier::OID,
    CrlDistributionPoints::OID,
    AuthorityInfoAccessSyntax::OID,
];

/// Refuses a certificate with a critical extension not in
/// [`UNDERSTOOD_EXTENSIONS`].
fn check_critical_extensions(certificate: &Certificate) -> Result<(), VerifyError> {
    let extensions = certificate.tbs_certificate.extensions.as_deref();
    if extensions
        .unwrap_or_default()
        .iter()
        .any(|extension| extension.critical && !UNDERSTOOD_EXTENSIONS.contains(&extension.extn_id))
    {
        return Err(VerifyError::UnknownCriticalExtension);
    }
    Ok(())
}

/// The card's certificate is an end entity's (RFC 5280 §4.2.1.3, §4.2.1.9):
/// a key usage is present and allows digital signatures (JPKI's
/// user-authentication certificates state it; a certificate without one is
/// refused rather than taken as allowing everything), basic constraints, if
/// present, do not make it a CA, and no critical extension is unknown.
fn check_end_entity(certificate: &Certificate) -> Result<(), VerifyError> {
    check_critical_extensions(certificate)?;
    match certificate.tbs_certificate.get::<KeyUsage>() {
        Ok(Some((_critical, usage))) if usage.0.contains(KeyUsages::DigitalSignature) => {}
        Ok(_) => return Err(VerifyError::WrongKeyUsage),
        Err(_) => return Err(VerifyError::MalformedCertificate),
    }
    match certificate.tbs_certificate.get::<BasicConstraints>() {
        Ok(None) => Ok(()),
        Ok(Some((_critical, constraints))) if !constraints.ca => Ok(()),
        Ok(Some(_)) => Err(VerifyError::NotAnEndEntity),
        Err(_) => Err(VerifyError::MalformedCertificate),
    }
}

/// The trusted certificate that issued the card's certificate (with `usage`
/// [`KeyUsages::KeyCertSign`]) or a CRL ([`KeyUsages::CRLSign`]) is a CA for
/// it (RFC 5280 §4.2.1.9, §4.2.1.3, §6.1.4): basic constraints present with
/// cA set, a key usage, when stated, that includes `usage`, and no unknown
/// critical extension. The card's certificate must be issued by a trusted CA
/// directly (no intermediate CAs are taken from the card), so any path length
/// constraint (≥ 0) is met.
fn check_issuing_ca(ca: &Certificate, usage: KeyUsages) -> Result<(), VerifyError> {
    check_critical_extensions(ca).map_err(|_| VerifyError::NotACa)?;
    match ca.tbs_certificate.get::<BasicConstraints>() {
        Ok(Some((_critical, constraints))) if constraints.ca => {}
        Ok(_) => return Err(VerifyError::NotACa),
        Err(_) => return Err(VerifyError::MalformedTrustedCa),
    }
    match ca.tbs_certificate.get::<KeyUsage>() {
        Ok(None) => Ok(()),
        Ok(Some((_critical, stated))) if stated.0.contains(usage) => Ok(()),
        Ok(Some(_)) => Err(VerifyError::NotACa),
        Err(_) => Err(VerifyError::MalformedTrustedCa),
    }
}

fn check_revocation(
    certificate: &Certificate,
    ca: &Certificate,
    revocation: Revocation<'_>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let serial = certificate.tbs_certificate.serial_number.as_bytes();
    match revocation {
        Revocation::RevokedSerials(revoked) => {
            if revoked.iter().any(|entry| entry.as_slice() == serial) {
                return Err(VerifyError::Revoked);
            }
            Ok(())
        }
        Revocation::Crl(crl_der) => {
            let crl = current_crl_of(crl_der, ca, now)?;
            let revoked = crl.tbs_cert_list.revoked_certificates.unwrap_or_default();
            if revoked
                .iter()
                .any(|entry| entry.serial_number.as_bytes() == serial)
            {
                return Err(VerifyError::Revoked);
            }
            Ok(())
        }
        Revocation::Checked(crl) => {
            if crl.issuer != ca.tbs_certificate.subject {
                return Err(VerifyError::CrlNotFromIssuer);
            }
            check_issuing_ca(ca, KeyUsages::CRLSign)?;
            if now < crl.this_update || now > crl.next_update {
                return Err(VerifyError::CrlOutOfDate);
            }
            if crl.revoked.contains(serial) {
                return Err(VerifyError::Revoked);
            }
            Ok(())
        }
    }
}

/// Checks that `ca` signed `crl` and may sign CRLs.
fn verify_crl_signature(crl: &CertificateList, ca: &Certificate) -> Result<(), VerifyError> {
    let tbs_der = crl
        .tbs_cert_list
        .to_der()
        .map_err(|_| VerifyError::MalformedCrl)?;
    let signed = SignedData {
        tbs_der: &tbs_der,
        outer_algorithm: crl.signature_algorithm.oid,
        inner_algorithm: crl.tbs_cert_list.signature.oid,
        signature: crl.signature.as_bytes(),
    };
    if !verify_signed_by(&signed, ca)? {
        return Err(VerifyError::CrlNotFromIssuer);
    }
    check_issuing_ca(ca, KeyUsages::CRLSign)
}

/// Parses the CRL and checks that `ca` issued and signed it and that it is current.
fn current_crl_of(
    crl_der: &[u8],
    ca: &Certificate,
    now: SystemTime,
) -> Result<CertificateList, VerifyError> {
    if crl_der.len() > CRL_BYTES_MAX {
        return Err(VerifyError::MalformedCrl);
    }
    let crl = CertificateList::from_der(crl_der).map_err(|_| VerifyError::MalformedCrl)?;
    if crl.tbs_cert_list.issuer != ca.tbs_certificate.subject {
        return Err(VerifyError::CrlNotFromIssuer);
    }
    verify_crl_signature(&crl, ca)?;
    let next_update = crl
        .tbs_cert_list
        .next_update
        .ok_or(VerifyError::MalformedCrl)?;
    if now < crl.tbs_cert_list.this_update.to_system_time() || now > next_update.to_system_time() {
        return Err(VerifyError::CrlOutOfDate);
    }
    Ok(crl)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_pki::{TEST_CARD_SERIAL, TestCards, test_not_before, test_now};
    use crate::{CardError, JpkiCard, Pin};

    const CHALLENGE: &[u8] = b"kiban consent challenge 0123456789";
    const PIN: &str = "4321";

    fn cards() -> &'static TestCards {
        crate::test_pki::shared_test_cards()
    }

    /// Reads the certificate and signs `CHALLENGE` with a virtual card, through
    /// the same `JpkiCard` calls the office terminal makes.
    fn sign_with(card: crate::virtual_card::VirtualJpkiCard) -> (Vec<u8>, Vec<u8>) {
        let mut card = JpkiCard::open(card).unwrap();
        let certificate = card.read_auth_certificate().unwrap();
        card.verify_pin(&Pin::new(PIN).unwrap()).unwrap();
        (certificate, card.sign_challenge(CHALLENGE).unwrap())
    }

    fn verify(
        certificate: &[u8],
        revocation: Revocation<'_>,
        signature: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedCardHolder, VerifyError> {
        let trusted = [cards().trusted_ca.certificate_der()];
        verify_challenge_signature(certificate, &trusted, revocation, CHALLENGE, signature, now)
    }

    #[test]
    fn a_bad_signature_is_refused_before_the_crl_is_parsed() {
        let (certificate, mut signature) = sign_with(cards().card(PIN));
        signature[0] ^= 1;
        // A CRL that does not parse: were it parsed first, this would be
        // `MalformedCrl` (issue 16, Low: the signature is checked first).
        assert_eq!(
            verify(
                &certificate,
                Revocation::Crl(b"\x30\x00"),
                &signature,
                test_now()
            ),
            Err(VerifyError::BadChallengeSignature)
        );
    }

    /// Sets (or with `None`, removes) the extension `T` of `tbs`.
    fn set_extension<T: AssociatedOid + Encode>(
        tbs: &mut x509_cert::TbsCertificate,
        value: Option<T>,
        critical: bool,
    ) {
        let extensions = tbs.extensions.get_or_insert_with(Vec::new);
        extensions.retain(|extension| extension.extn_id != T::OID);
        if let Some(value) = value {
            extensions.push(x509_cert::ext::Extension {
                extn_id: T::OID,
                critical,
                extn_value: der::asn1::OctetString::new(value.to_der().unwrap()).unwrap(),
            });
        }
    }

    /// Adds an extension no one knows, critical or not.
    fn add_unknown_extension(tbs: &mut x509_cert::TbsCertificate, critical: bool) {
        tbs.extensions
            .get_or_insert_with(Vec::new)
            .push(x509_cert::ext::Extension {
                extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.16.1"),
                critical,
                extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).unwrap(),
            });
    }

    /// Issue 16, Low: the chain was checked more loosely than RFC 5280 says
    /// (a card certificate without a key usage, a CA certificate as the
    /// card's, unknown critical extensions, and a "CA" without basic
    /// constraints were accepted). Crafted certificates, each re-signed by
    /// the trusted CA's key.
    #[test]
    fn the_chain_is_checked_as_rfc_5280_says() {
        let (_, signature) = sign_with(cards().card(PIN));
        let ca = &cards().trusted_ca;
        let check = |certificate: &[u8], ca: &[u8]| {
            verify_challenge_signature(
                certificate,
                &[ca],
                Revocation::RevokedSerials(&[]),
                CHALLENGE,
                &signature,
                test_now(),
            )
            .map(|_| ())
        };
        let card = |edit: &dyn Fn(&mut x509_cert::TbsCertificate)| {
            ca.reissue(&cards().certificate, |tbs| edit(tbs))
        };
        let trusted = ca.certificate_der();
        assert_eq!(
            check(&card(&|_| {}), trusted),
            Ok(()),
            "re-signed as it was"
        );
        // The card's certificate: a key usage allowing signatures is required.
        let no_key_usage = card(&|tbs| set_extension::<KeyUsage>(tbs, None, true));
        assert_eq!(
            check(&no_key_usage, trusted),
            Err(VerifyError::WrongKeyUsage)
        );
        let encipher_only = card(&|tbs| {
            set_extension(tbs, Some(KeyUsage(KeyUsages::KeyEncipherment.into())), true)
        });
        assert_eq!(
            check(&encipher_only, trusted),
            Err(VerifyError::WrongKeyUsage)
        );
        // It is no CA.
        let a_ca = card(&|tbs| {
            let constraints = BasicConstraints {
                ca: true,
                path_len_constraint: None,
            };
            set_extension(tbs, Some(constraints), true)
        });
        assert_eq!(check(&a_ca, trusted), Err(VerifyError::NotAnEndEntity));
        // Unknown critical extensions refuse it; unknown others do not.
        let critical = card(&|tbs| add_unknown_extension(tbs, true));
        assert_eq!(
            check(&critical, trusted),
            Err(VerifyError::UnknownCriticalExtension)
        );
        let informational = card(&|tbs| add_unknown_extension(tbs, false));
        assert_eq!(check(&informational, trusted), Ok(()));
        // The issuing CA: basic constraints with cA, keyCertSign when a key
        // usage is stated, no unknown critical extension.
        let no_constraints = ca.edited(|tbs| set_extension::<BasicConstraints>(tbs, None, true));
        let not_ca = ca.edited(|tbs| {
            let constraints = BasicConstraints {
                ca: false,
                path_len_constraint: None,
            };
            set_extension(tbs, Some(constraints), true)
        });
        let crl_signer_only =
            ca.edited(|tbs| set_extension(tbs, Some(KeyUsage(KeyUsages::CRLSign.into())), true));
        let unknown = ca.edited(|tbs| add_unknown_extension(tbs, true));
        for refused in [&no_constraints, &not_ca, &crl_signer_only, &unknown] {
            assert_eq!(
                check(&cards().certificate, refused.certificate_der()),
                Err(VerifyError::NotACa)
            );
        }
        // A CRL needs cRLSign from its CA.
        let certificate_signer_only = ca
            .edited(|tbs| set_extension(tbs, Some(KeyUsage(KeyUsages::KeyCertSign.into())), true));
        let crl = certificate_signer_only.issue_crl(
            &[],
            test_not_before(),
            Duration::from_secs(86_400 * 30),
        );
        assert_eq!(
            verify_challenge_signature(
                &cards().certificate,
                &[certificate_signer_only.certificate_der()],
                Revocation::Crl(&crl),
                CHALLENGE,
                &signature,
                test_now(),
            ),
            Err(VerifyError::NotACa)
        );
    }

    #[test]
    fn signature_from_a_trusted_card_verifies() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        assert_eq!(certificate, cards().certificate);
        let holder = verify(
            &certificate,
            Revocation::RevokedSerials(&[]),
            &signature,
            test_now(),
        )
        .unwrap();
        assert_eq!(holder.serial_number(), &TEST_CARD_SERIAL.to_be_bytes()[2..]);
        assert_eq!(holder.serial_number_hex(), "1001");
        assert!(
            holder
                .issuer()
                .contains("CN=kiban test JPKI user authentication CA"),
            "{}",
            holder.issuer()
        );
        assert!(
            holder.subject().contains("kiban test user"),
            "{}",
            holder.subject()
        );
        assert!(holder.not_after() > test_now());
    }

    #[test]
    fn card_reads_its_ca_certificate() {
        let mut card = JpkiCard::open(cards().card(PIN)).unwrap();
        assert_eq!(
            card.read_auth_ca_certificate().unwrap(),
            cards().trusted_ca.certificate_der()
        );
    }

    #[test]
    fn signature_over_another_challenge_is_refused() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        let trusted = [cards().trusted_ca.certificate_der()];
        let result = verify_challenge_signature(
            &certificate,
            &trusted,
            Revocation::RevokedSerials(&[]),
            b"another challenge, same length!!!!",
            &signature,
            test_now(),
        );
        assert_eq!(result, Err(VerifyError::BadChallengeSignature));
        let mut tampered = signature.clone();
        tampered[10] ^= 0x01;
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &tampered,
                test_now()
            ),
            Err(VerifyError::BadChallengeSignature)
        );
    }

    #[test]
    fn certificate_from_an_untrusted_ca_is_refused() {
        let (certificate, signature) = sign_with(cards().untrusted_card(PIN));
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &signature,
                test_now()
            ),
            Err(VerifyError::UntrustedIssuer)
        );
    }

    #[test]
    fn certificate_signed_by_an_impostor_with_the_trusted_name_is_refused() {
        let impostor = crate::test_pki::TestCa::with_key(
            "kiban test JPKI user authentication CA",
            cards().card_key.clone(),
        );
        let certificate = impostor.issue_user_certificate(
            &cards().card_key.to_public_key(),
            TEST_CARD_SERIAL,
            test_not_before(),
        );
        let (_, signature) = sign_with(cards().card(PIN));
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &signature,
                test_now()
            ),
            Err(VerifyError::BadCertificateSignature)
        );
    }

    #[test]
    fn validity_period_is_checked_against_the_given_time() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        let before = test_not_before() - Duration::from_secs(1);
        let after =
            test_not_before() + crate::test_pki::TEST_CERTIFICATE_VALIDITY + Duration::from_secs(1);
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &signature,
                before
            ),
            Err(VerifyError::NotYetValid)
        );
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &signature,
                after
            ),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn revoked_serial_is_refused() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        let revoked = [vec![0x10, 0x01]];
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&revoked),
                &signature,
                test_now()
            ),
            Err(VerifyError::Revoked)
        );
    }

    #[test]
    fn crl_from_the_issuing_ca_is_checked() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        let ca = &cards().trusted_ca;
        let day = Duration::from_secs(24 * 60 * 60);
        let clean = ca.issue_crl(&[0x0999], test_not_before(), 7 * day);
        assert!(
            verify(
                &certificate,
                Revocation::Crl(&clean),
                &signature,
                test_now()
            )
            .is_ok()
        );
        let revoking = ca.issue_crl(&[0x0999, TEST_CARD_SERIAL], test_not_before(), 7 * day);
        assert_eq!(
            verify(
                &certificate,
                Revocation::Crl(&revoking),
                &signature,
                test_now()
            ),
            Err(VerifyError::Revoked)
        );
        let stale = test_not_before() + 8 * day;
        assert_eq!(
            verify(&certificate, Revocation::Crl(&clean), &signature, stale),
            Err(VerifyError::CrlOutOfDate)
        );
        let foreign = cards()
            .untrusted_ca
            .issue_crl(&[], test_not_before(), 7 * day);
        assert_eq!(
            verify(
                &certificate,
                Revocation::Crl(&foreign),
                &signature,
                test_now()
            ),
            Err(VerifyError::CrlNotFromIssuer)
        );
        assert_eq!(
            verify(
                &certificate,
                Revocation::Crl(b"\x30\x00"),
                &signature,
                test_now()
            ),
            Err(VerifyError::MalformedCrl)
        );
    }

    /// A CRL checked once ([`CheckedCrl`], what the server keeps while the
    /// file is unchanged) decides as the CRL itself does.
    #[test]
    fn a_crl_checked_once_decides_as_the_crl() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        let ca = &cards().trusted_ca;
        let trusted = [ca.certificate_der()];
        let day = Duration::from_secs(24 * 60 * 60);
        let checked = |crl: &[u8]| CheckedCrl::parse(crl, &trusted);
        let clean = checked(&ca.issue_crl(&[0x0999], test_not_before(), 7 * day)).unwrap();
        assert_eq!(clean.revoked_count(), 1);
        let with = |crl: &CheckedCrl, now| {
            verify(&certificate, Revocation::Checked(crl), &signature, now).map(|_| ())
        };
        assert_eq!(with(&clean, test_now()), Ok(()));
        let revoking =
            checked(&ca.issue_crl(&[0x0999, TEST_CARD_SERIAL], test_not_before(), 7 * day))
                .unwrap();
        assert_eq!(with(&revoking, test_now()), Err(VerifyError::Revoked));
        let stale = test_not_before() + 8 * day;
        assert_eq!(with(&clean, stale), Err(VerifyError::CrlOutOfDate));
        let foreign = cards()
            .untrusted_ca
            .issue_crl(&[], test_not_before(), 7 * day);
        assert_eq!(checked(&foreign), Err(VerifyError::CrlNotFromIssuer));
        let both = [ca.certificate_der(), cards().untrusted_ca.certificate_der()];
        let other_ca = CheckedCrl::parse(&foreign, &both).unwrap();
        assert_eq!(
            with(&other_ca, test_now()),
            Err(VerifyError::CrlNotFromIssuer),
            "a list of another trusted CA says nothing of this card"
        );
        assert_eq!(checked(b"\x30\x00"), Err(VerifyError::MalformedCrl));
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let (certificate, signature) = sign_with(cards().card(PIN));
        assert_eq!(
            verify(
                &certificate[..100],
                Revocation::RevokedSerials(&[]),
                &signature,
                test_now()
            ),
            Err(VerifyError::MalformedCertificate)
        );
        assert_eq!(
            verify(
                &certificate,
                Revocation::RevokedSerials(&[]),
                &signature[..255],
                test_now()
            ),
            Err(VerifyError::BadChallengeSignature)
        );
        let trusted = [cards().trusted_ca.certificate_der()];
        let short = verify_challenge_signature(
            &certificate,
            &trusted,
            Revocation::RevokedSerials(&[]),
            b"too short",
            &signature,
            test_now(),
        );
        assert_eq!(short, Err(VerifyError::InvalidChallenge));
    }

    #[test]
    fn virtual_card_counts_wrong_pins_and_blocks_on_the_third() {
        let mut card = JpkiCard::open(cards().card(PIN)).unwrap();
        let wrong = Pin::new("0000").unwrap();
        assert_eq!(card.pin_tries_left(), Ok(3));
        assert_eq!(
            card.verify_pin(&wrong),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        assert_eq!(
            card.verify_pin(&wrong),
            Err(CardError::WrongPin { tries_left: 1 })
        );
        assert_eq!(card.verify_pin(&wrong), Err(CardError::PinBlocked));
        assert_eq!(card.pin_tries_left(), Ok(0));
        assert_eq!(
            card.verify_pin(&Pin::new(PIN).unwrap()),
            Err(CardError::PinBlocked)
        );
        assert_eq!(
            card.sign_challenge(CHALLENGE),
            Err(CardError::PinNotVerified)
        );
    }

    #[test]
    fn right_pin_restores_the_tries() {
        let mut card = JpkiCard::open(cards().card(PIN)).unwrap();
        assert_eq!(
            card.verify_pin(&Pin::new("9999").unwrap()),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        assert_eq!(card.verify_pin(&Pin::new(PIN).unwrap()), Ok(()));
        assert_eq!(card.pin_tries_left(), Ok(3));
    }

    #[test]
    fn card_without_jpki_is_not_jpki() {
        assert_eq!(
            JpkiCard::open(cards().card(PIN).without_jpki()).err(),
            Some(CardError::NotJpki)
        );
    }
}
