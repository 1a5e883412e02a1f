//! A throw-away PKI for tests and demos: a CA that issues JPKI-like user-authentication
//! certificates and CRLs, all RSA-2048 with SHA-256.
//!
//! Keys are generated in memory with the operating system's random generator and
//! never written anywhere. Nothing here is used by the server.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::Encode;
use der::asn1::BitString;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};

/// Modulus size of every generated key, as on the card.
pub const RSA_KEY_BITS: usize = 2048;

/// 2026-01-01T00:00:00Z: the start of every test certificate's validity.
pub const TEST_NOT_BEFORE_UNIX_SECONDS: u64 = 1_767_225_600;
/// Validity of a test user-authentication certificate: five years, as for JPKI.
pub const TEST_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 60 * 60);
/// Validity of a test CA certificate: ten years.
pub const TEST_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The start of every test certificate's validity as a time value.
pub fn test_not_before() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(TEST_NOT_BEFORE_UNIX_SECONDS)
}

/// A time at which test certificates are valid (one day after they start).
pub fn test_now() -> SystemTime {
    test_not_before() + Duration::from_secs(24 * 60 * 60)
}

/// Generates an RSA-2048 key. Slow in unoptimised builds; share keys between tests.
pub fn generate_rsa_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_KEY_BITS).expect("RSA key generation")
}

/// A self-signed test certificate authority.
pub struct TestCa {
    signing_key: SigningKey<Sha256>,
    name: Name,
    certificate_der: Vec<u8>,
}

impl TestCa {
    /// A CA named `CN=<common_name>, O=kiban test, C=JP` with a fresh key.
    pub fn generate(common_name: &str) -> TestCa {
        TestCa::with_key(common_name, generate_rsa_key())
    }

    /// A CA named `CN=<common_name>, O=kiban test, C=JP` with the given key.
    pub fn with_key(common_name: &str, key: RsaPrivateKey) -> TestCa {
        let name =
            Name::from_str(&format!("CN={common_name},O=kiban test,C=JP")).expect("test CA name");
        let signing_key = SigningKey::<Sha256>::new(key);
        let public_key_info = public_key_info(&signing_key.as_ref().to_public_key());
        let certificate_der = sign_certificate(
            CertificateBuilder::new(
                Profile::Root,
                SerialNumber::from(1u32),
                validity(test_not_before(), TEST_CA_VALIDITY),
                name.clone(),
                public_key_info,
                &signing_key,
            )
            .expect("test CA certificate"),
        );
        TestCa {
            signing_key,
            name,
            certificate_der,
        }
    }

    /// The CA's certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Issues a user-authentication certificate (DER) for `subject_key`, valid for
    /// [`TEST_CERTIFICATE_VALIDITY`] from `not_before`. Like a real JPKI
    /// user-authentication certificate, the subject carries no name or address.
    pub fn issue_user_certificate(
        &self,
        subject_key: &RsaPublicKey,
        serial: u32,
        not_before: SystemTime,
    ) -> Vec<u8> {
        let subject = Name::from_str(&format!("CN=kiban test user {serial},O=kiban test,C=JP"))
            .expect("test subject name");
        let profile = Profile::Leaf {
            issuer: self.name.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        sign_certificate(
            CertificateBuilder::new(
                profile,
                SerialNumber::from(serial),
                validity(not_before, TEST_CERTIFICATE_VALIDITY),
                subject,
                public_key_info(subject_key),
                &self.signing_key,
            )
            .expect("test user certificate"),
        )
    }

    /// `certificate_der` (one this CA issued, or its own) with its
    /// to-be-signed part changed by `edit` and signed again by this CA: the
    /// crafted certificates of the RFC 5280 checks (a missing key usage, an
    /// unknown critical extension, a CA without basic constraints).
    pub fn reissue(
        &self,
        certificate_der: &[u8],
        edit: impl FnOnce(&mut TbsCertificate),
    ) -> Vec<u8> {
        use der::Decode;
        let mut certificate = Certificate::from_der(certificate_der).expect("a test certificate");
        edit(&mut certificate.tbs_certificate);
        let signature: Signature = self
            .signing_key
            .sign(&certificate.tbs_certificate.to_der().expect("TBS"));
        certificate.signature =
            BitString::from_bytes(&signature.to_bytes()).expect("signature bits");
        certificate.to_der().expect("certificate encoding")
    }

    /// The same CA (key and name) whose own certificate `edit` changed,
    /// signed again: a CA certificate without basic constraints, say.
    pub fn edited(&self, edit: impl FnOnce(&mut TbsCertificate)) -> TestCa {
        TestCa {
            signing_key: self.signing_key.clone(),
            name: self.name.clone(),
            certificate_der: self.reissue(&self.certificate_der, edit),
        }
    }

    /// Issues a CRL (DER) valid from `this_update` for `validity`, listing `revoked`
    /// serial numbers.
    pub fn issue_crl(
        &self,
        revoked: &[u32],
        this_update: SystemTime,
        validity: Duration,
    ) -> Vec<u8> {
        let revoked_certificates: Vec<RevokedCert> = revoked
            .iter()
            .map(|&serial| RevokedCert {
                serial_number: SerialNumber::from(serial),
                revocation_date: time(this_update),
                crl_entry_extensions: None,
            })
            .collect();
        let tbs_cert_list = TbsCertList {
            version: x509_cert::Version::V2,
            signature: self
                .signing_key
                .signature_algorithm_identifier()
                .expect("algorithm"),
            issuer: self.name.clone(),
            this_update: time(this_update),
            next_update: Some(time(this_update + validity)),
            revoked_certificates: (!revoked_certificates.is_empty())
                .then_some(revoked_certificates),
            crl_extensions: None,
        };
        let signature: Signature = self.signing_key.sign(&tbs_cert_list.to_der().expect("CRL"));
        CertificateList {
            signature_algorithm: tbs_cert_list.signature.clone(),
            tbs_cert_list,
            signature: BitString::from_bytes(&signature.to_bytes()).expect("signature bits"),
        }
        .to_der()
        .expect("CRL encoding")
    }
}

fn sign_certificate(builder: CertificateBuilder<'_, SigningKey<Sha256>>) -> Vec<u8> {
    builder
        .build::<Signature>()
        .expect("signing a test certificate")
        .to_der()
        .expect("encoding a test certificate")
}

fn public_key_info(key: &RsaPublicKey) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_key(key.clone()).expect("RSA public key info")
}

fn time(at: SystemTime) -> Time {
    Time::try_from(at).expect("time within X.509 range")
}

fn validity(not_before: SystemTime, length: Duration) -> Validity {
    Validity {
        not_before: time(not_before),
        not_after: time(not_before + length),
    }
}

/// Serial number of the test card's certificate from the trusted CA.
pub const TEST_CARD_SERIAL: u32 = 0x1001;
/// Serial number of the test card's certificate from the untrusted CA.
pub const UNTRUSTED_CARD_SERIAL: u32 = 0x2001;

/// Everything a card test needs: a trusted CA, an untrusted one, and one card key
/// certified by each. Generating it costs three RSA-2048 keys; build it once per
/// test binary.
pub struct TestCards {
    /// The CA the verifier trusts.
    pub trusted_ca: TestCa,
    /// A CA the verifier does not trust, with a look-alike name.
    pub untrusted_ca: TestCa,
    /// The card's user-authentication key.
    pub card_key: RsaPrivateKey,
    /// The card key's certificate from the trusted CA (serial [`TEST_CARD_SERIAL`]).
    pub certificate: Vec<u8>,
    /// The card key's certificate from the untrusted CA (serial
    /// [`UNTRUSTED_CARD_SERIAL`]).
    pub untrusted_certificate: Vec<u8>,
}

impl TestCards {
    /// Generates the CAs, the card key and its certificates.
    pub fn generate() -> TestCards {
        let trusted_ca = TestCa::generate("kiban test JPKI user authentication CA");
        let untrusted_ca = TestCa::generate("kiban untrusted CA");
        let card_key = generate_rsa_key();
        let certificate = trusted_ca.issue_user_certificate(
            &card_key.to_public_key(),
            TEST_CARD_SERIAL,
            test_not_before(),
        );
        let untrusted_certificate = untrusted_ca.issue_user_certificate(
            &card_key.to_public_key(),
            UNTRUSTED_CARD_SERIAL,
            test_not_before(),
        );
        TestCards {
            trusted_ca,
            untrusted_ca,
            card_key,
            certificate,
            untrusted_certificate,
        }
    }

    /// A virtual card with the trusted certificate and `pin`.
    pub fn card(&self, pin: &str) -> crate::virtual_card::VirtualJpkiCard {
        crate::virtual_card::VirtualJpkiCard::new(
            self.card_key.clone(),
            self.certificate.clone(),
            self.trusted_ca.certificate_der().to_vec(),
            pin,
        )
    }

    /// A virtual card whose certificate comes from the untrusted CA.
    pub fn untrusted_card(&self, pin: &str) -> crate::virtual_card::VirtualJpkiCard {
        crate::virtual_card::VirtualJpkiCard::new(
            self.card_key.clone(),
            self.untrusted_certificate.clone(),
            self.untrusted_ca.certificate_der().to_vec(),
            pin,
        )
    }
}

/// One [`TestCards`] per unit-test binary: key generation is the slow part.
#[cfg(test)]
pub(crate) fn shared_test_cards() -> &'static TestCards {
    static CARDS: std::sync::OnceLock<TestCards> = std::sync::OnceLock::new();
    CARDS.get_or_init(TestCards::generate)
}
