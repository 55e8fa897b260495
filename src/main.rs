//! The `uag` binary: parse the command line, run the chosen command, exit with its status.

mod cli;
mod doctor;
mod eval_answers;
mod kb;
mod models_cli;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(err.exit_code())
        }
    }
}
