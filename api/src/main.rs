//! The `loyalty` binary. See `loyalty serve --help`.

use clap::Parser;
use loyalty_actors::Release;
use loyalty_api::config::{Cli, Command, LogFormat};

/// mimalloc: thread-local free lists suit the many small, short-lived
/// allocations of the request path, and it returns freed memory to the
/// operating system, so passivated enrollments leave no resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the engine calls on a shard's thread after a passivation round:
/// mimalloc gives the pages the passivated actors freed back to the
/// system. An unforced collect frees pages but leaves them to be purged
/// after a delay, on a later allocation that an idle engine may not make:
/// at a million passivated enrollments that kept 114 B each resident,
/// against 47-54 B forced. A forced collect visits every page of the
/// thread and took up to 2-10 ms there (the memory probe's longest call,
/// run to run), so the shard asks for it ([`Release::thorough`]) only
/// after 1 024 or more passivations and a round with no command since the
/// previous one.
fn release_freed_memory(release: Release) {
    // SAFETY: `mi_collect` takes no pointers and may be called on any
    // thread at any time; it only frees memory no allocation holds.
    unsafe { libmimalloc_sys::mi_collect(release.thorough) }
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
