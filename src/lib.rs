//! Herald, the process: configuration, the HTTP edge and the WebSocket
//! handshake around the core actors of `herald-actors`.
//!
//! `main` reads a [`Config`] and calls [`serve`], which starts the Broker,
//! mounts the routes of [`api`] (the HTTP API, the operator endpoints, the
//! demo page and the WebSocket endpoints in [`ws`]), and on the shutdown
//! signal drains every session before the server stops. Tests call [`serve`]
//! or run the binary itself.
#![forbid(unsafe_code)]

pub mod api;
mod assets;
pub mod auth;
mod authorize;
mod client_ip;
pub mod config;
mod dashboard;
mod http_client;
pub mod logging;
mod metrics;
mod server;
pub mod shutdown;
mod state;
pub mod tls;
pub mod upstream;
mod ws;

pub use config::Config;
pub use server::{serve, ServeError};
