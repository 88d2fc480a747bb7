//! A real PostgreSQL server for the tests: `initdb` into a temporary directory and
//! `pg_ctl start` on a free loopback port, as the unprivileged `postgres` user when the
//! tests run as root (PostgreSQL refuses to run as root); stopped when dropped. Host
//! connections need a password (scram-sha-256), so the password paths are exercised.
//! [`Postgres::start_with_tls`] serves TLS only, with the certificate and key it is given;
//! [`Postgres::start_with`] takes the `pg_hba.conf` lines, a CA for client certificates
//! and more settings too.
//!
//! A machine without the server binaries fails the test loudly: `.ci/run` installs
//! Debian's `postgresql` package, so CI always runs these tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The password of the test role.
pub const PASSWORD: &str = "ledger-test-password";
/// The test role.
pub const USER: &str = "claim";

/// A running PostgreSQL server.
pub struct Postgres {
    root: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    run_as: Option<String>,
    /// The server's TLS settings (`-c` options), when it serves TLS.
    tls: Option<String>,
}

/// How a test server serves TLS and whom it lets in over TCP.
pub struct ServerTls<'a> {
    /// Its certificate (chain), PEM.
    pub certificate: &'a str,
    /// Its key, PEM.
    pub key: &'a str,
    /// The CA certificate that client certificates must be signed by (`ssl_ca_file`).
    pub client_ca: Option<&'a str>,
    /// The `pg_hba.conf` lines for TCP, each as (connection type, method and options),
    /// e.g. `("hostssl", "cert")`, for 127.0.0.1 and ::1.
    pub hba: &'a [(&'a str, &'a str)],
    /// More settings, each `name=value`.
    pub settings: &'a [&'a str],
}

/// The directory holding `initdb` and `pg_ctl`: Debian's newest
/// `/usr/lib/postgresql/N/bin`, else `PATH`.
fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's \
             `postgresql` package (`apt-get install postgresql`; .ci/run does). These \
             tests never pass without a real server."
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Initialises and starts a server.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// Initialises and starts a server that accepts TCP connections over TLS only
    /// (`hostssl` in `pg_hba.conf`), with this certificate chain and key (PEM).
    pub fn start_with_tls(certificate: &str, key: &str) -> Postgres {
        Postgres::start_with(Some(ServerTls {
            certificate,
            key,
            client_ca: None,
            hba: &[("hostssl", "scram-sha-256")],
            settings: &[],
        }))
    }

    /// Initialises and starts a server, serving TLS as `tls` says.
    pub fn start_with(tls: Option<ServerTls<'_>>) -> Postgres {
        let bin = server_bin();
        let root = tempfile::Builder::new()
            .prefix("claim-ledger-pg-")
            .tempdir()
            .unwrap();
        let run_as = is_root().then(|| "postgres".to_string());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = root.path().join("data");
        let password_file = root.path().join("pw");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .args([&format!("{user}:"), root.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the PostgreSQL test directory");
        }
        let mut server = Postgres {
            root,
            data,
            bin,
            port: free_port(),
            run_as,
            tls: None,
        };
        server.run(
            "initdb",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", password_file.display()),
                "--no-sync",
            ],
        );
        if let Some(tls) = tls {
            let dir = server.root.path().to_path_buf();
            std::fs::write(dir.join("server.crt"), tls.certificate).unwrap();
            std::fs::write(dir.join("server.key"), tls.key).unwrap();
            // The server refuses a key that others can read.
            std::fs::set_permissions(
                dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            let mut hba = String::from("local all all trust\n");
            for (kind, method) in tls.hba {
                for address in ["127.0.0.1/32", "::1/128"] {
                    hba.push_str(&format!("{kind} all all {address} {method}\n"));
                }
            }
            std::fs::write(server.data.join("pg_hba.conf"), hba).unwrap();
            let mut files = vec![dir.join("server.crt"), dir.join("server.key")];
            let mut options = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            );
            if let Some(ca) = tls.client_ca {
                std::fs::write(dir.join("client-ca.crt"), ca).unwrap();
                files.push(dir.join("client-ca.crt"));
                options.push_str(&format!(" -c ssl_ca_file={}/client-ca.crt", dir.display()));
            }
            for setting in tls.settings {
                options.push_str(&format!(" -c {setting}"));
            }
            if let Some(user) = &server.run_as {
                let status = Command::new("chown")
                    .arg(format!("{user}:"))
                    .args(&files)
                    .arg(server.data.join("pg_hba.conf"))
                    .status()
                    .unwrap();
                assert!(status.success(), "chown the server's TLS files");
            }
            server.tls = Some(options);
        }
        server.pg_ctl_start();
        server
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.root.path().display()
        );
        if let Some(tls) = &self.tls {
            options.push_str(tls);
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                self.root.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown), as a database restart would.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.pg_ctl_start();
    }

    /// A URL of database `database` without the password (it comes from `PGPASSWORD`,
    /// a password file or `.pgpass`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs SQL through `psql` over the local socket (trusted), returning its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self.psql_command(database, sql).output().unwrap();
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Starts SQL through `psql` without waiting for it (a transaction holding a lock
    /// while the test does something else).
    pub fn psql_in_background(&self, database: &str, sql: &str) -> std::process::Child {
        self.psql_command(database, sql)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn psql_command(&self, database: &str, sql: &str) -> Command {
        let psql = ["/usr/bin/psql", "psql"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.bin.join("psql"));
        let mut command = Command::new(psql);
        command.args([
            "-h",
            self.root.path().to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ]);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}
