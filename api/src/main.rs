//! The `loyalty` binary. See `loyalty serve --help`.

use clap::Parser;
use loyalty_api::config::{Cli, Command, LogFormat};

/// mimalloc: thread-local free lists suit the many small, short-lived
/// allocations of the request path, and it returns freed memory to the
/// operating system, so passivated enrollments leave no resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the engine calls after passivating actors: mimalloc purges the pages
/// they freed now, instead of on a later allocation that an idle engine may
/// not make for a long time.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called on any
    // thread at any time; it only frees memory no allocation holds.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let mut settings = args.resolve()?;
            settings.engine.release_memory = Some(release_freed_memory);
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
