//! Postgres over TLS through snapgate's store. Each test starts a Postgres of its own: `initdb`
//! in a temp folder, `ssl = on` with a CA and server certificate made here (rcgen), a free port
//! on 127.0.0.1, and a `pg_hba.conf` that accepts TLS connections only, as managed offerings do.
//! `sslmode=require`, `verify-ca` and `verify-full` (with `sslrootcert=`) must connect and migrate;
//! a wrong CA, no CA (only the built-in web roots), a host name the certificate does not name,
//! and no TLS at all must be refused.
//!
//! The server binaries come from `SNAPGATE_TEST_PG_BINDIR`, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's postgresql package). Postgres refuses to run as
//! root: as root (CI), the server runs as the `postgres` user that package creates. Missing
//! binaries fail the tests; they never skip.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use snapgate::config::DatabaseSettings;
use snapgate::store::PgStore;

/// A CA: its certificate in PEM and what signs with it.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A server certificate for `localhost` (DNS name only, so 127.0.0.1 is *not* a valid name).
fn new_server_cert(ca: &Issuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("SNAPGATE_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no Postgres server binaries: install Debian's postgresql package or set \
             SNAPGATE_TEST_PG_BINDIR to the folder holding initdb and pg_ctl"
        )
    })
}

/// The (uid, gid) to run the server as when this process is root: the `postgres` user.
fn server_user() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs a `postgres` user to start Postgres as (Debian's postgresql package creates it)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

/// A running Postgres of this test's own; stopped (immediately) when dropped.
struct TlsPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
}

impl TlsPostgres {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Writes a file the server reads (owned by its user; `mode` as Postgres wants it).
    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        path
    }

    fn start(server_cert: &str, server_key: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            dir,
            bin: pg_bindir(),
            user,
            port,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = pg.write("server.crt", server_cert, 0o644);
        let key = pg.write("server.key", server_key, 0o600);
        let socket_dir = pg.dir.path().display().to_string();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{socket_dir}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            cert.display(),
            key.display()
        );
        let conf_path = pg.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        // TLS or nothing over TCP (the Unix socket is for nobody but pg_ctl).
        std::fs::write(
            pg.data().join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let log = pg.dir.path().join("server.log");
        let status = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(pg.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            status.status.success(),
            "Postgres did not start: {}\n{}",
            String::from_utf8_lossy(&status.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pg
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url,
        max_connections: 2,
        acquire_timeout_ms: 5_000,
        ..DatabaseSettings::default()
    }
}

fn write_ca(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// Connects through `snapgate::store::connect`, migrates, and reads back; then checks on a
/// second connection that the session is encrypted.
async fn connects_over_tls(url: String) {
    let store = snapgate::store::connect(&settings(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:#}"));
    store.migrate().await.expect("migrations over TLS");
    let teams = store.list_teams().await.expect("a read over TLS");
    assert!(teams.iter().any(|t| t.name == "default"), "{teams:?}");

    let pg = PgStore::connect(&settings(url.clone())).await.unwrap();
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pg.pg_pool().expect("a Postgres store"))
            .await
            .unwrap();
    assert!(ssl, "{url}: the session is not encrypted");
    assert!(version.starts_with("TLSv1."), "{url}: {version}");
}

async fn refused(url: String) -> String {
    match snapgate::store::connect(&settings(url.clone())).await {
        Ok(_) => panic!("{url}: connected, but must be refused"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn require_and_verify_full_connect_through_the_store() {
    let (ca_pem, ca) = new_ca("snapgate test CA");
    let (cert, key) = new_server_cert(&ca);
    let pg = TlsPostgres::start(&cert, &key);
    let ca_file = write_ca(pg.dir.path(), "ca.pem", &ca_pem);

    // require: encrypted, the certificate not checked (libpq's meaning, and sqlx's).
    connects_over_tls(pg.url("127.0.0.1", "sslmode=require")).await;
    // verify-ca: signed by the given CA. (sqlx 0.8.6 with rustls >= 0.23.24 checks the name too:
    // see `verify_ca_checks_the_name_too_for_now`.)
    connects_over_tls(pg.url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={ca_file}"),
    ))
    .await;
    // verify-full: signed by the given CA and naming the host connected to.
    connects_over_tls(pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    ))
    .await;
}

#[tokio::test]
async fn a_wrong_ca_no_ca_a_wrong_name_or_no_tls_is_refused() {
    let (ca_pem, ca) = new_ca("snapgate test CA");
    let (other_ca_pem, _) = new_ca("some other CA");
    let (cert, key) = new_server_cert(&ca);
    let pg = TlsPostgres::start(&cert, &key);
    let ca_file = write_ca(pg.dir.path(), "ca.pem", &ca_pem);
    let other_ca = write_ca(pg.dir.path(), "other-ca.pem", &other_ca_pem);

    let err = refused(pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_ca}"),
    ))
    .await;
    assert!(err.contains("UnknownIssuer"), "wrong CA: {err}");

    // No sslrootcert: only the built-in web roots (webpki-roots) are trusted.
    let err = refused(pg.url("localhost", "sslmode=verify-full")).await;
    assert!(err.contains("UnknownIssuer"), "no CA: {err}");

    // The certificate names `localhost`, not 127.0.0.1.
    let err = refused(pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    ))
    .await;
    assert!(err.contains("not valid for name"), "wrong name: {err}");

    // The server takes TLS only.
    let err = refused(pg.url("127.0.0.1", "sslmode=disable")).await;
    assert!(err.contains("pg_hba.conf"), "no TLS: {err}");
}

/// libpq's `verify-ca` checks the chain but not the name. sqlx 0.8.6 means to do the same, but
/// since rustls 0.23.24 reports a name mismatch as `NotValidForNameContext`, which sqlx does not
/// recognise, so `verify-ca` refuses a wrong name like `verify-full` (sqlx issue #3793, fixed
/// upstream after 0.8.6). It fails closed, and the README says to use `verify-full`. When sqlx is
/// upgraded with the fix this test fails: then delete it and the README's note.
#[tokio::test]
async fn verify_ca_checks_the_name_too_for_now() {
    let (ca_pem, ca) = new_ca("snapgate test CA");
    let (cert, key) = new_server_cert(&ca);
    let pg = TlsPostgres::start(&cert, &key);
    let ca_file = write_ca(pg.dir.path(), "ca.pem", &ca_pem);
    let err = refused(pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca_file}"),
    ))
    .await;
    assert!(err.contains("not valid for name"), "{err}");
}
