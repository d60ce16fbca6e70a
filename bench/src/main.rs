//! `herald-bench run ...` measures a server; `herald-bench sink` serves the
//! trivial fan-out server the bench is measured against. See bench/README.md.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Load generator for Herald and RabbitMQ Web-STOMP")]
// A later flag wins, so a script can give defaults and a scenario its own.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Subscribe, publish, and report deliveries, latency and server cost.
    Run {
        #[command(flatten)]
        options: Box<herald_bench::Options>,
        /// Exit 1 unless the run lost, duplicated and reordered nothing.
        #[arg(long)]
        check: bool,
        /// Print only the JSON line.
        #[arg(long)]
        json: bool,
    },
    /// A trivial JSON fan-out server, to measure the bench itself against.
    Sink {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    let threads = std::env::var("HERALD_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald-bench: cannot start a runtime: {e}");
            std::process::exit(2);
        }
    };
    match cli.command {
        Command::Sink { listen } => {
            if let Err(e) = runtime.block_on(herald_bench::sink::serve(listen)) {
                eprintln!("herald-bench sink: {e}");
                std::process::exit(2);
            }
        }
        Command::Run {
            options,
            check,
            json,
        } => match runtime.block_on(herald_bench::run(&options)) {
            Ok(report) => {
                if !json {
                    print!("{}", herald_bench::table(&report));
                }
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("herald-bench: report: {e}"),
                }
                if check && !report.ok {
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("herald-bench: {e}");
                std::process::exit(2);
            }
        },
    }
    // Subscriber tasks may still hold sockets: do not wait for them.
    runtime.shutdown_background();
}
