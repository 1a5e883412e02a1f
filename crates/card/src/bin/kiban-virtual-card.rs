//! `kiban-virtual-card`: puts a virtual My Number card into pcscd's vpcd reader, for
//! demos and manual tests of `kiban card status` and the consent flow.
//!
//! ```text
//! kiban-virtual-card --port <vpcd port> [--pin <4 digits>] [--untrusted] [--out <dir>]
//! ```
//!
//! It generates a throw-away test CA and card key, writes the CA certificate
//! (`trusted-ca.der`) and the card's certificate (`card-certificate.der`) to `--out`
//! when given, connects to vpcd and serves the card. Commands on standard input:
//! `remove` (take the card out and exit), `remove-during-signature` (vanish at the
//! next signature), `tries` (print the PIN tries left). End of input or a signal also
//! removes the card, since the connection closes with the process.
//!
//! Exit codes: 0 the card was removed normally, 1 an error, 2 wrong arguments.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use kiban_card::test_pki::TestCards;
use kiban_card::virtual_card::VpcdConnection;

/// The PIN when `--pin` is not given.
const DEFAULT_PIN: &str = "1234";

struct Arguments {
    port: u16,
    pin: String,
    untrusted: bool,
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let arguments = match parse_arguments(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(message) => {
            eprintln!("kiban-virtual-card: {message}");
            eprintln!(
                "usage: kiban-virtual-card --port <vpcd port> [--pin <4 digits>] [--untrusted] [--out <dir>]"
            );
            return ExitCode::from(2);
        }
    };
    match try_main(arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kiban-virtual-card: {message}");
            ExitCode::from(1)
        }
    }
}

fn try_main(arguments: Arguments) -> Result<(), String> {
    eprintln!("generating the test CA and card keys (RSA-2048) ...");
    let cards = TestCards::generate();
    if let Some(out) = &arguments.out {
        std::fs::create_dir_all(out).map_err(|error| format!("{}: {error}", out.display()))?;
        for (name, der) in [
            ("trusted-ca.der", cards.trusted_ca.certificate_der()),
            (
                "card-certificate.der",
                card_certificate(&cards, arguments.untrusted),
            ),
        ] {
            let path = out.join(name);
            std::fs::write(&path, der).map_err(|error| format!("{}: {error}", path.display()))?;
        }
    }
    let card = if arguments.untrusted {
        cards.untrusted_card(&arguments.pin)
    } else {
        cards.card(&arguments.pin)
    };
    let inserted = VpcdConnection::insert(card, arguments.port)
        .map_err(|error| format!("cannot connect to vpcd on port {}: {error}", arguments.port))?;
    eprintln!(
        "card inserted into the vpcd reader on port {}; commands: remove, remove-during-signature, tries",
        arguments.port
    );
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| format!("standard input: {error}"))?;
        match line.trim() {
            "remove" => break,
            "remove-during-signature" => inserted.remove_during_next_signature(),
            "tries" => println!("{}", inserted.pin_tries_left()),
            "" => {}
            other => eprintln!("unknown command: {other}"),
        }
    }
    inserted
        .remove()
        .map_err(|error| format!("removing the card: {error}"))?;
    eprintln!("card removed");
    Ok(())
}

fn card_certificate(cards: &TestCards, untrusted: bool) -> &[u8] {
    if untrusted {
        &cards.untrusted_certificate
    } else {
        &cards.certificate
    }
}

fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let mut port = None;
    let mut pin = DEFAULT_PIN.to_owned();
    let mut untrusted = false;
    let mut out = None;
    while let Some(argument) = arguments.next() {
        let mut value = || arguments.next().ok_or(format!("{argument} needs a value"));
        match argument.as_str() {
            "--port" => {
                port = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--port must be a port number")?,
                );
            }
            "--pin" => {
                pin = value()?;
                kiban_card::Pin::new(&pin).map_err(|error| error.to_string())?;
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--untrusted" => untrusted = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    Ok(Arguments {
        port,
        pin,
        untrusted,
        out,
    })
}
