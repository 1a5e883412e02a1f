//! `kiban card status`, `kiban card consent` and `kiban card sign-in`
//! (feature `pcsc`): the office terminal's side of the My Number card
//! consent, and the person's sign-in to their own view (docs/card.md).
//!
//! `consent` asks the server for a challenge over mTLS (the terminal's
//! client certificate), reads the PIN without echo (or one line from stdin
//! with `--pin-stdin`, for tests), has the card sign the challenge, and
//! posts the certificate and signature. The PIN never leaves this process;
//! the Individual Number is never read.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use kiban_api::SignedChallenge;
use kiban_api::client::{CardPurpose, Client, ClientError, parse_care_plan_office_kind};
use kiban_api::me::sign_in_challenge_text;
use kiban_card::{Pin, sign_challenge_with_card};
use kiban_events::ids::{InsuredNumber, InsurerNumber};

/// How long to wait for a card on the reader.
pub const CARD_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// Readers, card present, JPKI application, PIN tries left
    /// (カードリーダーとカードの状態). Never verifies a PIN.
    Status,
    /// Record the person's consent for this office with the card
    /// (マイナンバーカードによる同意).
    Consent {
        /// The API, e.g. `https://127.0.0.1:8443`.
        #[arg(long, env = "KIBAN_SERVER")]
        server: String,
        /// The office number (事業所番号) of this terminal's certificate.
        #[arg(long)]
        office: String,
        /// 保険者番号 (6 digits).
        #[arg(long, value_parser = InsurerNumber::parse)]
        insurer: InsurerNumber,
        /// 被保険者番号 (10 digits).
        #[arg(long, value_parser = InsuredNumber::parse)]
        insured: InsuredNumber,
        /// Days the consent lasts (at most what the server allows).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Instead of a consent to read: file this office as the person's
        /// care-plan office (居宅サービス計画作成依頼届出) on this date
        /// (YYYY-MM-DD), with the card signing a challenge naming that
        /// notification.
        #[arg(long, value_name = "DATE")]
        care_plan_filed_on: Option<chrono::NaiveDate>,
        /// With `--care-plan-filed-on`: `home_care_support_office` or
        /// `community_general_support_center` (default: as the office is
        /// registered).
        #[arg(long, requires = "care_plan_filed_on", value_parser = parse_care_plan_office_kind)]
        office_kind: Option<kiban_events::domain::insured::CarePlanOfficeKind>,
        /// The terminal's client certificate and key (PEM, one file or two).
        #[arg(long)]
        cert: PathBuf,
        /// The key, when not in the `--cert` file.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        card: CardSide,
    },
    /// Sign in to your own view (ご本人の情報) with your card: with
    /// `--code`, the sign-in the web page `/me/login` shows; without it, a
    /// session for the API (prints its bearer token).
    SignIn {
        /// The server, e.g. `https://127.0.0.1:8443`.
        #[arg(long, env = "KIBAN_SERVER")]
        server: String,
        /// The code the sign-in page shows (確認コード).
        #[arg(long)]
        code: Option<String>,
        #[command(flatten)]
        card: CardSide,
    },
}

/// What both card commands take: the server's CA, the reader, the PIN.
#[derive(Debug, clap::Args)]
pub struct CardSide {
    /// The platform CA certificate (PEM) the server's certificate chains to.
    #[arg(long)]
    cacert: PathBuf,
    /// A reader name (default: the first with a card).
    #[arg(long)]
    reader: Option<String>,
    /// Read the PIN from one line of standard input (for tests and scripts).
    #[arg(long)]
    pin_stdin: bool,
}

/// Runs a card command.
pub async fn run(command: CardCommand) -> anyhow::Result<ExitCode> {
    match command {
        CardCommand::SignIn { server, code, card } => sign_in(&server, code, card).await,
        CardCommand::Status => {
            let report = tokio::task::spawn_blocking(kiban_card::status_report).await?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Consent {
            server,
            office,
            insurer,
            insured,
            days,
            care_plan_filed_on,
            office_kind,
            cert,
            key,
            card,
        } => {
            let client = client(&server, &cert, key.as_deref(), &card.cacert)?;
            let purpose = CardPurpose::new(care_plan_filed_on, office_kind, days);
            let request = purpose.challenge(insurer.as_str(), insured.as_str());
            let issued = client.consent_challenge(&request).await.map_err(refused)?;
            if !issued.challenge.contains(&format!("\noffice {office}\n")) {
                bail!(
                    "the terminal certificate is not for office {office} / 端末の証明書が事業所 {office} のものではありません"
                );
            }
            let Some(signed) = card_signs(card, issued.nonce, issued.challenge).await? else {
                return Ok(ExitCode::FAILURE);
            };
            let recorded = client.submit_signed(&insurer, &insured, &purpose, signed);
            let recorded = recorded.await.map_err(refused)?;
            println!("{}: {}", purpose.done(), serde_json::to_string(&recorded)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The typed API client of `server`, presenting the terminal's
/// certificate (and its key, when in a file of its own).
fn client(
    server: &str,
    cert: &std::path::Path,
    key: Option<&std::path::Path>,
    cacert: &std::path::Path,
) -> anyhow::Result<Client> {
    let mut pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    if let Some(key) = key {
        pem.extend(std::fs::read(key).with_context(|| format!("reading {}", key.display()))?);
    }
    let ca = std::fs::read(cacert).with_context(|| format!("reading {}", cacert.display()))?;
    Ok(Client::new(server, &ca, Some(&pem))?)
}

/// A refusal as the error shown: the problem's detail and its code.
fn refused(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Problem(problem) => anyhow::anyhow!(
            "the server refused ({}): {} {}",
            problem.status,
            problem.detail,
            problem.code.map(|c| format!("[{c}]")).unwrap_or_default()
        ),
        other => other.into(),
    }
}

fn read_pin(from_stdin: bool) -> anyhow::Result<Pin> {
    let text = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        rpassword::prompt_password("暗証番号（4桁）/ PIN (4 digits): ")?
    };
    Pin::new(&text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `kiban card sign-in`: signs the page's code (or a new API challenge)
/// with the card and opens the person's session.
async fn sign_in(server: &str, code: Option<String>, card: CardSide) -> anyhow::Result<ExitCode> {
    let cacert = &card.cacert;
    let ca = std::fs::read(cacert).with_context(|| format!("reading {}", cacert.display()))?;
    let client = Client::new(server, &ca, None)?;
    let nonce = match code {
        Some(code) => code.trim().to_owned(),
        None => client.sign_in_challenge().await.map_err(refused)?.nonce,
    };
    let text = sign_in_challenge_text(&nonce);
    println!("signing in to / サインイン先: {server} (code / 確認コード {nonce})");
    let Some(signed) = card_signs(card, nonce, text).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let session = client.sign_in(&signed).await.map_err(refused)?;
    match session.token {
        None => println!(
            "signed in: press \"Complete sign-in\" on the page / サインインしました。画面の「サインインを完了」を押してください（{} まで有効）",
            session.expires_at
        ),
        Some(token) => println!(
            "signed in until {} / サインインしました\nAuthorization: Bearer {token}",
            session.expires_at
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the PIN, has the card on the reader sign `text`, and answers the
/// signed challenge `nonce` to post; `None` after printing a card error
/// (wrong PIN, no card, …) in English and Japanese.
async fn card_signs(
    card: CardSide,
    nonce: String,
    text: String,
) -> anyhow::Result<Option<SignedChallenge>> {
    let pin = read_pin(card.pin_stdin)?;
    let reader = card.reader;
    let signed = tokio::task::spawn_blocking(move || {
        sign_challenge_with_card(reader.as_deref(), CARD_WAIT, &pin, text.as_bytes())
    })
    .await?;
    match signed {
        Ok((certificate, signature)) => Ok(Some(SignedChallenge {
            nonce,
            certificate_hex: hex::encode(certificate),
            signature_hex: hex::encode(signature),
        })),
        Err(error) => {
            eprintln!("kiban card: {error}\n{}", error.message_ja());
            Ok(None)
        }
    }
}
