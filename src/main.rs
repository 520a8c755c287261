//! The `adaptd` binary: parses the command line and maps errors to exit codes
//! (0 success, 1 failure, 2 usage error), printing one clear line per problem.

// Input, files and the network reach almost every function here: a panic would take the
// daemon (and its unacknowledged work) down. Outside tests, failures are errors with a
// message, never `unwrap`/`expect`; clippy holds the line.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

fn main() -> ExitCode {
    match adaptd::cli::main() {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and those of its causes that its message does not
            // already contain (our error types embed their source in their message).
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
            }
            eprintln!("adaptd: {msg}");
            if e.downcast_ref::<adaptd::cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
