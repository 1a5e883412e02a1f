//! The API of a security test whose principals the test chooses: the
//! scripted history plus what the test sets up with the engine, served on
//! a loopback port over real HTTPS with a development PKI issuing a
//! certificate to each principal (the shared harness's principals are
//! fixed). Built from the harness's own parts (`Served`, the script).

use std::sync::Arc;

use kiban_api::pki::{Issuer, KeyPair};
use kiban_api::{AppState, DevPki, Principal};
use kiban_card::virtual_card::VirtualJpkiCard;
use kiban_engine::Engine;
use kiban_store::Store;
use kiban_tests::TestDb;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::api::{Served, ServedApi, call_with, card_trust, client_trusting};

/// The engine and PKI before serving: the test records its setup first.
pub(crate) struct Prepared {
    pub(crate) engine: Arc<Engine<Store>>,
    store: Store,
    pki: DevPki,
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// The served API and a certificate for each principal.
pub(crate) struct OwnApi {
    pub(crate) served: Served,
    pki: DevPki,
    issuer: Issuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

/// Who a request is sent as: a principal's certificate of the PKI, another
/// certificate (PEM: certificate and key), or none.
pub(crate) enum As<'a> {
    Nobody,
    Principal(&'a Principal),
    Certificate(&'a str),
}

impl Prepared {
    /// A development PKI for `principals` and an engine on `db`'s store.
    pub(crate) async fn new(db: &TestDb, principals: &[Principal]) -> Prepared {
        let dir = tempfile::tempdir().unwrap();
        let (pki, issuer) =
            kiban_api::pki::dev_pki_with_issuer(dir.path(), principals).expect("dev pki");
        let store = db.open().await;
        let engine = Arc::new(
            Engine::new(store.clone())
                .with_person_keys(kiban_store::PersonKeys::new(store.clone())),
        );
        Prepared {
            engine,
            store,
            pki,
            issuer,
            dir,
        }
    }

    /// The fingerprint of `principal`'s certificate (a terminal's credential).
    pub(crate) fn fingerprint(&self, principal: &Principal) -> String {
        self.pki.client(principal).unwrap().fingerprint.clone()
    }

    /// Serves once the read models have applied position `last`, trusting
    /// the test JPKI CA for card signatures.
    pub(crate) async fn serve(self, db: &TestDb, last: u64) -> OwnApi {
        self.serve_configured(db, last, |state| state).await
    }

    /// [`Prepared::serve`] with `configure` applied to the state as well.
    pub(crate) async fn serve_configured(
        self,
        db: &TestDb,
        last: u64,
        configure: impl FnOnce(AppState) -> AppState + Send + 'static,
    ) -> OwnApi {
        let trust = card_trust(self.dir.path());
        let served = Served::start(db, self.store, self.engine, &self.pki.tls, last, |state| {
            configure(state.with_card_trust(trust))
        })
        .await;
        OwnApi {
            served,
            pki: self.pki,
            issuer: self.issuer,
            _dir: self.dir,
        }
    }
}

impl ServedApi for OwnApi {
    fn client_for(&self, principal: Option<&Principal>) -> Client {
        self.client(principal)
    }

    fn served(&self) -> &Served {
        &self.served
    }
}

impl OwnApi {
    /// A client with `principal`'s certificate, or none.
    pub(crate) fn client(&self, principal: Option<&Principal>) -> Client {
        match principal {
            Some(principal) => self.client_as(As::Principal(principal)),
            None => self.client_as(As::Nobody),
        }
    }

    /// A client presenting `who`'s certificate.
    pub(crate) fn client_as(&self, who: As<'_>) -> Client {
        let pem = match who {
            As::Nobody => None,
            As::Principal(principal) => {
                Some(std::fs::read(&self.pki.client(principal).expect("issued").pem).unwrap())
            }
            As::Certificate(pem) => Some(pem.as_bytes().to_vec()),
        };
        client_trusting(&self.pki.tls.client_ca, pem.as_deref())
    }

    /// A new certificate for `principal` from the same CA: (PEM, fingerprint).
    pub(crate) fn issue_another(&self, principal: &Principal) -> (String, String) {
        kiban_api::pki::client_certificate(principal, &self.issuer).unwrap()
    }

    /// A request as `who` (a fresh Idempotency-Key on everything but GET):
    /// the status and the answer as JSON (a string when it is not JSON).
    pub(crate) async fn call_as(
        &self,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_with(self.client_as(who), &self.served.base, method, path, body).await
    }

    /// [`OwnApi::call_as`] with a principal's certificate, or none.
    pub(crate) async fn call(
        &self,
        who: Option<&Principal>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let who = match who {
            Some(principal) => As::Principal(principal),
            None => As::Nobody,
        };
        self.call_as(who, method, path, body).await
    }

    /// Where the JPKI CRL the server checks card signatures with lives.
    pub(crate) fn card_crl_path(&self) -> std::path::PathBuf {
        self._dir.path().join("jpki.crl")
    }

    /// The person's insurer links `card` to `insured` (as at its counter),
    /// and the link reaches the read model sign-ins look it up in.
    pub(crate) async fn link_card(&self, insured: &str, card: VirtualJpkiCard) {
        crate::person_view::link(self, insured, card).await;
    }

    /// Signs in with `card` through `/v1/me`: the status and the answer.
    pub(crate) async fn try_sign_in(&self, card: VirtualJpkiCard) -> (StatusCode, Value) {
        crate::person_view::sign_in(self, card).await
    }

    /// Signs in with `card`: the person's bearer token.
    pub(crate) async fn sign_in(&self, card: VirtualJpkiCard) -> String {
        let (status, session) = self.try_sign_in(card).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        session["token"].as_str().unwrap().to_owned()
    }
}
