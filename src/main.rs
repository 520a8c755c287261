//! The `adaptd` binary: parses the command line and maps errors to exit codes
//! (0 success, 1 failure, 2 usage error), printing one clear line per problem.

use std::process::ExitCode;

fn main() -> ExitCode {
    match adaptd::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("adaptd: {e:#}");
            if e.downcast_ref::<adaptd::cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
