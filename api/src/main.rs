//! The `loyalty` binary. See `loyalty serve --help`.

use clap::Parser;
use loyalty_api::config::{Cli, Command, LogFormat};

/// mimalloc: thread-local free lists suit the many small, short-lived
/// allocations of the request path, and it returns freed memory to the
/// operating system, so passivated enrollments leave no resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = args.resolve()?;
            init_logging(settings.log_format);
            actix_web::rt::System::new().block_on(loyalty_api::serve::serve(settings))
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
