//! Fans `machineinfo.v1.MachineInfo/Describe` out to machines through a
//! Switchyard and prints each machine's answer as it arrives.
//!
//! ```sh
//! cargo run --release -- demo --keep        # prints each machine's --via address
//! cargo run -p switchyard-client --example fan_out -- --via '[::1]:PORT' alpha beta gamma
//! ```

use clap::Parser;
use futures_util::StreamExt as _;
use machine_info::pb::{DescribeRequest, DescribeResponse};

/// Describe every machine named, through one Switchyard.
#[derive(Debug, Parser)]
struct Args {
    /// The Switchyard to call: `[ipv6]:port` or `ip:port`.
    #[arg(long)]
    via: String,
    /// How long each machine may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    machine_timeout_ms: u64,
    /// The machines: names, IDs, addresses, or `*`.
    #[arg(required = true)]
    machines: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.via))?
        .connect()
        .await?;
    let mut results = switchyard_client::FanOut::new(&args.machines)
        .machine_timeout_ms(args.machine_timeout_ms)
        .unary::<DescribeResponse, _, _>(
            channel,
            "/machineinfo.v1.MachineInfo/Describe",
            DescribeRequest {},
        )
        .await?;
    while let Some((machine, result)) = results.next().await {
        match result {
            Ok(reply) => {
                for d in reply.messages {
                    println!("{machine}: up {} s, {} calls", d.uptime_seconds, d.calls);
                }
            }
            Err(status) => println!("{machine}: {:?}: {}", status.code(), status.message()),
        }
    }
    Ok(())
}
