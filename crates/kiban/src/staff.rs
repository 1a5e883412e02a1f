//! `kiban admin staff add`: staff accounts of the office web screen
//! (職員アカウント), kept beside the event chain in the store's database
//! (see docs/ui.md). The password is read from `KIBAN_STAFF_PASSWORD` or
//! one line of standard input, never from the command line (which other
//! users of the machine can see).

use std::process::ExitCode;

use clap::Subcommand;

use kiban_events::ids::OfficeNumber;

use crate::args::StoreArgs;

/// `kiban admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Staff accounts of the office web screen (職員アカウント).
    Staff {
        #[command(subcommand)]
        staff: StaffCommand,
    },
    /// Forget a person (本人情報の消去): destroy their data key so every
    /// personal field of theirs is unreadable, and record
    /// `insured.person_forgotten`. The chain still verifies. Irreversible.
    Forget(crate::forget::ForgetArgs),
    /// Remove now the uploads no recorded event names, a week after their
    /// last upload (what the serving process does every hour).
    SweepBlobs(StoreArgs),
    /// Rebuild every read model from the whole log (読み取りモデルの再構築),
    /// beside a running kiban or not; the old ones serve until the swap.
    RebuildReadModels(StoreArgs),
}

/// `kiban admin staff …`
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Add a staff account to an office, or set a new password (and lift a
    /// lockout) for an existing one. The password (12 characters or more)
    /// comes from KIBAN_STAFF_PASSWORD or one line of standard input.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The office (事業所番号, 10 digits).
        #[arg(long)]
        office: String,
        /// The user ID (letters, digits, '.', '_', '-'; up to 32).
        #[arg(long)]
        user: String,
    },
}

/// Runs an admin command.
pub async fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    use kiban_system::admin;
    let line = match command {
        AdminCommand::Staff {
            staff:
                StaffCommand::Add {
                    store,
                    office,
                    user,
                },
        } => {
            let office = OfficeNumber::parse(&office)
                .map_err(|_| anyhow::anyhow!("the office number must be 10 digits"))?;
            let password = admin::staff_password(&user)?;
            admin::add_staff(&store.database_url, &office, &user, &password).await?;
            format!("staff account {user} of office {office} is ready")
        }
        AdminCommand::Forget(args) => return crate::forget::run(args).await,
        AdminCommand::SweepBlobs(store) => admin::sweep_blobs(&store.database_url).await?,
        AdminCommand::RebuildReadModels(store) => {
            admin::rebuild_read_models(&store.database_url).await?
        }
    };
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
