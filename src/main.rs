//! The `herald` binary: configuration in, a served node out.

use std::net::TcpListener;
use std::process::ExitCode;

use herald::{serve, shutdown, Config};
use log::error;

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,tracing::span=warn"),
    )
    .init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            error!("{err}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen on {}: {err}", config.listen);
            return ExitCode::from(2);
        }
    };
    let served = actix_web::rt::System::new().block_on(async {
        let stop = shutdown::signal();
        serve(listener, config, stop).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}
