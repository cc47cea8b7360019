//! A throwaway PostgreSQL database for tests and drills: created with a
//! random name in the cluster an administrator URL names, dropped (with
//! its connections) when the value is dropped. cpc-sync's own test suites
//! use it for one database per test; an application can do the same in
//! its integration tests.

use crate::store::pg::pg_err;
use crate::StoreError;

/// A database of its own, dropped on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates `cpc_scratch_<random>` through `admin_url` (a role allowed
    /// to `CREATE DATABASE`), a `postgres://` or `postgresql://` URL whose
    /// database is named in its path, not in a `dbname=` parameter.
    pub async fn create(admin_url: &str) -> Result<ScratchDatabase, StoreError> {
        let url_form =
            admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://");
        if !url_form || admin_url.contains("dbname=") {
            return Err(StoreError::Invalid(
                "a scratch database needs a postgres:// URL without a dbname= parameter",
            ));
        }
        let name = format!("cpc_scratch_{:016x}", rand::random::<u64>());
        execute(admin_url, &format!("CREATE DATABASE {name}")).await?;
        Ok(ScratchDatabase {
            admin: admin_url.to_owned(),
            url: with_dbname(admin_url, &name),
            name,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The administrator URL it was made through.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// The database's URL (the administrator's, with its name).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: a thread of its own, with its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = runtime.block_on(execute(&admin, &sql)) {
                tracing::warn!(target: "cpc_server", error = %e, "could not drop a scratch database");
            }
        })
        .join();
    }
}

/// Runs one statement on a connection of its own.
async fn execute(url: &str, sql: &str) -> Result<(), StoreError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(pg_err)?;
    let driver = tokio::spawn(connection);
    let done = client.batch_execute(sql).await.map_err(pg_err);
    drop(client);
    let _ = driver.await;
    done
}

/// `url` with its database name replaced (URL form).
fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_dbname("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://h", "x"), "postgres://h/x");
    }
}
