//! Scratch databases: a fresh, empty database for one benchmark run or one
//! test, removed afterwards. The one place that creates and drops whole
//! databases (benchmarks in `kiban-lab`, the suites' `TestDb` in
//! `kiban-tests`).

use sqlx::{Connection, Executor};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Where scratch databases are made.
#[derive(Debug, Clone)]
pub enum ScratchBackend {
    /// A PostgreSQL server, as the URL of a database on it from which a
    /// scratch database `<prefix>_<random>` may be created (and dropped).
    Postgres { server_url: String },
    /// A directory in which a fresh SQLite file is named (and deleted).
    Sqlite { directory: std::path::PathBuf },
}

/// One scratch database. [`Scratch::remove`] drops it; nothing removes it
/// implicitly (a leftover scratch database is harmless and sometimes what a
/// failed run's investigator wants).
#[derive(Debug)]
pub struct Scratch {
    url: String,
    kind: ScratchKind,
}

#[derive(Debug)]
enum ScratchKind {
    Postgres { server_url: String, name: String },
    Sqlite { path: std::path::PathBuf },
}

impl Scratch {
    /// Creates the database `<prefix>_<random>` on the server, or names a
    /// fresh file `<prefix>_<random>.db` in the directory (created by the
    /// first [`crate::Store::open`]). `prefix` is an SQL identifier.
    pub async fn create(backend: &ScratchBackend, prefix: &str) -> Result<Scratch> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::Invalid(format!(
                "a scratch database prefix is lower-case letters, digits and _ (got {prefix:?})"
            )));
        }
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        match backend {
            ScratchBackend::Postgres { server_url } => {
                let (base, _) = server_url.rsplit_once('/').ok_or_else(|| {
                    Error::Invalid("the PostgreSQL URL must end with /database".to_owned())
                })?;
                let url = format!("{base}/{name}");
                let mut admin = sqlx::PgConnection::connect(server_url).await?;
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await?;
                let _ = admin.close().await;
                Ok(Scratch {
                    url,
                    kind: ScratchKind::Postgres {
                        server_url: server_url.clone(),
                        name,
                    },
                })
            }
            ScratchBackend::Sqlite { directory } => {
                let path = directory.join(format!("{name}.db"));
                Ok(Scratch {
                    url: format!("sqlite://{}", path.display()),
                    kind: ScratchKind::Sqlite { path },
                })
            }
        }
    }

    /// The store URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `postgres` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        match self.kind {
            ScratchKind::Postgres { .. } => "postgres",
            ScratchKind::Sqlite { .. } => "sqlite",
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, ScratchKind::Postgres { .. })
    }

    /// Drops the database (closing other sessions on it) or deletes the
    /// file with its WAL, shared-memory and writer-lock files. Best effort:
    /// errors are ignored.
    pub async fn remove(&self) {
        match &self.kind {
            ScratchKind::Postgres { server_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(server_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = admin.execute(sql.as_str()).await;
                    let _ = admin.close().await;
                }
            }
            ScratchKind::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm", ".writer-lock"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }

    /// [`Scratch::remove`] from synchronous code, e.g. a `Drop`: on a thread
    /// of its own with a small runtime, since the caller may be inside a
    /// runtime that cannot block on itself.
    pub fn remove_blocking(self) {
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(self.remove());
            }
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_that_is_not_an_identifier_is_refused() {
        let backend = ScratchBackend::Sqlite {
            directory: std::env::temp_dir(),
        };
        for prefix in ["", "Bench", "a;drop", "a b"] {
            assert!(
                matches!(
                    Scratch::create(&backend, prefix).await,
                    Err(Error::Invalid(_))
                ),
                "{prefix:?}"
            );
        }
    }

    #[tokio::test]
    async fn sqlite_scratch_files_are_fresh_and_removed() {
        let dir = tempfile::tempdir().expect("a directory");
        let backend = ScratchBackend::Sqlite {
            directory: dir.path().to_owned(),
        };
        let a = Scratch::create(&backend, "kiban_unit")
            .await
            .expect("scratch");
        let b = Scratch::create(&backend, "kiban_unit")
            .await
            .expect("scratch");
        assert_ne!(a.url(), b.url());
        let store = crate::Store::open(a.url(), crate::StoreOptions::default())
            .await
            .expect("open");
        store.close().await;
        assert!(std::fs::read_dir(dir.path()).expect("list").count() > 0);
        a.remove().await;
        b.remove().await;
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
