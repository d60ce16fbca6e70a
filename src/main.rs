//! The `herald` binary: configuration in, a served node out.

use std::net::TcpListener;
use std::process::ExitCode;

use herald::{logging, serve, shutdown, Config};
use log::error;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => return bad_setting(&err),
    };
    // After the settings, which choose the line format; a bad setting is
    // reported on stderr directly.
    logging::init(config.log_format);
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            return bad_setting(&format!(
                "HERALD_LISTEN: cannot listen on {}: {err} (pick a free port or an address of this machine)",
                config.listen
            ))
        }
    };
    let served = actix_web::rt::System::new().block_on(async {
        let stop = shutdown::signal();
        serve(listener, config, stop).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is_setting() => bad_setting(&err),
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a bad setting on one line of stderr, whatever `RUST_LOG` filters,
/// and ends with exit code 2 (1 stays for failures after a good start).
fn bad_setting(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("herald: {err}");
    ExitCode::from(2)
}
