//! A database of its own for a test, on the server `BRANCHGUARD_TEST_POSTGRES`
//! names (`.ci/postgres` starts one), dropped at the end.

use postgres::{Client, NoTls};

/// Where the test server is: a URL to a database the tests may create
/// others from.
pub const ENV: &str = "BRANCHGUARD_TEST_POSTGRES";

pub struct Database {
    admin: String,
    name: String,
    url: String,
}

/// The server's URL; a test of the PostgreSQL backend fails without one
/// rather than pass having tested nothing.
pub fn server() -> String {
    std::env::var(ENV).unwrap_or_else(|_| {
        panic!("{ENV} is not set: start a test server with `eval \"$(bash .ci/postgres)\"` (README, Tests)")
    })
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Database {
    pub fn create() -> Database {
        super::blocking(Database::create_here)
    }

    fn create_here() -> Database {
        let admin = server();
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random bytes");
        let name = format!("bg_test_{}", hex::encode(b));
        let mut c = Client::connect(&admin, NoTls).expect("the test PostgreSQL server answers");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        let url = with_database(&admin, &name);
        Database { admin, name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        super::blocking(|| {
            if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
                let _ = c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        });
    }
}
