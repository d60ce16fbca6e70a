//! The example services as their tests run them: the real binaries `cargo
//! build --examples` puts beside the test binaries, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running example service.
pub struct ExampleService(Child);

impl Drop for ExampleService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts example binary `name` with `env`, and returns it with the first
/// line it prints (where it says it is ready).
pub fn start_example(name: &str, env: &[(&str, &str)]) -> (ExampleService, String) {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let binary = profile_dir.join("examples").join(name);
    let mut child = Command::new(&binary)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot start {} ({err}); `cargo build --examples` builds it",
                binary.display()
            )
        });
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("service output");
    (ExampleService(child), first.trim().to_owned())
}
