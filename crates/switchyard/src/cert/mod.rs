//! `switchyard cert`: a cluster CA, machine certificates and caller
//! certificates with roles, so that a cluster can be set up without openssl.
//!
//! The profiles are what the TLS layer and the authorization check expect:
//! the CA signs leaves only; a machine certificate names its IPs (IP SANs)
//! and its registry name (DNS SAN), carries the role `machine`, and serves
//! both ways (server and client auth); a caller certificate carries one
//! Organization value per role and is for clients only. Keys are ECDSA P-256
//! written with mode 0600; every file is written atomically (a reload never
//! reads half a file).

mod authority;
mod der;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub use authority::{CertAuthority, CertGenError, CertPem, MachineSpec, Validity};

/// Flags of `switchyard cert`.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CertCommand {
    /// Create the cluster CA: OUT/ca.crt (every machine's `[tls] ca`) and
    /// OUT/ca.key (keep it off the machines).
    Ca {
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "switchyard cluster CA")]
        name: String,
        /// Days of validity.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A machine certificate: OUT/NAME.crt and OUT/NAME.key, role `machine`,
    /// naming its addresses and its registry name.
    Machine {
        /// Directory holding ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The machine's registry name (a DNS SAN, and the file name).
        #[arg(long)]
        name: String,
        /// An address of the machine (an IP SAN); repeatable.
        #[arg(long = "addr", value_name = "IP", required = true)]
        addrs: Vec<IpAddr>,
        /// Days of validity.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// A caller's certificate: OUT/NAME.crt and OUT/NAME.key, with roles.
    Client {
        /// Directory holding ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The caller's name (CN, and the file name).
        #[arg(long)]
        name: String,
        /// A role (an Organization value); repeatable.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// Runs `switchyard cert`, printing the files written.
pub fn run(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::Ca { out, name, days } => {
            let (cert, key) = (out.join("ca.crt"), out.join("ca.key"));
            if key.exists() {
                bail!(
                    "refusing to overwrite the CA key {}: every certificate it signed depends on it",
                    key.display()
                );
            }
            let ca = CertAuthority::generate(&name, Validity::days(days)?)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            ca.to_pem().write(&cert, &key)?;
            println!("{}\n{}", cert.display(), key.display());
        }
        CertCommand::Machine {
            ca,
            out,
            name,
            addrs,
            days,
        } => {
            let spec = MachineSpec {
                ips: addrs,
                name: Some(name.clone()),
            };
            let pem = load_ca(&ca)?.issue_machine(&spec, Validity::days(days)?)?;
            write_pair(&out, &name, &pem)?;
        }
        CertCommand::Client {
            ca,
            out,
            name,
            roles,
            days,
        } => {
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let pem = load_ca(&ca)?.issue_client(&name, &roles, Validity::days(days)?)?;
            write_pair(&out, &name, &pem)?;
        }
    }
    Ok(())
}

fn load_ca(dir: &Path) -> anyhow::Result<CertAuthority> {
    CertAuthority::load(&dir.join("ca.crt"), &dir.join("ca.key"))
        .with_context(|| format!("cannot load the CA from {}", dir.display()))
}

fn write_pair(out: &Path, name: &str, pem: &CertPem) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (cert, key) = (
        out.join(format!("{name}.crt")),
        out.join(format!("{name}.key")),
    );
    pem.write(&cert, &key)?;
    println!("{}\n{}", cert.display(), key.display());
    Ok(())
}
