//! The `ligerc` binary. Exit codes: 0 success, 1 internal error, 2 bad input
//! or usage, 3 device unavailable.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Run(args)) => cli::run::run(args),
        Some(Command::Bench(args)) => cli::bench::bench(args),
        Some(Command::Eval(args)) => cli::eval::eval(args),
        Some(Command::Finetune(args)) => cli::finetune::finetune(args),
        Some(Command::BenchCuda(args)) => cli::bench_cuda::bench_cuda(args),
        Some(Command::Passes) => {
            for (name, about) in ligerc::passes::available_passes() {
                println!("{name:<16} {about}");
            }
            Ok(())
        }
        None => cli::compile::compile(&cli.compile),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for anything the user's input or arguments caused, 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    use ligerc::runtime::RuntimeError;
    for cause in e.chain() {
        if let Some(ce) = cause.downcast_ref::<ligerc::runtime::cuda::CudaError>() {
            return match ce {
                ligerc::runtime::cuda::CudaError::Unavailable(_) => 3,
                _ => 1,
            };
        }
        if cause.is::<cli::common::UsageError>() || cause.is::<ligerc::frontends::ImportError>() {
            return 2;
        }
        if let Some(pe) = cause.downcast_ref::<ligerc::passes::PassError>() {
            return match pe {
                ligerc::passes::PassError::Invalid { .. } => 1,
                _ => 2,
            };
        }
        if let Some(re) = cause.downcast_ref::<RuntimeError>() {
            return match re {
                RuntimeError::Input(_) | RuntimeError::Tokenizer(_) => 2,
                _ => 1,
            };
        }
        if let Some(te) = cause.downcast_ref::<ligerc::runtime::train::TrainError>() {
            use ligerc::runtime::train::TrainError;
            match te {
                TrainError::Runtime(_) | TrainError::Gpu(_) => {}
                TrainError::Config(_)
                | TrainError::BadNumerics { .. }
                | TrainError::Checkpoint(_) => {
                    return 2;
                }
            }
        }
        if cause.is::<ligerc::runtime::data::DataError>() {
            return 2;
        }
        if cause.is::<std::io::Error>() {
            return 2;
        }
    }
    1
}
