//! What `kiban card status` shows: the readers, whether each holds a card, whether
//! that card has the JPKI application, and how many PIN tries are left.
//!
//! Probing never verifies a PIN, so it never costs a try.

use std::fmt;

use crate::{CardError, JpkiCard, Transport};

/// What a card in a reader turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardProbe {
    /// The card answered but has no JPKI application.
    NotJpki,
    /// The JPKI application is there; the PIN tries left, or why asking failed.
    Jpki {
        /// Tries left before the user-authentication PIN blocks (0: blocked).
        pin_tries_left: Result<u8, CardError>,
    },
    /// Talking to the card failed.
    Failed(CardError),
}

/// Probes the card behind `transport`: selects JPKI and asks for the PIN tries left.
pub fn probe_card<T: Transport>(transport: T) -> CardProbe {
    match JpkiCard::open(transport) {
        Ok(mut card) => CardProbe::Jpki {
            pin_tries_left: card.pin_tries_left(),
        },
        Err(CardError::NotJpki) => CardProbe::NotJpki,
        Err(error) => CardProbe::Failed(error),
    }
}

/// One reader and its card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderReport {
    /// The reader's name as PC/SC reports it.
    pub name: String,
    /// `None` when the reader is empty.
    pub card: Option<CardProbe>,
}

/// The state of the card readers, for `kiban card status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// `Err` when the PC/SC service could not be reached; `readers` is then empty.
    pub service: Result<(), CardError>,
    /// The readers found.
    pub readers: Vec<ReaderReport>,
}

impl StatusReport {
    /// Whether some reader holds a JPKI card whose PIN is not blocked: ready for a
    /// consent check.
    pub fn ready(&self) -> bool {
        self.readers.iter().any(|reader| {
            matches!(&reader.card, Some(CardProbe::Jpki { pin_tries_left: Ok(tries) }) if *tries > 0)
        })
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(error) = &self.service {
            return writeln!(f, "{} / {}", error.message_ja(), error);
        }
        let count = self.readers.len();
        writeln!(f, "カードリーダー: {count} 台 / card readers: {count}")?;
        if self.readers.is_empty() {
            let error = CardError::NoReader;
            writeln!(f, "{} / {}", error.message_ja(), error)?;
        }
        for reader in &self.readers {
            writeln!(f, "- {}", reader.name)?;
            write_card(f, reader.card.as_ref())?;
        }
        Ok(())
    }
}

fn write_card(f: &mut fmt::Formatter<'_>, card: Option<&CardProbe>) -> fmt::Result {
    let Some(card) = card else {
        return writeln!(f, "  カード: なし / card: none");
    };
    writeln!(f, "  カード: あり / card: present")?;
    match card {
        CardProbe::NotJpki => {
            writeln!(f, "  公的個人認証 AP: なし / JPKI application: not found")
        }
        CardProbe::Failed(error) => writeln!(f, "  {} / {}", error.message_ja(), error),
        CardProbe::Jpki { pin_tries_left } => {
            writeln!(f, "  公的個人認証 AP: あり / JPKI application: found")?;
            match pin_tries_left {
                Ok(0) => {
                    let error = CardError::PinBlocked;
                    writeln!(f, "  {} / {}", error.message_ja(), error)
                }
                Ok(tries) => writeln!(f, "  暗証番号の残り回数: {tries} / PIN tries left: {tries}"),
                Err(error) => writeln!(f, "  {} / {}", error.message_ja(), error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpki::tests::ScriptedTransport;

    const SELECT_AP: [u8; 15] = [
        0x00, 0xA4, 0x04, 0x0C, 0x0A, 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn probe_reports_tries_left_without_verifying() {
        let mut transport = ScriptedTransport::new(vec![
            (SELECT_AP.to_vec(), vec![0x90, 0x00]),
            (
                vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x18],
                vec![0x90, 0x00],
            ),
            (vec![0x00, 0x20, 0x00, 0x80], vec![0x63, 0xC3]),
        ]);
        assert_eq!(
            probe_card(&mut transport),
            CardProbe::Jpki {
                pin_tries_left: Ok(3)
            }
        );
        transport.assert_done();
        let mut transport = ScriptedTransport::new(vec![(SELECT_AP.to_vec(), vec![0x6A, 0x82])]);
        assert_eq!(probe_card(&mut transport), CardProbe::NotJpki);
    }

    #[test]
    fn report_shows_each_reader_in_both_languages() {
        let report = StatusReport {
            service: Ok(()),
            readers: vec![
                ReaderReport {
                    name: "Reader A".to_owned(),
                    card: Some(CardProbe::Jpki {
                        pin_tries_left: Ok(2),
                    }),
                },
                ReaderReport {
                    name: "Reader B".to_owned(),
                    card: None,
                },
                ReaderReport {
                    name: "Reader C".to_owned(),
                    card: Some(CardProbe::NotJpki),
                },
            ],
        };
        let text = report.to_string();
        assert!(text.contains("card readers: 3"), "{text}");
        assert!(
            text.contains("暗証番号の残り回数: 2 / PIN tries left: 2"),
            "{text}"
        );
        assert!(text.contains("カード: なし / card: none"), "{text}");
        assert!(text.contains("JPKI application: not found"), "{text}");
        assert!(report.ready());
    }

    #[test]
    fn report_without_service_or_readers_says_so() {
        let report = StatusReport {
            service: Err(CardError::ServiceUnavailable {
                detail: "no pcscd".to_owned(),
            }),
            readers: vec![],
        };
        assert!(report.to_string().contains("PC/SC"));
        assert!(!report.ready());
        let report = StatusReport {
            service: Ok(()),
            readers: vec![],
        };
        assert!(report.to_string().contains("no card reader is connected"));
    }
}
