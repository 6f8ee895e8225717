//! Runs one `machine-info` service on a Unix socket:
//!
//! ```text
//! cargo run -p machine-info -- /tmp/machine-info.sock my-machine
//! ```

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: machine-info SOCKET_PATH [NAME]")?;
    let name = args.next().unwrap_or_else(|| "machine".into());
    let _server = machine_info::Server::spawn_unix(&name, std::path::Path::new(&path))?;
    println!("machine-info {name:?} serving on unix:{path}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
